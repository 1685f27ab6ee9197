"""WarmRunLauncher with a real Dagster instance and its warm process: a launched run executes in a worker forked from
it, with the pid Dagster records; a stopped warm process makes the launch retryable (not a failed run) and is
replaced; terminating a run cancels it; run monitoring's health check follows the worker process; the dagster.yaml
setting switches it off."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.errors import DagsterLaunchFailedError, DagsterUserCodeUnreachableError
from dagster._core.launcher.base import LaunchRunContext, WorkerStatus
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin

from mlplatform.domain.keys import COMMAND_RUN_TAG, RUN_WORKER_TAG
from mlplatform.domain.spec import load_spec
from mlplatform.orchestration.instance import STACK_STOPPING_FILE, WARM_RUN_LAUNCHER, instance_config
from mlplatform.orchestration.warm_runs import RunWorker, WarmProcess, WarmRunLauncher, fail_runs_left_behind, stopped_in_flight
from mlplatform.pipeline.replay import read_source, write_batches
from mlplatform.settings import IN_STACK_ENV, WARM_RUNS_PRESTART_ENV, Settings
from mlplatform_tests.support.loop import code_location, create_retrain_run, materialize
from mlplatform_tests.support.processes import descendants, wait_until

STARTED_PROCESS = "Started process for run (pid: "


def test_a_module_that_prints_or_fails_to_import_does_not_break_the_replies_and_each_workers_end_is_told(tmp_path: Path) -> None:
    """`import this` prints to stdout, an unknown module fails: the replies stay readable, the failure is reported.
    How each run worker ended (its exit code, the signal that killed it) reaches the launcher, keyed by pid and start."""
    hangs = tmp_path / "hangs.py"
    hangs.write_text("import time\ntime.sleep(600)\n")  # a code location that never finishes loading
    warm = WarmProcess(["this", "mlplatform_no_such_module", "dagster._cli.api"])
    try:
        ready = warm.wait_ready(120)
        assert list(ready["failed"]) == ["mlplatform_no_such_module"] and "ModuleNotFoundError" in ready["failed"]["mlplatform_no_such_module"]
        printed, refused = warm.fork(["--version"], 10), warm.fork(["no-such-command"], 10)  # `dagster --version` prints to stdout
        killed = warm.fork(["api", "grpc", "--socket", str(tmp_path / "grpc.sock"), "--python-file", str(hangs)], 10)
        assert len({printed.pid, refused.pid, killed.pid}) == 3 and killed.alive()
        os.kill(killed.pid, signal.SIGKILL)
        wait_until("the three workers' ends to be told", lambda: len(warm.exits) == 3, 30)
        assert warm.exits == {printed: "exited with code 0", refused: "exited with code 2",
                              killed: "was killed by signal 9 (SIGKILL: killed from outside the run, e.g. by the kernel's out-of-memory killer)"}
        assert not descendants(warm.process.pid), "ended workers are reaped, not left as zombies"
    finally:
        warm.close()
    assert warm.process.returncode == 0, "closing its input ends the warm process cleanly"


def test_instance_config_names_the_warm_launcher_unless_switched_off(state: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher starts its warm process at the first launch, or as it loads where the daemon's prestart is set."""
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_launcher, WarmRunLauncher) and instance.run_launcher._warm is None
    monkeypatch.setenv(WARM_RUNS_PRESTART_ENV, "1")
    with dg.DagsterInstance.get() as instance:
        warm = instance.run_launcher._warm  # type: ignore[attr-defined]
        assert warm is not None and warm.alive()
    assert not warm.alive(), "disposing of the instance ends its warm process"
    assert "run_launcher" not in instance_config(None, warm_run_workers=False)
    written = yaml.safe_load((state.dagster_home / "dagster.yaml").read_text())
    assert written["run_launcher"] == WARM_RUN_LAUNCHER


def test_runs_are_forked_from_the_warm_process_a_stopped_one_is_replaced_and_terminate_cancels(
        state: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(state.dataset_spec)
    write_batches(read_source(spec).iloc[:1500], spec, state.landing_dir, 1500)
    with dg.DagsterInstance.get() as instance, code_location(instance) as workspace:
        materialize(instance, ["raw_events"], raise_on_error=True)
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)

        def launch(patient: bool = True) -> str:
            """A run launched as the run queue launches it: `patient`, tried again while the warm process still imports
            (CI, at a load of 17: a new warm process took more than the launch's 60 s)."""
            run_id = create_retrain_run(instance, workspace)
            run = instance.get_run_by_id(run_id)
            assert run is not None
            deadline = time.monotonic() + 300
            while True:
                try:
                    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=workspace))
                    return run_id
                except DagsterUserCodeUnreachableError as exc:
                    if not patient or "did not answer" not in str(exc) or time.monotonic() > deadline:
                        raise

        def run_of(run_id: str) -> dg.DagsterRun:
            run = instance.get_run_by_id(run_id)
            assert run is not None
            return run

        # A run executes in a child of the warm process, the pid Dagster records being the one the launcher tagged.
        first = launch()
        worker = RunWorker.of_run(run_of(first))
        assert worker is not None
        pid = worker.pid
        # The preload list stays true to what is installed, and no Python thread runs when the warm process forks.
        assert launcher._warm is not None and launcher._warm.ready == {"ready": True, "failed": {}, "threads": 1}
        warm_pid = launcher._warm.process.pid
        assert pid in descendants(warm_pid)
        wait_until("the first run to finish", lambda: run_of(first).is_finished, 300)
        messages = [e.message or "" for e in instance.all_logs(first)]
        assert run_of(first).status == dg.DagsterRunStatus.SUCCESS, messages[-10:]
        assert f"{STARTED_PROCESS}{pid})." in messages
        # The warm process reaps the worker and tells the launcher how it ended, which run monitoring would report.
        wait_until("the first run's worker's end to be told", lambda: worker in launcher._exits, 60)
        assert launcher.check_run_worker_health(run_of(first)).msg == f"run worker process {pid} exited with code 0"

        # Stopped warm process: the launch raises what the run queue retries, and the process is gone (a request it
        # never answered cannot start the run twice); the next launch starts a new warm process.
        os.kill(warm_pid, signal.SIGSTOP)
        monkeypatch.setenv("DAGSTER_GRPC_TIMEOUT_SECONDS", "3")
        with pytest.raises(DagsterUserCodeUnreachableError, match="did not answer within 3 s"):
            launch(patient=False)
        assert not Path(f"/proc/{warm_pid}").exists()
        monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS")
        monkeypatch.setenv(IN_STACK_ENV, "1")  # as `mlplatform dev` runs its servers: the next warm process, and its workers, are the stack's
        # 100 tuning trials (within 15 s) keep the second run's trained_model busy: terminated while it runs, not after
        # a fast run already succeeded. The new warm process, and so the run's worker, takes the settings from here.
        monkeypatch.setenv("MLPLATFORM_TUNING_TRIALS", "100")
        monkeypatch.setenv("MLPLATFORM_TUNING_SECONDS", "15")
        second = launch()
        assert launcher._warm.process.pid != warm_pid  # type: ignore[union-attr]

        # Terminate: SIGTERM, which Dagster turns into a retry inside a step with a retry policy (most of ours), then
        # SIGKILL after the grace period: the run ends canceled either way. Run monitoring's health check sees the worker
        # while it runs, and its absence after (what fails a run whose worker was killed).
        wait_until("the second run to start", lambda: run_of(second).status == dg.DagsterRunStatus.STARTED, 120)
        assert launcher.check_run_worker_health(run_of(second)).status == WorkerStatus.RUNNING
        assert launcher.terminate(second)
        wait_until("the second run to end", lambda: run_of(second).is_finished, 120)
        assert run_of(second).status == dg.DagsterRunStatus.CANCELED
        assert not launcher.terminate(second)  # a finished run is not terminated again
        worker = RunWorker.of_run(run_of(second))
        assert worker is not None
        wait_until("the canceled run's worker's end to be told", lambda: worker in launcher._exits, 60)
        gone = launcher.check_run_worker_health(run_of(second))
        assert not worker.alive() and gone.status == WorkerStatus.FAILED and gone.msg is not None
        assert gone.msg.startswith(f"run worker process {worker.pid} ") and ("exited with code" in gone.msg or "killed by signal" in gone.msg), gone.msg

        # The stack stops (`dev` stopped, or killed and its reaper at work): it writes that it is stopping, then SIGINT
        # reaches the run's worker, which Dagster turns into a retry of the step. The retry does not start (the operator
        # probe: it ran on with no stack and promoted a champion 12 s after `dev` was killed); the run fails, and run
        # retries launch it again once a stack is back. The worker is the stack's: the warm process had its environment.
        third = launch()
        wait_until("the third run to train", lambda: any((e.user_message or "").startswith("training on ") for e in instance.all_logs(third)), 120)
        worker = RunWorker.of_run(run_of(third))
        assert worker is not None
        (state.dagster_home / STACK_STOPPING_FILE).touch()
        os.kill(worker.pid, signal.SIGINT)
        wait_until("the third run to end", lambda: run_of(third).is_finished, 120)
        messages = [e.user_message or "" for e in instance.all_logs(third)]
        assert run_of(third).status == dg.DagsterRunStatus.FAILURE, messages[-10:]
        failures = [str(e.dagster_event.step_failure_data.error) for e in instance.all_logs(third) if e.dagster_event is not None and e.dagster_event.is_step_failure]
        assert any("the stack that launched this run is stopping: no step starts again" in f for f in failures), (failures, messages[-10:])
        assert sum(m.startswith("training on ") for m in messages) == 1, "the retry trained nothing: it stopped as it started"
        assert not any(m.startswith("challenger v") for m in messages), "and decided nothing"

def test_no_step_starts_in_a_stopping_stack_whether_or_not_it_reads_an_input(state: Settings, instance: dg.DagsterInstance,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator probe: `dev` killed outright while a drift run ran; its reaper wrote that the stack was stopping, yet
    the orphaned run went on to `estimated_performance` and retried `drift_report` 12 s later with no stack: only a step
    reading an input (through the IO manager) was stopped. Now no step starts; outside a stack (`materialize`) every one does."""
    from dagster._core.events import DagsterEventType as Events

    spec = load_spec(state.dataset_spec)
    write_batches(read_source(spec).iloc[:600], spec, state.landing_dir, 600)
    assert materialize(instance, ["raw_events"]).success, "outside a stack every step starts"
    (state.dagster_home / STACK_STOPPING_FILE).touch()
    monkeypatch.setenv(IN_STACK_ENV, "1")
    for step in ("raw_events", "drift_report", "estimated_performance", "retraining_trigger", "live_quality", "drift_dashboard"):
        stopped = materialize(instance, [step])
        failures = {e.step_key: str(e.dagster_event.step_failure_data.error) for e in instance.all_logs(stopped.run_id)
                    if e.dagster_event is not None and e.dagster_event.is_step_failure}
        assert not stopped.success and failures and all("the stack that launched this run is stopping" in f for f in failures.values()), (step, failures)
        assert not instance.get_records_for_run(stopped.run_id, of_type=Events.ASSET_MATERIALIZATION).records, f"{step}: nothing was made"
        assert not instance.get_records_for_run(stopped.run_id, of_type=Events.STEP_UP_FOR_RETRY).records, f"{step}: and nothing retried"


def _run(tags: dict[str, str]) -> dg.DagsterRun:
    return dg.DagsterRun(job_name="adult_retrain", run_id="0" * 36, tags=tags)


def test_a_run_worker_is_recognised_by_its_start_time_not_its_pid_alone() -> None:
    """A pid the kernel gave to another process since is not the run's worker: not signalled, not counted alive."""
    me = RunWorker.of(os.getpid())
    assert me.alive() and RunWorker.of_run(_run({RUN_WORKER_TAG: me.tag()})) == me
    assert not RunWorker(me.pid, me.started + 1).alive()
    assert not RunWorker(999_999_999, 1).alive()


@pytest.mark.parametrize("tag", ["", "12345", "-1:5", "0:5", "abc:5", "12:x", "1:2:3", " 12:5"])
def test_a_missing_or_malformed_worker_tag_is_never_signalled_nor_failed(tag: str) -> None:
    """No tag (another launcher's run, or the moment between fork and tag) or a hostile one ("-1" would signal every
    process): no worker, which run monitoring counts as running and terminate leaves alone."""
    run = _run({RUN_WORKER_TAG: tag} if tag else {})
    assert RunWorker.of_run(run) is None
    launcher = WarmRunLauncher()
    with dg.instance_for_test() as instance:
        launcher.register_instance(instance)
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING, "nor is a process that started it known"


@pytest.mark.parametrize(("origin", "message"), [
    (None, "has no code origin to execute"),
    (JobPythonOrigin("adult_retrain", RepositoryPythonOrigin("/opt/other/bin/python", ModuleCodePointer("mlplatform.orchestration.definitions", "defs", None))),
     "asks for /opt/other/bin/python: set MLPLATFORM_WARM_RUN_WORKERS=false"),
])
def test_a_run_the_warm_process_cannot_execute_is_refused_before_any_fork(origin: JobPythonOrigin | None, message: str) -> None:
    """No code origin, or a code location in another interpreter: a clear error, and no warm process started for it."""
    launcher = WarmRunLauncher()
    run = dg.DagsterRun(job_name="adult_retrain", run_id="0" * 36, job_code_origin=origin)
    with pytest.raises(DagsterLaunchFailedError, match=message):
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert launcher._warm is None


def test_runs_a_killed_stack_left_with_no_worker_are_failed_when_a_stack_starts() -> None:
    """Probe: `mlplatform dev` killed outright as a drift run launched; its reaper killed the worker, the run stayed
    STARTING, and for the 600 s of run monitoring's start timeout the drift sensor waited for it. A stack starting again
    fails such runs (run retries launch them again); a run whose worker lives is left alone."""
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker = RunWorker.of(gone.pid)
    gone.kill()
    gone.wait()
    with dg.instance_for_test() as instance:
        left = instance.add_run(dg.DagsterRun(job_name="adult_drift", run_id="1" * 36, status=dg.DagsterRunStatus.STARTING, tags={RUN_WORKER_TAG: worker.tag()}))
        alive = instance.add_run(dg.DagsterRun(job_name="adult_retrain", run_id="2" * 36, status=dg.DagsterRunStatus.STARTED,
                                               tags={RUN_WORKER_TAG: RunWorker.of(os.getpid()).tag()}))
        untagged = instance.add_run(dg.DagsterRun(job_name="adult_retrain", run_id="3" * 36, status=dg.DagsterRunStatus.STARTING))
        assert fail_runs_left_behind(instance) == [left.run_id]
        statuses = {run_id: instance.get_run_by_id(run_id).status for run_id in (left.run_id, alive.run_id, untagged.run_id)}  # type: ignore[union-attr]
        assert statuses == {left.run_id: dg.DagsterRunStatus.FAILURE, alive.run_id: dg.DagsterRunStatus.STARTED, untagged.run_id: dg.DagsterRunStatus.STARTING}
        events = [e.message for e in instance.all_logs(left.run_id) if e.message]
        assert any(f"The run worker (pid {worker.pid}) is gone" in m for m in events), events
        assert fail_runs_left_behind(instance) == []
        # The soak probe: a Ctrl-C with runs in flight paged two critical run-failed alerts at the next start. Such a run
        # is alerted as an interruption; its retry, which inherits its tags, is not one.
        failed = instance.get_run_by_id(left.run_id)
        assert failed is not None and stopped_in_flight(failed) and not stopped_in_flight(instance.get_run_by_id(alive.run_id))  # type: ignore[arg-type]
        assert not stopped_in_flight(dg.DagsterRun(job_name=failed.job_name, run_id="4" * 36, tags=dict(failed.tags))), "a retry, its parent's tags"


def test_a_retraining_whose_command_is_gone_before_its_run_started_holds_no_other_back() -> None:
    """The production probe: `mlplatform materialize` killed, or failed on its instance's database, while its run was
    NOT_STARTED left the run so for ever; the retraining sensor skipped every tick ("retraining run … is unfinished")
    and `materialize` again was refused. Such a run, its command gone on this machine, is canceled when a retraining
    looks for one. Not ended (the review): a started one (on Celery its steps run on without the command; run
    monitoring and the stack's start judge it by its worker), a live command's, another machine's, and a retry or
    re-execution, whose tags are its parent's."""
    from mlplatform.domain.keys import COMMAND_PROCESS_TAG, RETRAIN_TAG
    from mlplatform.orchestration.trigger import retraining_elsewhere
    from mlplatform.orchestration.warm_runs import command_process_tag, fail_runs_left_behind

    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    here, _, _ = command_process_tag()[COMMAND_PROCESS_TAG].rpartition("/")
    dead = f"{here}/{RunWorker.of(gone.pid).tag()}"
    gone.kill()
    gone.wait()
    with dg.instance_for_test() as instance:
        def retraining(run_id: str, status: dg.DagsterRunStatus, process: str, **more: str) -> dg.DagsterRun:
            return instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=run_id * 36, status=status,
                                                  tags={RETRAIN_TAG: "adult", COMMAND_PROCESS_TAG: process}, **more))  # type: ignore[arg-type]

        def busy() -> str | None:
            found = retraining_elsewhere(instance, "adult", "")
            if found is not None:
                instance.report_run_canceled(instance.get_run_by_id(found))  # type: ignore[arg-type]
            return found

        never = retraining("8", dg.DagsterRunStatus.NOT_STARTED, dead)
        assert retraining_elsewhere(instance, "adult", "") is None
        assert instance.get_run_by_id(never.run_id).status == dg.DagsterRunStatus.CANCELED  # type: ignore[union-attr]
        said = [e.message for e in instance.all_logs(never.run_id) if e.message]
        assert any(f"The mlplatform command that created the run (pid {gone.pid}) is gone" in m for m in said), said
        started = retraining("9", dg.DagsterRunStatus.STARTED, dead)
        assert busy() == started.run_id, "started: its steps may run on without the command"
        retry = retraining("a", dg.DagsterRunStatus.NOT_STARTED, dead, parent_run_id=never.run_id, root_run_id=never.run_id)
        assert busy() == retry.run_id, "a retry's tag is its parent's: it says nothing of the retry's own process"
        elsewhere = retraining("b", dg.DagsterRunStatus.NOT_STARTED, dead.replace(here, here + "-another-machine", 1))
        assert busy() == elsewhere.run_id, "a pid of another machine says nothing here"
        alive = retraining("c", dg.DagsterRunStatus.NOT_STARTED, command_process_tag()[COMMAND_PROCESS_TAG])
        assert retraining_elsewhere(instance, "adult", "") == alive.run_id, "its command is creating it right now"
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.NOT_STARTED  # type: ignore[union-attr]
        instance.report_run_canceled(alive)
        dead_worker = dead.rpartition("/")[2]  # as tagged while it ran: a real start time
        parent = instance.add_run(dg.DagsterRun(job_name="adult_drift", run_id="d" * 36, status=dg.DagsterRunStatus.FAILURE, tags={RUN_WORKER_TAG: dead_worker}))
        launching = instance.add_run(dg.DagsterRun(job_name="adult_drift", run_id="e" * 36, status=dg.DagsterRunStatus.STARTING, tags=dict(parent.tags),
                                                   parent_run_id=parent.run_id, root_run_id=parent.run_id))
        orphan = instance.add_run(dg.DagsterRun(job_name="adult_drift", run_id="f" * 36, status=dg.DagsterRunStatus.STARTING, tags=dict(parent.tags),
                                                parent_run_id="0" * 36, root_run_id="0" * 36))  # its parent and root removed by retention
        own = instance.add_run(dg.DagsterRun(job_name="adult_drift", run_id="1" * 36, status=dg.DagsterRunStatus.STARTED, tags={RUN_WORKER_TAG: dead_worker}))
        assert fail_runs_left_behind(instance) == [own.run_id], "a retry being launched carries its parent's dead worker until tagged"
        assert {r: instance.get_run_by_id(r).status for r in (launching.run_id, orphan.run_id)} == {  # type: ignore[union-attr]
            launching.run_id: dg.DagsterRunStatus.STARTING, orphan.run_id: dg.DagsterRunStatus.STARTING}


def _started_by(instance: dg.DagsterInstance, run_id: str, pid: int, at: float) -> dg.DagsterRun:
    """A STARTED run with no run worker recorded, whose RUN_START event process `pid` wrote at `at`: what
    `mlplatform materialize` (a run in its own process) or an earlier version's launcher leave."""
    run = instance.add_run(dg.DagsterRun(job_name="adult_drift", run_id=run_id, status=dg.DagsterRunStatus.STARTED))
    started = DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name, message="Started execution of run.", pid=pid)
    instance.store_event(EventLogEntry(error_info=None, level=logging.DEBUG, user_message="", run_id=run_id, timestamp=at, dagster_event=started,
                                       job_name=run.job_name))
    return run


def test_started_runs_with_no_worker_recorded_are_judged_by_the_process_that_started_them() -> None:
    """The upgrade probe: runs an earlier version's stack (or a killed `mlplatform materialize`) left STARTED carry no
    run worker: run monitoring reported them running, the drift sensor waited behind them and they held run slots for
    their hour of max runtime. On this machine's instance, the process that wrote RUN_START says: gone, or a later
    process that got its pid, fails the run; alive, or an instance other machines write (PostgreSQL), leaves it."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with dg.instance_for_test() as instance:
            killed = _started_by(instance, "5" * 36, gone.pid, time.time())
            reused = _started_by(instance, "6" * 36, later.pid, time.time() - 3600)  # its pid now another, younger process's
            running = _started_by(instance, "7" * 36, os.getpid(), time.time())
            launcher = WarmRunLauncher()
            launcher.register_instance(instance)
            health = {run.run_id: launcher.check_run_worker_health(run).status for run in (killed, reused, running)}
            assert health == {killed.run_id: WorkerStatus.FAILED, reused.run_id: WorkerStatus.FAILED, running.run_id: WorkerStatus.RUNNING}, \
                "run monitoring fails them within its 30 s while the stack runs"
            assert fail_runs_left_behind(instance) == [], "another machine's process may run it: only run monitoring's max runtime ends it"
            assert sorted(fail_runs_left_behind(instance, this_machine_only=True)) == sorted([killed.run_id, reused.run_id])
            assert instance.get_run_by_id(running.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
            for run in (killed, reused):
                failed = instance.get_run_by_id(run.run_id)
                assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE and stopped_in_flight(failed), "alerted as an interruption"
            said = [e.message for e in instance.all_logs(killed.run_id) if e.message]
            assert any(f"The process that started the run (no run worker recorded) (pid {gone.pid}) is gone" in m for m in said), said
    finally:
        later.kill()
        later.wait()


def test_terminate_leaves_a_commands_run_the_command_s_own_grace() -> None:
    """The probe: Terminate in the UI on a run of `mlplatform materialize` saw the interrupted step's retry and killed the
    command at once, which died with no word (exit -9). A command stops itself (interrupts.stops_on_signal); a worker
    that ignores SIGTERM is still killed after its grace, a command's longer one."""
    ignoring = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    workers = [subprocess.Popen([sys.executable, "-c", ignoring], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        with dg.instance_for_test() as instance:
            launcher = WarmRunLauncher()
            launcher.register_instance(instance)
            runs = [instance.add_run(dg.DagsterRun(job_name="adult_retrain", run_id=str(i) * 36, status=dg.DagsterRunStatus.STARTED,
                                                   tags={RUN_WORKER_TAG: RunWorker.of(w.pid).tag(), **extra}))
                    for i, (w, extra) in enumerate(zip(workers, ({}, {COMMAND_RUN_TAG: "token"})), start=4)]
            assert all(launcher.terminate(run.run_id) for run in runs)
            deadline = time.monotonic() + 10
            while workers[0].poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert workers[0].poll() == -signal.SIGKILL, "a run worker that does not stop is killed after its grace"
            time.sleep(1.0)  # both graces began together: the other one's, had it the same, is over too
            assert workers[1].poll() is None, "a command keeps its own grace to say why it stopped and exit"
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
