"""Running the code location's definitions from Python against a real instance: what `mlplatform materialize`,
the demo, the benchmarks and the tests use, so each runs what the daemon and the UI run."""

import fcntl
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.utils import make_new_run_id

from mlplatform.domain.keys import COMMAND_RUN_TAG, RUN_KEY_TAG
from mlplatform.orchestration.errors import error_classes, root_cause
from mlplatform.orchestration.interrupts import stops_on_signal
from mlplatform.orchestration.names import DRIFT_RUN, ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.settings import REPO_ROOT

DEFINITIONS_MODULE = "mlplatform.orchestration.definitions"  # the code location of workspace.yaml

RunResult = dg.ExecuteInProcessResult | dg.JobExecutionResult  # a run executed here, or orchestrated here with steps elsewhere
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class LaunchError(RuntimeError):
    """A run failed; the message holds its failed steps' errors, `run_id` the run (None: none was launched), `failed_on`
    the class names of those errors and of the exceptions they came from (how a command tells a finding about the data,
    `TooFewLabelled`, from a fault)."""

    def __init__(self, message: str, run_id: str | None = None, failed_on: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.failed_on = failed_on


class RetrainingBusy(LaunchError):
    """Another retraining of the model is running: one at a time per model, as the run queue keeps the daemon's."""


def _open_lock(path: Path) -> tuple[int | None, bool]:
    """The lock file, and whether this user may write it: another user's is locked all the same, read-only (flock needs
    no write access); in a Dagster home this user cannot write (a shared production one), there is none (None)."""
    for flags in (os.O_CREAT | os.O_RDWR, os.O_RDONLY):
        try:
            return os.open(path, flags, 0o644), flags != os.O_RDONLY
        except PermissionError:
            continue
        except OSError:
            break
    return None, False


@contextmanager
def retraining_slot(instance: dg.DagsterInstance, model: str) -> Iterator[dict[str, str]]:
    """The tags of a retraining run of `model` started here, or RetrainingBusy. A run executed in this process skips
    the run queue and its one-retraining-per-model limit (the concurrency probe: two `mlplatform materialize` a second
    apart made two identical versions, judged side by side): a lock per model and machine in the Dagster home keeps out
    another command, and the instance's unfinished runs tagged as retrainings of the model (the daemon's; runs whose
    process is gone are failed first) keep this one out. Tagged so, this run holds back the queue and the sensors."""
    from mlplatform.orchestration.instance import retrain_run_tags
    from mlplatform.orchestration.trigger import retraining_elsewhere
    from mlplatform.orchestration.warm_runs import fail_runs_left_behind, on_this_machine

    fd, writable = _open_lock(Path(instance.root_directory) / f".retraining-{model}.lock")
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                raise RetrainingBusy(f"a retraining of {model} is running in another command on this machine (pid {holder or 'unknown'}): "
                                     "wait for it to end") from None
            if writable:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)  # who holds it, for the refusal of the next one
        if on_this_machine(instance):  # on PostgreSQL, runs of other machines: their processes are not this one's to judge
            fail_runs_left_behind(instance, this_machine_only=True)
        other = retraining_elsewhere(instance, model, "")
        if other is not None:
            raise RetrainingBusy(f"a retraining of {model} is already running (run {other}): wait for it to end (`mlplatform status`, "
                                 "or the Dagster UI's Runs page)")
        yield retrain_run_tags(model)
    finally:
        if fd is not None:
            os.close(fd)


def command_tags(instance: dg.DagsterInstance, in_process: bool) -> dict[str, str]:
    """The tags of a run this command starts: a token of its own (how a Terminate leaves the stopping to it, and how its
    interrupt finds a run `execute_job` made) and, executing it here on this machine's instance, this process as the run's
    worker, by pid and start time: Terminate in the UI reaches it, and killed, its run is failed at once."""
    from mlplatform.domain.keys import RUN_WORKER_TAG
    from mlplatform.orchestration.warm_runs import RunWorker, command_process_tag, on_this_machine

    worker = {RUN_WORKER_TAG: RunWorker.of(os.getpid()).tag()} if in_process and on_this_machine(instance) else {}
    return {COMMAND_RUN_TAG: uuid.uuid4().hex, **command_process_tag(), **worker}


@cache
def definitions() -> dg.Definitions:
    from mlplatform.orchestration.definitions import defs

    return defs()


def raise_on_failure(result: RunResult, what: str) -> RunResult:
    """The run, or LaunchError saying why it failed: a blocking check by its name and finding (the evaluation ran and
    rejected the challenger; "DagsterAssetCheckFailedError: 1 blocking asset check failed" read like a crash)."""
    if not result.success:
        blocked = [f"{e.asset_key.to_user_string()}'s blocking check {e.check_name} failed ({e.description})"
                   for e in result.get_asset_check_evaluations() if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
        errors = [e.event_specific_data.error for e in result.all_events if e.is_step_failure]  # type: ignore[union-attr]
        failures = [root_cause(error, whole=True) for error in errors]
        # A failure the executor reports on the run, not on a step (a Celery worker's storage error, a lost worker): its engine or run failure event carries it.
        others = [error.message.strip() for e in result.all_events if (e.is_run_failure or e.is_engine_event)
                  and (error := getattr(e.event_specific_data, "error", None)) is not None]
        reasons = blocked or failures or list(dict.fromkeys(others))
        raise LaunchError(f"{what} failed (run {result.run_id}): {' | '.join(reasons) or 'see the run in the Dagster UI'}", result.run_id,
                          frozenset(name for error in errors for name in error_classes(error)))
    return result


def materialize(instance: dg.DagsterInstance, model: str, assets: Sequence[str], tags: dict[str, str] | None = None,
                raise_on_error: bool = True) -> RunResult:
    """Materialize `assets` (names such as `raw_events`) of `model`, recorded in `instance` like any run.

    With the in-process executor the run executes in this process. With another (Celery), this process
    orchestrates while the executor sends each step away: that needs the job as a pointer into the code
    location, which the workers load, so it goes through `execute_job`.
    """
    selection = set(ModelNames(model).assets(*assets))
    asset_job = definitions().resolve_implicit_global_asset_job_def()
    what = f"materializing {', '.join(assets)} of {model}"
    in_process = asset_job.executor_def is dg.in_process_executor
    command = command_tags(instance, in_process)
    result: RunResult
    if in_process:
        # The selection recorded with the run, as a sensor's or the UI's run has it: what it did (`what_ran`, status).
        result = _execute_here(asset_job, instance, what, {**(tags or {}), **command}, asset_selection=sorted(selection, key=str))
    else:  # execute_job takes no run id: the run is found by the command's token
        pointer = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", working_directory=str(REPO_ROOT))
        token = {COMMAND_RUN_TAG: command[COMMAND_RUN_TAG]}
        with stops_on_signal(instance, what, lambda: next(iter(instance.get_runs(filters=dg.RunsFilter(tags=token), limit=1)), None)):
            result = dg.execute_job(pointer.get_reconstructable_job(asset_job.name), instance, run_config=QUIET, tags={**(tags or {}), **command},
                                    raise_on_error=False, asset_selection=sorted(selection, key=str))
    return raise_on_failure(result, what) if raise_on_error else result


def _execute_here(job: dg.JobDefinition, instance: dg.DagsterInstance, what: str, tags: dict[str, str],
                  asset_selection: Sequence[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
    """`job` executed in this process, quietly and never raising, stopped by a signal as a command is (`stops_on_signal`)."""
    run_id = make_new_run_id()
    with stops_on_signal(instance, what, lambda: instance.get_run_by_id(run_id)):
        return job.execute_in_process(instance=instance, tags=tags, run_config=QUIET, raise_on_error=False, asset_selection=asset_selection, run_id=run_id)


def tick(instance: dg.DagsterInstance, sensor_name: str, cursor: str | None, platform: PlatformResource | None = None) -> SensorExecutionData:
    """One evaluation of a sensor, as the daemon would make it (with `platform` overriding the resource, if given):
    its run requests, next cursor and skip message."""
    sensor = definitions().resolve_sensor_def(sensor_name)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions(), sensor_name=sensor_name,
                                      resources={"platform": platform or PlatformResource()})
    return sensor.evaluate_tick(context)


def _request_tags(request: dg.RunRequest) -> dict[str, str]:
    return {**request.tags, RUN_KEY_TAG: request.run_key or ""}


def launch(instance: dg.DagsterInstance, model: str, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run what a retraining sensor asked for (its assets: all of the retraining, or evaluation_report alone), in this
    process, with its tags and run key (the daemon does the same)."""
    job = definitions().resolve_job_def(ModelNames(model).retrain_job)
    what = f"retraining run of {model}"
    result = _execute_here(job, instance, what, {**_request_tags(request), **command_tags(instance, in_process=True)}, request.asset_selection)
    return raise_on_failure(result, what)


def launch_drift_run(instance: dg.DagsterInstance, model: str, request: dg.RunRequest) -> RunResult:
    """Run what a drift report sensor asked for (the report, and the retraining it may call for) with its tags and run key."""
    return materialize(instance, model, DRIFT_RUN, tags=_request_tags(request))
