"""A busy machine delays runs instead of failing them, against the real dagster-daemon and the code server `dev` starts: the
instance config and gRPC timeout reach the servers `dev` starts; with Dagster's launcher, a launch the stopped (SIGSTOP)
code server does not answer before the deadline goes back into the queue instead of failing the run; with `dev`'s
deadline and the default (warm) launcher, a run launched while the code server is stopped succeeds."""

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.cli.dev import CHILD_ENV_DEFAULTS, Server, daemon_servers, running
from mlplatform.domain.spec import load_spec
from mlplatform.orchestration.instance import CODE_SERVER_STARTUP_SECONDS, LAUNCH_RETRIES, LAUNCH_RETRY_DELAY_SECONDS, RUN_START_TIMEOUT_SECONDS, prepare_dagster_home
from mlplatform.pipeline.replay import read_source, write_batches
from mlplatform.settings import Settings
from mlplatform_tests.support.loop import code_location, create_retrain_run, materialize
from mlplatform_tests.support.processes import descendants, wait_until

REQUEUED = "re-submitting the run into the queue"
STALL_SECONDS = 10.0


def test_instance_config_and_grpc_timeout_reach_the_servers(state: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS", raising=False)
    with dg.DagsterInstance.get() as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert (queue.max_user_code_failure_retries, queue.user_code_failure_retry_delay) == (LAUNCH_RETRIES, LAUNCH_RETRY_DELAY_SECONDS)
        assert instance.run_monitoring_start_timeout_seconds == RUN_START_TIMEOUT_SECONDS
        assert instance.code_server_process_startup_timeout == CODE_SERVER_STARTUP_SECONDS
    probe = Server("probe", "(env probe)", [sys.executable, "-c", "import time; time.sleep(600)"], ready=lambda: True)
    with running(state, log_dir=tmp_path / "logs", timeout_seconds=60, grace_seconds=5, servers=[probe]):
        assert probe.process is not None
        environ = Path(f"/proc/{probe.process.pid}/environ").read_bytes().decode()
    env = dict(item.split("=", 1) for item in environ.split("\0") if "=" in item)
    assert env["DAGSTER_GRPC_TIMEOUT_SECONDS"] == CHILD_ENV_DEFAULTS["DAGSTER_GRPC_TIMEOUT_SECONDS"]
    assert env["DAGSTER_HOME"] == str(state.dagster_home)


@pytest.fixture
def code_server(request: pytest.FixtureRequest, state: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The code server, as `dev` starts it for the real dagster-daemon, on a state with labelled events ingested.

    Its gRPC deadline is `dev`'s default unless a test passes a shorter one (as a string) as the fixture's param. Runs are
    launched through the code server (Dagster's launcher, `MLPLATFORM_WARM_RUN_WORKERS=false`), whose deadline it is: the
    warm launcher needs no code server, and replaces a stopped warm process by design (test_warm_runs.py), so with it a
    run could start during the stall."""
    grpc_timeout = getattr(request, "param", None)
    if grpc_timeout is None:
        monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS", raising=False)
    else:
        monkeypatch.setenv("DAGSTER_GRPC_TIMEOUT_SECONDS", grpc_timeout)
    monkeypatch.setenv("MLPLATFORM_WARM_RUN_WORKERS", "false")
    settings = Settings()  # read after the line above: `running` writes dagster.yaml from it (from `state`, it named the warm launcher)
    prepare_dagster_home(settings)
    spec = load_spec(state.dataset_spec)
    write_batches(read_source(spec).iloc[:1500], spec, state.landing_dir, 1500)
    with dg.DagsterInstance.get() as instance:
        materialize(instance, ["raw_events"], raise_on_error=True)
        _stop_instigators(instance)
    servers = daemon_servers(settings)
    with running(settings, log_dir=tmp_path / "logs", timeout_seconds=300, servers=servers):
        yield servers[0]


def _stop_instigators(instance: dg.DagsterInstance) -> None:
    """Every sensor and schedule stopped before the daemon starts: a tick the stall froze inside the code server, halfway
    through a read of the instance's SQLite storage, would keep the daemon's writes waiting ("database is locked")."""
    with code_location(instance) as workspace:
        [repository] = workspace.get_code_location("mlplatform").get_repositories().values()
        for sensor in repository.get_sensors():
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
        for schedule in repository.get_schedules():
            instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)


@contextmanager
def _submitted_while_stopped(code_server: Server) -> Iterator[tuple[dg.DagsterInstance, str]]:
    """A retraining run submitted to the queue while the code server (and what it spawned) is stopped.

    The run is created first, through a code server of this process. Until the caller leaves the block, the code server
    and every process below it are stopped as soon as they appear. Then they all resume."""
    assert code_server.process is not None
    with dg.DagsterInstance.get() as instance, code_location(instance) as workspace:
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher", "runs must go through the code server the test stops"
        run_id = create_retrain_run(instance, workspace)
        stopped: set[int] = set()
        leaving = threading.Event()

        def hold() -> None:
            while True:
                for pid in {code_server.process.pid, *descendants(code_server.process.pid)} - stopped:  # type: ignore[union-attr]
                    os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
                if leaving.wait(0.05):
                    return

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        try:
            wait_until("the code server stopped", lambda: bool(stopped), 30)
            instance.submit_run(run_id, workspace)
            yield instance, run_id
        finally:
            leaving.set()
            holder.join()
            for pid in stopped:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message or "" for e in instance.all_logs(run_id)]


@pytest.mark.parametrize("code_server", ["5"], indirect=True)
def test_a_launch_that_times_out_goes_back_into_the_queue_instead_of_failing(code_server: Server) -> None:
    """A 5 s deadline against a stopped code server: DEADLINE_EXCEEDED, and the run waits in the queue."""
    with _submitted_while_stopped(code_server) as (instance, run_id):
        wait_until("the launch to time out and the run to be queued again", lambda: any(REQUEUED in m for m in _messages(instance, run_id)), 90)
        run = instance.get_run_by_id(run_id)
        # back in the queue, or already dequeued for the next try (every 10 s): never failed by the timeout
        assert run is not None and run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING), _messages(instance, run_id)[-5:]


def test_a_run_launched_while_the_code_server_is_stopped_succeeds(code_server: Server) -> None:
    """`dev`'s gRPC deadline outlasts a code server that does not run for a while: the launch waits, the run succeeds."""
    with _submitted_while_stopped(code_server) as (instance, run_id):
        time.sleep(STALL_SECONDS)
        run = instance.get_run_by_id(run_id)
        assert run is not None and not run.is_finished
    wait_until("the run to finish", lambda: instance.get_run_by_id(run_id).is_finished, 600)  # type: ignore[union-attr]
    finished = instance.get_run_by_id(run_id)
    assert finished is not None and finished.status == dg.DagsterRunStatus.SUCCESS, _messages(instance, run_id)[-10:]
