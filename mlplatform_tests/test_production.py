"""The production profile on real engines: the Dagster instance on PostgreSQL, the MLflow server on PostgreSQL,
steps on Celery workers with Redis, and `mlplatform dev --profile production` bringing it all up."""

import json
import os
import re
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

import dagster as dg
import pandas as pd
import psycopg
import pytest

from mlplatform.cli.dev import LOCATIONS_QUERY, celery_worker, mlflow_server, redis_server, running
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.training import TrainingConfig, train
from mlplatform.domain.validation import validate_frame
from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.pipeline.replay import write_batches
from mlplatform.settings import REPO_ROOT, Settings, SettingsError
from mlplatform.stores.registry import Registry
from mlplatform_tests.conftest import ADULT_SPEC
from mlplatform_tests.support import loop
from mlplatform_tests.test_devserver import _processes_with


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    settings = Settings(state_dir=tmp_path / "state", mlflow_backend_store_url=postgres_url, mlflow_ui_url=f"http://127.0.0.1:{_free_port()}")
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


def test_a_materialization_runs_its_steps_on_a_celery_worker(pg_instance_state: Settings, adult_rows: pd.DataFrame, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    broker = f"redis://127.0.0.1:{_free_port()}/0"
    monkeypatch.setenv("MLPLATFORM_CELERY_BROKER_URL", broker)
    settings = pg_instance_state.model_copy(update={"celery_broker_url": broker})
    write_batches(adult_rows.head(600), loop.model().spec, settings.landing_dir, 600)
    worker = celery_worker(settings, name=f"test-{uuid.uuid4().hex[:8]}")
    worker_name = worker.url.split()[0]
    with running(settings, log_dir=tmp_path / "logs", servers=[redis_server(settings), worker]):
        cli = subprocess.Popen([sys.executable, "-m", "mlplatform.cli", "materialize", "--model", "adult", "--select", "raw_events,features"],
                               cwd=REPO_ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = cli.communicate(timeout=300)
    assert cli.returncode == 0, out
    run_id = re.search(r"in run (\S+)", out).group(1)  # type: ignore[union-attr]
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        records = [r for r in instance.all_logs(run_id) if r.dagster_event is not None]
    events = [r.dagster_event for r in records]
    handed = [e.event_specific_data.metadata["Celery worker"].value for e in events  # type: ignore[union-attr]
              if e.event_type_value == "ENGINE_EVENT" and "Celery worker" in (e.event_specific_data.metadata or {})]  # type: ignore[union-attr]
    succeeded = [r for r in records if r.dagster_event.event_type_value == "STEP_SUCCESS"]  # type: ignore[union-attr]
    assert len(succeeded) == 3 and handed == [worker_name] * 3  # raw_events, its check, features: each a task on the worker
    step_pids = {r.dagster_event.pid for r in succeeded}  # type: ignore[union-attr]
    assert None not in step_pids and step_pids.isdisjoint({cli.pid, os.getpid()})
    assert "succeeded" in (tmp_path / "logs" / "celery-worker.log").read_text(encoding="utf-8")


PROD_SERVERS = ("redis", "mlflow", "reports", "dagster-daemon", "dagster-webserver", "celery-worker", "serving")


@pytest.fixture
def prod_state() -> Iterator[Path]:
    """A state folder the `postgres` user can reach (pytest's own temporary folders are private to root)."""
    state = Path(tempfile.mkdtemp(prefix="mlplatform-prod-"))
    state.chmod(0o711)
    yield state / "state"
    shutil.rmtree(state, ignore_errors=True)


def _dev_production(state: Path, extra: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    urls = {f"MLPLATFORM_{key}": f"http://127.0.0.1:{_free_port()}" for key in ("DAGSTER_UI_URL", "MLFLOW_UI_URL", "REPORTS_URL")}
    env = {**os.environ, **urls, "MLPLATFORM_SERVE_PORT": str(_free_port()), "MLPLATFORM_STATE_DIR": str(state),
           "MLPLATFORM_DATASET_SPEC": str(ADULT_SPEC), **extra}
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
        while not any(line.strip().startswith("serving") for line in printed) and time.monotonic() < deadline:
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
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "stopped" in out, out
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
])
def test_prod_fails_at_start_naming_the_setting_or_binary(prod_state: Path, extra: dict[str, str], named: str) -> None:
    proc, _ = _dev_production(prod_state, extra)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and named in out and "secret" not in out, out
