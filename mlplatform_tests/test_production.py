"""The production profile on real engines: the Dagster instance on PostgreSQL, the MLflow server on PostgreSQL,
steps on Celery workers with Redis, and `mlplatform dev --profile production` bringing it all up."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
import pytest
from celery import Celery

from mlplatform.cli.dev import LOCATIONS_QUERY, celery_worker, daemon_servers, mlflow_server, redis_server, running
from mlplatform.domain.keys import LAUNCHED_BY_TAG
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.training import TrainingConfig, train
from mlplatform.domain.validation import validate_frame
from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.orchestration.launch import definitions
from mlplatform.pipeline.replay import write_batches
from mlplatform.ports import free_port
from mlplatform.settings import REPO_ROOT, Settings, SettingsError
from mlplatform.stores.registry import Registry
from mlplatform_tests.support import loop
from mlplatform_tests.test_devserver import _processes_with
from mlplatform_tests.support.processes import wait_until



@pytest.fixture
def pg_instance_state(postgres_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """The `state` fixture with the Dagster instance's storage in a fresh PostgreSQL database."""
    monkeypatch.setenv("MLPLATFORM_DAGSTER_POSTGRES_URL", postgres_url)
    settings: Settings = request.getfixturevalue("state")
    yield settings


def test_a_materialization_is_recorded_in_the_postgres_instance(pg_instance_state: Settings, adult_rows: pd.DataFrame, postgres_url: str) -> None:
    settings = pg_instance_state
    assert "postgres_url" in (settings.dagster_home / "dagster.yaml").read_text(encoding="utf-8")
    write_batches(adult_rows.head(300), loop.model().spec, settings.landing_dir, 300)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        result = loop.materialize(instance, ["raw_events"], raise_on_error=True)
    with psycopg.connect(postgres_url) as conn:
        run_ids = [row[0] for row in conn.execute("SELECT run_id FROM runs")]
        materialized = conn.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND run_id = %s",
                                    (result.run_id,)).fetchone()
    assert run_ids == [result.run_id] and materialized == (1,)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as fresh:
        event = fresh.get_latest_materialization_event(loop.names().asset("raw_events"))
        assert event is not None and event.run_id == result.run_id
        assert fresh.get_run_by_id(result.run_id).is_success  # type: ignore[union-attr]


def test_an_unreachable_instance_database_fails_naming_the_setting(tmp_path, postgres_cluster) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(state_dir=tmp_path, dagster_postgres_url=postgres_cluster.url(password="wrong"))
    with pytest.raises(SettingsError, match="MLPLATFORM_DAGSTER_POSTGRES_URL .*:\\*\\*\\*@127.0.0.1.*cannot connect"):
        prepare_dagster_home(settings)


def test_models_register_and_promote_through_the_mlflow_server_on_postgres(tmp_path: Path, postgres_url: str, adult_rows: pd.DataFrame,
                                                                          adult_spec: DatasetSpec) -> None:
    settings = Settings(state_dir=tmp_path / "state", mlflow_backend_store_url=postgres_url, mlflow_ui_url=f"http://127.0.0.1:{free_port()}")
    assert settings.tracking_uri == settings.mlflow_ui_url and settings.artifact_root == "mlflow-artifacts:"
    window = validate_frame(adult_rows.head(600), adult_spec, generated_id_prefix="t", generated_time_start_us=0).events
    result = train(window, adult_spec, TrainingConfig(min_rows=100, trials=1, seconds=10, num_boost_round=50, early_stopping_rounds=5))
    with running(settings, log_dir=tmp_path / "logs", servers=[mlflow_server(settings)]):
        registry = Registry(settings.tracking_uri, settings.artifact_root, adult_spec)
        version = registry.log_model(result, window, {"auc": 0.8}, {"mlplatform.test": "yes"})
        registry.promote(version.version, reason="first", by="test")
        again = Registry(settings.tracking_uri, settings.artifact_root, adult_spec)
        record = again.champion_record()
        assert record is not None and record.version == int(version.version)
        served = again.load_predictor(version.version).predict(window.head(5))
        assert len(served) == 5
    with psycopg.connect(postgres_url) as conn:
        aliases = conn.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias", (adult_spec.model_name,)).fetchall()
    assert ("champion", int(version.version)) in aliases
    assert list((settings.mlflow_dir / "artifacts").rglob("MLmodel")), "artifacts are proxied into the state folder"


RUN_WAIT_S = 300.0  # for a run, a step or a retry to get somewhere on 2 shared cores
POOL = 2  # the Celery worker's pool processes: the sensor's drift_report steps run beside the retraining's, not before them
PROD_SERVERS = ("redis", "mlflow", "reports", "evidently-ui", "code-server-mlplatform", "dagster-daemon", "dagster-webserver", "celery-worker", "serving")


@pytest.fixture
def prod_state() -> Iterator[Path]:
    """A state folder the `postgres` user can reach (pytest's own temporary folders are private to root)."""
    state = Path(tempfile.mkdtemp(prefix="mlplatform-prod-"))
    state.chmod(0o711)
    yield state / "state"
    shutil.rmtree(state, ignore_errors=True)


def _dev_production(state: Path, extra: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    urls = {f"MLPLATFORM_{key}": f"http://127.0.0.1:{free_port()}" for key in ("DAGSTER_UI_URL", "MLFLOW_UI_URL", "REPORTS_URL", "EVIDENTLY_UI_URL")}
    env = {**os.environ, **urls, "MLPLATFORM_SERVE_PORT": str(free_port()), "MLPLATFORM_STATE_DIR": str(state), **extra}
    for key in ("DAGSTER_HOME", "MLPLATFORM_DAGSTER_POSTGRES_URL", "MLPLATFORM_CELERY_BROKER_URL"):
        if key not in extra:
            env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "mlplatform.cli", "dev", "--profile", "production"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc, env


def test_make_prod_stack_comes_up_on_loopback_answers_and_stops_cleanly(prod_state: Path) -> None:
    proc, env = _dev_production(prod_state, {})
    marker = f"MLPLATFORM_STATE_DIR={prod_state}\0"
    try:
        printed: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 400
        # Up to the throwaway line, printed right after the servers (communicate() below reads past readline's buffer).
        while not any(line.strip().startswith("throwaway:") for line in printed) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line)
        assert [s for s in PROD_SERVERS if any(line.startswith(f"  {s} ") for line in printed)] == list(PROD_SERVERS), "".join(printed)
        query = urllib.request.Request(env["MLPLATFORM_DAGSTER_UI_URL"] + "/graphql", data=json.dumps({"query": LOCATIONS_QUERY}).encode(),
                                       headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(query, timeout=10) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["loadStatus"]) for e in entries] == [("mlplatform", "LOADED")]
        for url in (env["MLPLATFORM_MLFLOW_UI_URL"] + "/health", f"http://127.0.0.1:{env['MLPLATFORM_SERVE_PORT']}/healthz"):
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200, url
        assert "postgresql+psycopg2://" in (prod_state / "dagster" / "dagster.yaml").read_text(encoding="utf-8")
        assert not (prod_state / "mlflow" / "mlflow.db").exists() and (prod_state / "postgres" / "data").is_dir()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)  # past its stop watchdog (120 s), which prints where it waits
        assert proc.returncode == 0 and "stopped (the throwaway PostgreSQL cluster and what it held are removed)" in out, out
        said = "".join(printed)  # the production probe: a restart emptied every store, and the console did not say it would
        assert f"  throwaway: the PostgreSQL cluster in {prod_state / 'postgres'} holds what MLPLATFORM_EVENT_LOG_URL" in said, said[-3000:]
        assert _processes_with(marker) == []
        assert not (prod_state / "postgres").exists(), "the throwaway cluster is removed at stop"
    finally:
        if proc.poll() is None:  # a failed assertion: Ctrl-C lets dev stop its children (each in its own session) and the cluster
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.parametrize(("extra", "named"), [
    ({"MLPLATFORM_DAGSTER_POSTGRES_URL": "postgresql://postgres:secret@127.0.0.1:1/dagster"}, "MLPLATFORM_DAGSTER_POSTGRES_URL"),
    ({"PATH": "/nonexistent"}, "`redis-server` not found"),
    ({"MLPLATFORM_DASK_SCHEDULER": "tcp://127.0.0.1:1"}, "MLPLATFORM_DASK_SCHEDULER (tcp://127.0.0.1:1): no Dask scheduler answers"),
    ({"MLPLATFORM_CELERY_WORKER_CONCURRENCY": "0"}, "MLPLATFORM_CELERY_WORKER_CONCURRENCY"),
    ({"MLPLATFORM_CELERY_WORKER_CONCURRENCY": "two"}, "MLPLATFORM_CELERY_WORKER_CONCURRENCY"),
])
def test_prod_fails_at_start_naming_the_setting_or_binary(prod_state: Path, extra: dict[str, str], named: str) -> None:
    proc, _ = _dev_production(prod_state, extra)
    out, _ = proc.communicate(timeout=180)  # its start-up fails, then its stop (its watchdog: 120 s)
    assert proc.returncode != 0 and named in out and "secret" not in out, out



def test_the_celery_executor_submits_step_after_step_without_a_duplicate_task_warning(state: Settings) -> None:
    """dagster-celery registers its task again for every step it submits: each terminal `materialize` on Celery printed a
    DuplicateTaskNameWarning block (the production probe). Two submissions' registrations, as a run of two steps makes."""
    import warnings

    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    from mlplatform.orchestration.executor import run_executor

    app = make_app({"broker": "redis://127.0.0.1:1/0"})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        run_executor(state.model_copy(update={"celery_broker_url": "redis://127.0.0.1:1/0"}))
        for _ in range(2):
            assert create_task(app).name == "execute_plan"  # registered, as submitting a step's signature does
        warnings.warn("a warning of another kind is still said", UserWarning)
    assert [str(w.message) for w in said] == ["a warning of another kind is still said"]


def test_the_stack_s_redis_keeps_queued_steps_and_bindings_when_killed_and_started_again(state: Settings) -> None:
    """A Redis restarted by `make prod` after a crash came back empty: a step a run submitted next found no exchange
    binding (kombu's producer declares it once per connection), went to the undeliverable list, and its run stayed
    STARTED with no step run."""
    import redis

    settings = state.model_copy(update={"celery_broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    server = redis_server(settings)
    assert settings.celery_broker_url is not None
    client = redis.Redis.from_url(settings.celery_broker_url, socket_timeout=5)
    first = subprocess.Popen(server.command, stdout=subprocess.DEVNULL)
    try:
        wait_until("redis to answer", server.ready, 30)
        client.sadd("_kombu.binding.dagster", "dagster\x06\x16\x06\x16dagster")
        client.lpush("dagster", "a step submitted")
        time.sleep(1.5)  # the append-only file is synced every second
    finally:
        first.kill()
        first.wait()
    again = subprocess.Popen(server.command, stdout=subprocess.DEVNULL)
    try:
        wait_until("redis to answer again", server.ready, 30)
        assert client.smembers("_kombu.binding.dagster") and client.lrange("dagster", 0, -1) == [b"a step submitted"]
    finally:
        again.terminate()
        again.wait()
    next_stack = subprocess.Popen(redis_server(settings).command, stdout=subprocess.DEVNULL)  # a stack started anew: none of those steps
    try:
        wait_until("a new stack's redis to answer", server.ready, 30)
        assert client.llen("dagster") == 0
    finally:
        next_stack.terminate()
        next_stack.wait()


@contextlib.contextmanager
def _test_worker(state: Settings) -> Iterator[tuple[str, Celery]]:
    """A Redis and a Celery worker of one pool process, with the stack's worker command, running the tests' app
    (support/celery_app.py): yields the broker's URL and a client app of its own that sends the app's tasks by name."""
    from mlplatform.orchestration.executor import CELERY_QUEUE, celery_worker_command, celery_worker_env

    settings = state.model_copy(update={"celery_broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    assert settings.celery_broker_url is not None
    server = redis_server(settings)
    broker = subprocess.Popen(server.command, stdout=subprocess.DEVNULL)
    worker: subprocess.Popen[bytes] | None = None
    try:
        wait_until("redis to answer", server.ready, 30)
        command = celery_worker_command(sys.executable, f"held@{socket.gethostname()}", 1, app="mlplatform_tests.support.celery_app")
        worker = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **celery_worker_env(settings)}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        client = Celery("client", broker=settings.celery_broker_url, backend=settings.celery_broker_url)
        client.conf.task_default_queue = CELERY_QUEUE
        yield settings.celery_broker_url, client
        client.close()
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        broker.kill()
        broker.wait()


def test_a_busy_worker_leaves_the_next_step_in_the_queue(state: Settings) -> None:
    """The production probe: the whole Celery worker killed mid-step also lost a step of another run that had not
    started, which the worker had reserved beyond its one pool process (`--prefetch-multiplier 1` still reserves one):
    it sat in Redis's unacked hash, and both runs stayed STARTED. The stack's worker command takes a step only when a
    pool process is free, so a step waiting is in the queue, for a restarted worker or another."""
    import redis

    from mlplatform.orchestration.executor import CELERY_QUEUE

    with _test_worker(state) as (url, app):
        client = redis.Redis.from_url(url, socket_timeout=5)
        held = app.send_task("hold", (60,))
        wait_until("the first step to run", lambda: client.llen(CELERY_QUEUE) == 0 and client.hlen("unacked") == 0, 120)
        app.send_task("hold", (0,))
        time.sleep(3)  # the worker polls its queue every second
        assert (client.llen(CELERY_QUEUE), client.hlen("unacked")) == (1, 0), "the second step waits in the queue, reserved by no worker"
        held.revoke()


def test_a_step_whose_task_raised_in_the_worker_is_lost_not_the_end_of_the_run(state: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """The production probe: a step's task raised in the worker (its events could not be stored, PostgreSQL restarting),
    and dagster-celery's loop, holding it as an error, submitted no step again and spun: a retry it had scheduled never
    ran, the run stayed STARTED with its run worker at 70 % of a CPU. The executor reads such a task as revoked, which the
    loop takes as a step lost (in an unknown state: the run fails at its end) while every other step goes on."""
    import logging

    from celery.exceptions import TaskRevokedError

    from mlplatform.orchestration.executor import LostWhenItRaises

    class Context:  # the executor's plan context, of which the wrapper uses the log
        log = logging.getLogger("run")

    with _test_worker(state) as (_, app):
        lost: dict[str, Any] = {}
        failed, held = (LostWhenItRaises(app.send_task(name, args), Context(), key, lost) for name, args, key in (("fail", (), "adult__features"), ("hold", (0,), "b")))
        wait_until("both tasks to end", lambda: failed.ready() and held.ready(), 120)
        assert held.get() == 0, "a task that ended well is as it was"
        with caplog.at_level(logging.ERROR, logger="run"), pytest.raises(TaskRevokedError, match="adult__features: RuntimeError: too many retries"):
            failed.get()
    assert ("step adult__features: its Celery task failed in the worker (RuntimeError: too many retries for DB connection); the step is lost "
            "(the run fails once its other steps, their retries included, have ended)") in caplog.text
    assert list(lost) == ["adult__features"] and "RuntimeError: too many retries for DB connection" in lost["adult__features"].to_string(), \
        "for the run's failure to say"


def _pool_children(pid: int) -> list[int]:
    """The processes a Celery worker forked for its pool (Linux /proc)."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]


def _finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def _step_events(instance: dg.DagsterInstance, run_id: str, event_type: str) -> list[dg.EventLogEntry]:
    return [r for r in instance.all_logs(run_id) if r.dagster_event is not None and r.dagster_event.event_type_value == event_type]


@pytest.fixture
def fresh_definitions() -> Iterator[None]:
    """The code location built anew for the test's settings and again after it: a process builds it once, and its
    executor follows the broker setting of that moment."""
    definitions.cache_clear()
    yield
    definitions.cache_clear()


@pytest.mark.usefixtures("fresh_definitions")
@pytest.mark.timeout(1800)  # six bounded waits of RUN_WAIT_S: on a loaded machine the whole can pass the suite's 600 s
def test_the_loop_on_celery_survives_a_worker_killed_mid_training(postgres_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
                                                                  adult_rows: pd.DataFrame, tmp_path: Path) -> None:
    """The production loop end to end, once: the Dagster instance and the event log on PostgreSQL, every step a task on a
    Celery worker of two pool processes, the daemon's sensor launching the retraining. The pool process running its
    trained_model is killed while it trains (as the kernel's OOM killer would): the run fails saying so, Dagster's run retry resumes it from the failed step, and
    exactly one new version becomes champion."""
    broker = f"redis://127.0.0.1:{free_port()}/0"
    # 100 tuning trials (within 6 s) keep trained_model busy for seconds: long enough to be killed in the middle (15 s
    # cost the suite 30 s of CPU over the three trainings, on the path of its longest test).
    # One drift report run only (the first, requested once there is a champion): another after the 3000 new rows would
    # share the two pool processes with the retraining under test (report, estimate, dashboard: minutes on a busy machine).
    for key, value in {"MLPLATFORM_DAGSTER_POSTGRES_URL": postgres_url, "MLPLATFORM_EVENT_LOG_URL": postgres_url,
                       "MLPLATFORM_CELERY_BROKER_URL": broker, "MLPLATFORM_CELERY_WORKER_CONCURRENCY": str(POOL),
                       "MLPLATFORM_TUNING_TRIALS": "100", "MLPLATFORM_TUNING_SECONDS": "6", "MLPLATFORM_DRIFT_EVERY_N_EVENTS": "1000000"}.items():
        monkeypatch.setenv(key, value)
    settings: Settings = request.getfixturevalue("state")
    spec, names = loop.model().spec, loop.names()
    worker = celery_worker(settings, name=f"test-{uuid.uuid4().hex[:8]}")
    worker_name = worker.url.split()[0]
    with running(settings, log_dir=tmp_path / "logs", servers=[redis_server(settings), worker, *daemon_servers(settings)]), \
            dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        write_batches(adult_rows.head(1500), spec, settings.landing_dir, 1500)
        bootstrap = loop.materialize(instance, ["raw_events", "features", "trained_model", "evaluation_report"], raise_on_error=True)
        handed = {(e.step_key, e.dagster_event.event_specific_data.metadata["Celery worker"].value)  # type: ignore[union-attr]
                  for e in _step_events(instance, bootstrap.run_id, "ENGINE_EVENT") if "Celery worker" in (e.dagster_event.event_specific_data.metadata or {})}  # type: ignore[union-attr]
        succeeded = _step_events(instance, bootstrap.run_id, "STEP_SUCCESS")
        # A step its retry policy ran again (a busy machine's lock timeout) is handed to the worker once per attempt.
        retried = [e.message for e in _step_events(instance, bootstrap.run_id, "STEP_UP_FOR_RETRY")]
        assert len(succeeded) >= 4 and handed == {(e.step_key, worker_name) for e in succeeded}, \
            f"every step (assets and their checks) is a task on the worker; retried: {retried}"
        assert os.getpid() not in {r.dagster_event.pid for r in succeeded}  # type: ignore[union-attr]
        assert loop.model().registry.champion_record().version == 1  # type: ignore[union-attr]

        # 3000 new rows: the challenger (trained on 3600 before its hold-out) must beat a champion refit on all its 1500
        write_batches(adult_rows.iloc[1500:4500], spec, settings.landing_dir, 3000)
        loop.materialize(instance, ["raw_events"], raise_on_error=True)
        launched = wait_until("the sensor's retraining run", lambda: instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: names.retraining_sensor})), RUN_WAIT_S)
        killed = launched[-1]
        training = wait_until("trained_model to start on the worker", lambda: [e for e in _step_events(instance, killed.run_id, "STEP_START")
                                                                              if e.step_key == names.asset("trained_model").to_python_identifier()], RUN_WAIT_S)
        assert worker.process is not None
        pool = _pool_children(worker.process.pid)
        assert len(pool) == POOL and training[0].dagster_event.pid in pool, "the setting sizes the pool; the step runs in one of its processes"  # type: ignore[union-attr]
        os.kill(training[0].dagster_event.pid, signal.SIGKILL)  # type: ignore[union-attr]
        assert wait_until("the killed run to end", lambda: _finished(instance, killed.run_id), RUN_WAIT_S).status == dg.DagsterRunStatus.FAILURE
        failure = _step_events(instance, killed.run_id, dg.DagsterEventType.RUN_FAILURE.value)
        assert len(failure) == 1 and "WorkerLostError: Worker exited prematurely: signal 9" in str(failure[0].dagster_event.event_specific_data)  # type: ignore[union-attr]
        retry = wait_until("Dagster's run retry", lambda: instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": killed.run_id})), RUN_WAIT_S)[0]
        assert wait_until("the retry to end", lambda: _finished(instance, retry.run_id), RUN_WAIT_S).status == dg.DagsterRunStatus.SUCCESS
        assert retry.tags[LAUNCHED_BY_TAG] == names.retraining_sensor and retry.tags["dagster/is_resume_retry"] == "true"
        resumed = {e.step_key for e in _step_events(instance, retry.run_id, "STEP_SUCCESS")}
        assert names.asset("trained_model").to_python_identifier() in resumed
        assert names.asset("features").to_python_identifier() not in resumed, "the retry resumes from the failed step; features is reused"
        retrainings = instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: names.retraining_sensor}))
        assert {r.run_id for r in retrainings} == {killed.run_id, retry.run_id}, "one trigger, one run (and its retry)"
    registry = loop.model().registry
    assert [c.version for c in registry.timeline()] == [1, 2] and registry.champion_record().version == 2  # type: ignore[union-attr]
    assert sorted(v.version for v in registry.versions()) == [1, 2], "the killed attempt registered no version"
