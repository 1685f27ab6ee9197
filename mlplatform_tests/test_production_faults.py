"""A PostgreSQL outage during a retraining run, on the production event log: the run retries within the budget then
fails, naming the setting, with the landed file kept for the next run (not rejected as the file's fault), nothing
registered and the champion as it was; once PostgreSQL is back the next run ingests the file and retrains."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pytest

from mlplatform.cli.postgres import PostgresCluster
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import validate_frame
from mlplatform.pipeline.replay import write_batches
from mlplatform.settings import Settings
from mlplatform_tests.support import loop

FIRST, LANDED = 1500, 1200


@pytest.fixture
def pg_log_state(postgres_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """The `state` fixture with the event log in a fresh PostgreSQL database and the smallest retry budget."""
    monkeypatch.setenv("MLPLATFORM_EVENT_LOG_URL", postgres_url)
    monkeypatch.setenv("MLPLATFORM_EXTERNAL_RETRY_BUDGET_SECONDS", "10")
    yield request.getfixturevalue("state")


def test_postgres_down_during_a_run_fails_it_keeps_file_and_champion_and_the_next_run_succeeds(
        pg_log_state: Settings, instance: dg.DagsterInstance, postgres_cluster: PostgresCluster, adult_rows: pd.DataFrame,
        adult_spec: DatasetSpec) -> None:
    model = loop.model()
    model.event_log.append(validate_frame(adult_rows.head(FIRST), adult_spec, generated_id_prefix="f", generated_time_start_us=0).events, "test")
    loop.materialize(instance, loop.RETRAIN, raise_on_error=True)
    champion = model.registry.champion_record()
    assert champion is not None
    [landed] = write_batches(adult_rows.iloc[FIRST:FIRST + LANDED], adult_spec, pg_log_state.landing_dir, LANDED)

    postgres_cluster.pause()
    try:
        failed = loop.materialize(instance, loop.LOOP)
    finally:
        postgres_cluster.resume()

    assert not failed.success
    retries = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == pg_log_state.retry_budget.step_retries and {e.step_key for e in retries} == {f"{loop.names().model}__raw_events"}
    cause = " | ".join(e.event_specific_data.error.to_string() for e in failed.all_events if e.is_step_failure)  # type: ignore[union-attr]
    assert "(MLPLATFORM_EVENT_LOG_URL, postgresql://postgres:***@" in cause and postgres_cluster.password not in cause, cause
    assert landed.exists(), "the file waits in the landing folder: the outage is not the file's fault"
    assert model.registry.champion_record() == champion and len(model.registry.versions()) == 1

    loop.materialize(instance, loop.LOOP, raise_on_error=True)
    assert not landed.exists() and model.event_log.counts().total == FIRST + LANDED
    assert len(model.registry.versions()) == 2
