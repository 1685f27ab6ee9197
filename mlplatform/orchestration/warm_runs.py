"""Run workers forked from a warm process instead of started as a fresh interpreter.

Dagster's default launcher has the code server spawn a new Python for each run, which imports Dagster, pandas and
the code location before the first step, and MLflow, LightGBM, scikit-learn and Evidently inside it: about 6 s of
run worker start and 3-6 s of first imports in trained_model or drift_report on 2 cores (bench_reaction.py), on the
path from a retraining trigger to the new champion served. `WarmRunLauncher` keeps one process that has imported
those libraries (not mlplatform itself, so a run always loads the current code location) and forks it for each run;
the child is `python -m dagster api execute_run ...`, the command every Dagster run launcher starts, with its
imports already done.

The warm process is a child of the process that launches runs (the daemon, the webserver), in its process group,
with its environment and working directory; it exits when that process closes the pipe. It only imports, so no
Python thread runs when it forks (the native pools numpy's OpenBLAS and pyarrow's jemalloc start at import have their
own fork handlers, as for any pre-forking server). It reaps the run workers it forked and tells the launcher how each
ended (an exit code, or the signal that killed it), so run monitoring can say why a run's worker is gone.

    python -m mlplatform.orchestration.warm_runs mlflow lightgbm ...   # (started by the launcher) the modules to preload
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import runpy
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dagster import Array, DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, Field, RunsFilter, serialize_value
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.errors import DagsterLaunchFailedError, DagsterUserCodeUnreachableError
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData

from mlplatform.domain.keys import COMMAND_PROCESS_TAG, COMMAND_RUN_TAG, RUN_WORKER_TAG, STACK_STOPPED_TAG
from mlplatform.orchestration.interrupts import STOP_GRACE_SECONDS
from mlplatform.settings import WARM_RUNS_PRESTART_ENV

# What runs import that costs seconds: the run worker itself (Dagster's CLI and the instance's storages, pandas,
# SQLAlchemy), MLflow's client, its SQL stores and its evaluators (with matplotlib), LightGBM with scikit-learn and
# SciPy, Optuna, Evidently; found with `python -X importtime -m dagster api execute_run ...` of a retraining run. Not
# mlplatform: a run loads its code fresh.
PRELOAD = (
    "dagster._cli.api", "dagster._core.storage.runs.sqlite", "dagster._core.storage.event_log.sqlite", "dagster_postgres",
    "pandas", "pyarrow.parquet", "sqlalchemy", "git",
    "mlflow", "mlflow.pyfunc", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.models.evaluation.evaluator_registry", "mlflow.models.evaluation.evaluators.classifier",
    "mlflow.models.evaluation.evaluators.regressor", "matplotlib.pyplot",
    "lightgbm", "sklearn.metrics", "sklearn.calibration", "sklearn.isotonic", "optuna",
    "evidently", "evidently.presets", "evidently.core.report", "evidently.ui.workspace",
)
# How long a launch waits for the warm process: to finish its imports, then to answer with the run worker's pid. The
# same deadline as Dagster's launch through a code server (DAGSTER_GRPC_TIMEOUT_SECONDS, 60 s by default): past it, the
# launch raises DagsterUserCodeUnreachableError and the run queue tries it again later instead of failing the run.
DEFAULT_LAUNCH_TIMEOUT_SECONDS = 60.0
# How long a terminated run's worker has to end the run after SIGTERM: Dagster cancels within a fraction of a second
# when it can (the interrupt fails the step and the run), so a worker still running after this is retrying a step.
TERMINATE_GRACE_SECONDS = 3.0
COMMAND_EXIT_SECONDS = 5.0  # past a command's own grace (interrupts.STOP_GRACE_SECONDS): its message and its exit
# How many ended run workers the launcher remembers how they ended: far more than run monitoring looks at at once.
REMEMBERED_EXITS = 1024


def launch_timeout_seconds() -> float:
    return float(os.environ.get("DAGSTER_GRPC_TIMEOUT_SECONDS", DEFAULT_LAUNCH_TIMEOUT_SECONDS))


class WarmProcess:
    """The launcher's side of one warm process: start it, wait until its imports are done, ask it for a run worker."""

    def __init__(self, preload: Sequence[str], exits: dict[RunWorker, str] | None = None) -> None:
        """`exits`: where to record how each run worker it forked ended (shared by the warm processes of one launcher)."""
        self.exits: dict[RunWorker, str] = {} if exits is None else exits
        self.process = subprocess.Popen([sys.executable, "-m", __name__, *preload], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.ready: dict[str, Any] | None = None
        threading.Thread(target=self._read, args=(self.process.stdout,), name="warm-runs-replies", daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            message = json.loads(line)
            if "exited" in message:  # said whenever a run worker ends, not an answer to a request
                self.exits[RunWorker(message["exited"], message["started"])] = message["how"]
                while len(self.exits) > REMEMBERED_EXITS:
                    del self.exits[next(iter(self.exits))]
            else:
                self._replies.put(message)
        self._replies.put(None)

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the warm run process (pid {self.process.pid}) did not answer within {timeout:.0f} s") from None
        if reply is None:
            raise ConnectionError(f"the warm run process (pid {self.process.pid}) exited with {self.process.wait()}")
        return reply

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Its report once its imports are done: {"ready": True, "failed": {module: error}, "threads": n}."""
        if self.ready is None:
            self.ready = self._reply(timeout)
        return self.ready

    def fork(self, dagster_args: Sequence[str], timeout: float) -> RunWorker:
        """A new run worker executing `python -m dagster <dagster_args>` (once ready)."""
        assert self.ready is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(list(dagster_args)) + "\n")
        self.process.stdin.flush()
        reply = self._reply(timeout)
        return RunWorker(int(reply["pid"]), int(reply["started"]))

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Closing its input ends the warm process (still importing, it is killed: it has forked nothing yet); run
        workers it started go on."""
        if self.ready is None:
            self.kill()
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@dataclass(frozen=True)
class RunWorker:
    """A run worker process as the run's tag records it: its pid and its start time (clock ticks since boot), so that a
    pid the kernel gave to another process since is never taken for it."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> RunWorker:
        return cls(pid, _start_ticks(pid) or 0)

    @classmethod
    def of_run(cls, run: DagsterRun) -> RunWorker | None:
        """The run's worker as its tag records it; None without the tag (launched by another launcher, or tagged a
        moment after the fork) or with one that is not "<pid>:<start>" of a real process id."""
        return cls.parse(run.tags.get(RUN_WORKER_TAG, ""))

    @classmethod
    def parse(cls, text: str) -> RunWorker | None:
        """"<pid>:<start>" (`tag`) of a real process id; None for anything else."""
        pid, colon, started = text.partition(":")
        if not (colon and pid.isdigit() and started.isdigit() and int(pid) > 0 and int(started) > 0):  # 0: a start /proc did not tell
            return None
        return cls(int(pid), int(started))

    def tag(self) -> str:
        return f"{self.pid}:{self.started}"

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.started


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None for no such process or a zombie (it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as a process forked from a warm one (see the module's docstring); dagster.yaml names it when
    `warm_run_workers` is on. Terminating a run cancels it as Dagster's run workers expect: SIGTERM to its process;
    run monitoring fails a started run whose process is gone."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, preload: Sequence[str] = PRELOAD,
                 terminate_grace_seconds: float = TERMINATE_GRACE_SECONDS) -> None:
        self._inst_data = inst_data
        self._preload = tuple(preload)
        self._terminate_grace_seconds = terminate_grace_seconds
        self._lock = threading.Lock()
        self._warm: WarmProcess | None = None
        self._exits: dict[RunWorker, str] = {}  # how run workers ended, as their warm processes said
        super().__init__()
        if os.environ.get(WARM_RUNS_PRESTART_ENV) == "1":
            self._warm = WarmProcess(self._preload, self._exits)

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {"preload": Field(Array(str), is_required=False, default_value=list(PRELOAD), description="Modules the warm process imports before it forks run workers."),
                "terminate_grace_seconds": Field(float, is_required=False, default_value=TERMINATE_GRACE_SECONDS,
                                                 description="How long a terminated run's worker has to stop after SIGTERM before it is killed.")}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> WarmRunLauncher:
        return cls(inst_data=inst_data, preload=config_value.get("preload", PRELOAD),
                   terminate_grace_seconds=config_value.get("terminate_grace_seconds", TERMINATE_GRACE_SECONDS))

    def _warm_process(self) -> WarmProcess:
        """Started with the launcher in the daemon (WARM_RUNS_PRESTART_ENV), else at the first launch: the webserver
        loads the launcher too (to terminate runs) but leaves launching to the daemon's run queue, and should not hold
        a warm process it never forks. Started again when it died."""
        if self._warm is None or not self._warm.alive():
            self._warm = WarmProcess(self._preload, self._exits)
        return self._warm

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise DagsterLaunchFailedError(f"run {run.run_id} has no code origin to execute")
        if run.job_code_origin.executable_path != sys.executable:
            raise DagsterLaunchFailedError(
                f"warm run workers run code locations in this interpreter ({sys.executable}); run {run.run_id} asks for "
                f"{run.job_code_origin.executable_path}: set MLPLATFORM_WARM_RUN_WORKERS=false for Dagster's own launcher")
        # What `ExecuteRunArgs.get_command_args()` passes to the `dagster` entry point, which every run launcher starts.
        execute = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        dagster_args = ["api", "execute_run", serialize_value(execute)]
        timeout = launch_timeout_seconds()
        with self._lock:
            warm = self._warm_process()
            try:
                warm.wait_ready(timeout)  # still importing on a busy machine: the queue tries again, the imports go on
            except (TimeoutError, ConnectionError) as exc:
                raise DagsterUserCodeUnreachableError(str(exc)) from exc
            try:
                worker = warm.fork(dagster_args, timeout)
            except (TimeoutError, ConnectionError) as exc:
                # A stopped or wedged warm process might still start this run later, after the queue tried it again:
                # it is killed so that a request it did not answer can never be carried out.
                warm.kill()
                raise DagsterUserCodeUnreachableError(str(exc)) from exc
        self._instance.add_run_tags(run.run_id, {RUN_WORKER_TAG: worker.tag()})

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        worker = RunWorker.of_run(run) if run is not None else None
        if run is None or run.is_finished or worker is None:
            return False
        self._instance.report_run_canceling(run)
        # A command's run (`mlplatform materialize`) stops itself on SIGTERM, once its interrupted step is up for retry
        # (interrupts.stops_on_signal): killed as it saw the retry, it died with no word. It gets the command's own grace.
        command = COMMAND_RUN_TAG in run.tags
        retried = None if command else self._retries(run_id)
        if worker.alive():
            os.kill(worker.pid, signal.SIGTERM)  # Dagster's run worker takes it as an interrupt and reports the run canceled
        grace = STOP_GRACE_SECONDS + COMMAND_EXIT_SECONDS if command else self._terminate_grace_seconds
        threading.Thread(target=self._cancel_after_grace, args=(worker, run_id, retried, grace), name=f"terminate-{run_id}", daemon=True).start()
        return True

    def _retries(self, run_id: str) -> int:
        return len(self._instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records)

    def _cancel_after_grace(self, worker: RunWorker, run_id: str, retried: int | None, grace: float) -> None:
        """SIGTERM alone may not end a run: Dagster retries a step interrupted under a retry policy
        (`op_execution_error_boundary`), so the run goes on and can even succeed. A worker that retries a step after
        SIGTERM (`retried`: the retries before it; None: a command, which stops itself then), or is still there after
        `grace` seconds, is killed; a run its worker left unfinished is marked canceled."""
        deadline = time.monotonic() + grace
        while worker.alive() and time.monotonic() < deadline and (retried is None or self._retries(run_id) == retried):
            time.sleep(0.2)
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return
        if worker.alive():
            os.kill(worker.pid, signal.SIGKILL)
            why = f"retried a step instead of stopping, or did not stop within {grace:g} s of SIGTERM: killed"
        else:
            why = f"{self._ended(worker)} without ending the run"
        self._instance.report_engine_event(f"The run worker (pid {worker.pid}) {why}.", run, cls=self.__class__)
        self._instance.report_run_canceled(run)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """For run monitoring: a started run whose worker process is gone (killed, out of memory) is failed, and run
        retries launch it again. Dagster's code server watches the run processes it spawns; the warm process reaps
        nothing, so this is where a crashed worker is noticed."""
        worker = RunWorker.of_run(run) or (_starter(self._instance, run.run_id) if on_this_machine(self._instance) else None)
        if worker is None:  # nothing to check against: anything but RUNNING would make run monitoring fail the run
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not checked: no run worker recorded by WarmRunLauncher")
        if worker.alive():
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(worker.pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {worker.pid} {self._ended(worker)}", run_worker_id=str(worker.pid))

    def _ended(self, worker: RunWorker) -> str:
        """How the worker ended, as its warm process said; a worker forked by another process (another daemon, before a
        restart) is only known to be gone."""
        return self._exits.get(worker, "is gone")

    def dispose(self) -> None:
        with self._lock:
            if self._warm is not None:
                self._warm.close()
                self._warm = None


LEFT_BEHIND_STATUSES = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def fail_runs_left_behind(instance: DagsterInstance, this_machine_only: bool = False) -> list[str]:
    """End the runs not started, starting or started whose recorded worker or command is gone (`end_if_left_behind`), and
    return their ids. A stack killed outright leaves them so (its reaper kills their workers); run monitoring fails a
    STARTED one within 30 s, but a STARTING one only after `start_timeout_seconds` (600 s), every drift report of its
    model waiting behind it. Called as a stack starts, and as a command starts a retraining; failed, run retries launch
    them again."""
    return [run.run_id for run in instance.get_runs(filters=RunsFilter(statuses=LEFT_BEHIND_STATUSES))
            if end_if_left_behind(instance, run, this_machine_only)]


def end_if_left_behind(instance: DagsterInstance, run: DagsterRun, this_machine_only: bool, started_too: bool = True) -> bool:
    """End `run` if the process that was to carry it out is gone, saying so in its log, and return whether it did.

    Not started yet: the mlplatform command that created it (its tag, when it names this machine) is gone, and the run is
    canceled, as nothing of it ran (the production probe: a `materialize` killed, or whose instance database failed,
    before its run started left it NOT_STARTED for ever, and every later retraining of its model waited behind it).
    Starting or started (with `started_too`): its worker as its tag records it is gone, and it fails (run retries may
    launch it again). Not the command: on Celery, steps it submitted run on without it. `this_machine_only` (an
    instance on SQLite files, which only this machine's processes write): a started run with no worker recorded
    (launched by an earlier version or another launcher) is judged by the process that started it, as its RUN_START
    event records it. Run monitoring cannot check such a run, and one whose process was killed stayed STARTED until its
    hour of max runtime: the drift sensor waited for it and it held a run slot (the upgrade probe of stop 38).

    A tag a retry or re-execution inherited from its parent names the parent's process, not its own: it says nothing."""
    if run.status == DagsterRunStatus.NOT_STARTED:
        worker, what = _command_here(instance, run), "The mlplatform command that created the run"
    elif not started_too:
        return False
    else:
        worker, what = RunWorker.parse(_own_tag(instance, run, RUN_WORKER_TAG)), "The run worker"
        if worker is None and this_machine_only:
            worker, what = _starter(instance, run.run_id), "The process that started the run (no run worker recorded)"
    if worker is None or worker.alive():
        return False
    instance.report_engine_event(f"{what} (pid {worker.pid}) is gone: the stack or command that launched the run stopped without ending it.",
                                 run, cls=WarmRunLauncher)
    if run.status == DagsterRunStatus.NOT_STARTED:
        instance.report_run_canceled(run, message="Canceled: the process that was to run it is gone, and it never started.")
        return True
    instance.add_run_tags(run.run_id, {STACK_STOPPED_TAG: run.run_id})
    instance.report_run_failed(instance.get_run_by_id(run.run_id) or run)
    return True


def _own_tag(instance: DagsterInstance, run: DagsterRun, key: str) -> str:
    """`run`'s tag `key`, unless it holds its parent's or root's value (a retry or re-execution copies its parent's
    tags; the root is asked too, in case retention removed the parent); a retry whose parent and root are both gone
    says nothing."""
    value = run.tags.get(key, "")
    if not value or not run.parent_run_id:
        return value
    ancestors = [found for found in (instance.get_run_by_id(i) for i in dict.fromkeys(filter(None, (run.parent_run_id, run.root_run_id)))) if found]
    return value if ancestors and all(a.tags.get(key) != value for a in ancestors) else ""


def _this_machine() -> str | None:
    """This machine and process namespace: its host name, boot id and pid namespace (containers sharing a host name
    have pid namespaces of their own); None where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}+{boot}+{namespace}"


def command_process_tag() -> dict[str, str]:
    """The tag naming this process, on this machine, as the command that created a run (`end_if_left_behind`); none
    where the machine or the process's start cannot be told."""
    machine, worker = _this_machine(), RunWorker.of(os.getpid())
    return {COMMAND_PROCESS_TAG: f"{machine}/{worker.tag()}"} if machine is not None and worker.started else {}


def _command_here(instance: DagsterInstance, run: DagsterRun) -> RunWorker | None:
    """The mlplatform command that created `run`, if its own tag says it ran on this machine."""
    machine, slash, process = _own_tag(instance, run, COMMAND_PROCESS_TAG).rpartition("/")
    return RunWorker.parse(process) if slash and machine == _this_machine() else None


def on_this_machine(instance: DagsterInstance) -> bool:
    """Whether every run of `instance` runs on this machine: its runs are in SQLite files (the embedded profile), which
    only this machine's processes write; on PostgreSQL another machine's command may run one."""
    return isinstance(instance.run_storage, SqliteRunStorage)


# A process that started this long after the run's RUN_START is another one that got its pid. Generous: /proc/stat's boot
# time follows the wall clock, and a clock stepped forward (NTP, a resumed VM) makes a live process look younger.
STARTED_AFTER_SLACK_SECONDS = 300.0


def _starter(instance: DagsterInstance, run_id: str) -> RunWorker | None:
    """The process that wrote the run's RUN_START event, as a RunWorker: alive only if a process of that pid runs that
    started before the event (a pid the kernel gave to a later process is not it). None before the run started."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    if not records:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid if entry.dagster_event is not None else None
    started = _start_ticks(pid) if pid else None
    if started is None or _boot_time() + started / os.sysconf("SC_CLK_TCK") > entry.timestamp + STARTED_AFTER_SLACK_SECONDS:
        return RunWorker(pid or 0, -1)  # gone, or another process now: never alive
    return RunWorker(pid or 0, started)


def _boot_time() -> float:
    """When this machine booted (epoch seconds), from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def stopped_in_flight(run: DagsterRun) -> bool:
    """Whether `run` is one that `fail_runs_left_behind` failed: its stack stopped with it in flight. A retry of it
    inherits its tags, so the tag holds the interrupted run's own id."""
    return run.tags.get(STACK_STOPPED_TAG) == run.run_id


def ended(status: int) -> str:
    """How a process ended, from its wait status, in the words run monitoring reports."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with code {code}"
    name = signal.Signals(-code).name
    if -code == signal.SIGKILL:
        name += ": killed from outside the run, e.g. by the kernel's out-of-memory killer"
    return f"was killed by signal {-code} ({name})"


def _become_run_worker(dagster_args: Sequence[str], replies: IO[str], wakeup: Sequence[int]) -> None:
    """In the forked child: default signal handling, no pipe to or from the launcher, mlplatform unloaded, then
    `python -m dagster <args>`, whose SystemExit ends this process the way it ends a fresh interpreter (atexit
    handlers, flushed streams)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in wakeup:
        os.close(fd)
    replies.close()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for name in [m for m in sys.modules if m == "mlplatform" or m.startswith("mlplatform.")]:
        del sys.modules[name]  # this module's own imports: the run loads the code location as it is now
    sys.argv = ["dagster", *dagster_args]
    runpy.run_module("dagster", run_name="__main__", alter_sys=True)


def serve(preload: Sequence[str]) -> None:
    """Import `preload`, say ready (with what failed to import and how many threads run), then fork one run worker
    per request line (a JSON list of the `dagster` command's arguments), and say how each ended."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)  # the pipe to the launcher carries the replies alone:
    os.dup2(2, 1)  # what an import or a run prints goes where the launcher's errors go

    def reply(message: Mapping[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    failed = {}
    try:
        for name in preload:
            try:
                importlib.import_module(name)
            except Exception as exc:  # a run needing it fails with its own import error; the others still start warm
                failed[name] = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group, this process too
        return
    # After the imports, so that no import's own subprocess is reaped here: a run worker's end wakes the loop below
    # (the wakeup pipe), which reaps it and says how it ended.
    wakeup = os.pipe()
    os.set_blocking(wakeup[1], False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    reply({"ready": True, "failed": failed, "threads": threading.active_count()})
    workers: dict[int, int] = {}  # pid: start time, of the run workers not reaped yet
    requests = b""
    while True:
        try:
            readable, _, _ = select.select([0, wakeup[0]], [], [])
        except KeyboardInterrupt:
            return
        if wakeup[0] in readable:
            os.read(wakeup[0], 4096)
            for pid, status in _reap():
                reply({"exited": pid, "started": workers.pop(pid, 0), "how": ended(status)})
        if 0 not in readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        *lines, requests = (requests + chunk).split(b"\n")
        for line in lines:
            dagster_args = json.loads(line)  # written by WarmProcess.fork alone: a garbled line ends this process, and the launcher starts another
            pid = os.fork()
            if pid == 0:
                _become_run_worker(dagster_args, replies, wakeup)
                return
            workers[pid] = RunWorker.of(pid).started
            reply({"pid": pid, "started": workers[pid]})


def _reap() -> list[tuple[int, int]]:
    """The pid and wait status of every child that has ended since the last call."""
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


if __name__ == "__main__":
    serve(sys.argv[1:])
