"""The production profile on real engines: the Dagster instance on PostgreSQL, the MLflow server on PostgreSQL,
steps on Celery workers with Redis, and `mlplatform dev --profile production` bringing it all up."""

import socket
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest

from mlplatform.cli.dev import mlflow_server, running
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.training import TrainingConfig, train
from mlplatform.domain.validation import validate_frame
from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.pipeline.replay import write_batches
from mlplatform.settings import Settings, SettingsError
from mlplatform.stores.registry import Registry
from mlplatform_tests.support import loop


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
