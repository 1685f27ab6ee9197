"""Run history retention on a real instance: which runs go, which stay, and what goes with them on disk."""

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._core.test_utils import create_run_for_test

from mlplatform.domain.keys import POLICY_TRIGGER_TAG, RETRAIN_TAG
from mlplatform.orchestration import retention
from mlplatform.orchestration.launch import definitions
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.orchestration.retention import SCHEDULE_NAME, prune_run_history, run_history_retention_job
from mlplatform.settings import Settings


@dg.asset
def scored() -> int:
    print("a line of captured output")  # captured logs: a folder per run
    return 1


@dg.op
def look(context: dg.OpExecutionContext) -> None:
    context.log_event(dg.AssetObservation(asset_key="watched", metadata={"n": 1}))  # as retraining_trigger observes


@dg.job(name="look")
def observe() -> None:
    look()


@dg.asset(key=["adult", "evaluation_report"])
def judged() -> int:
    return 1


@dg.asset
def nothing_made() -> None:
    raise RuntimeError("fails before anything is made")


@dg.op
def broken() -> None:
    raise RuntimeError("fails")


@dg.job(name="adult_set_champion")
def set_champion() -> None:
    broken()


def _materialize(instance: dg.DagsterInstance, tags: dict[str, str] | None = None) -> str:
    return dg.materialize([scored], instance=instance, tags=tags or {}).run_id


def _files(instance: dg.DagsterInstance, run_id: str) -> list[Path]:
    root = Path(instance.root_directory)
    return [path for path in (root / "history" / "runs" / f"{run_id}.db", root / "storage" / run_id) if path.exists()]


@pytest.fixture(params=["sqlite", "postgres"])
def any_instance(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The state folder's instance on either storage: the embedded SQLite files, or the production profile's PostgreSQL."""
    if request.param == "postgres":
        monkeypatch.setenv("MLPLATFORM_DAGSTER_POSTGRES_URL", request.getfixturevalue("postgres_url"))
    settings: Settings = request.getfixturevalue("state")
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == {"sqlite": "SqliteRunStorage", "postgres": "PostgresRunStorage"}[request.param]
        yield instance


def test_old_runs_go_with_their_files_and_the_history_a_model_rests_on_stays(any_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = any_instance
    monkeypatch.setattr(retention, "BATCH", 2)  # the paging, on a handful of runs
    demo_judged = [dg.materialize([judged], instance=instance).run_id for _ in range(2)]  # untagged, as the demo's first retraining
    retraining = _materialize(instance, {RETRAIN_TAG: "adult"})
    triggered = _materialize(instance, {POLICY_TRIGGER_TAG: "adult"})
    old_scores = [_materialize(instance) for _ in range(3)]
    latest_score = _materialize(instance)
    champion_job = set_champion.execute_in_process(instance=instance, raise_on_error=False).run_id
    failed = dg.materialize([nothing_made], instance=instance, raise_on_error=False).run_id
    observation = observe.execute_in_process(instance=instance).run_id
    unfinished = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED).run_id
    assert all(_files(instance, run_id) for run_id in old_scores), "each run has its SQLite file and its captured logs"

    assert prune_run_history(instance, keep_days=30) == retention.Pruned(0, 0), "nothing is 30 days old yet"
    pruned = prune_run_history(instance, keep_days=30, now=datetime.now(timezone.utc) + timedelta(days=31))
    assert pruned == retention.Pruned(deleted=4, kept=7), pruned
    for run_id in [*old_scores, failed]:
        assert instance.get_run_by_id(run_id) is None and not _files(instance, run_id), run_id
    for run_id in (latest_score, retraining, triggered, champion_job, observation, unfinished, *demo_judged):
        assert instance.get_run_by_id(run_id) is not None, run_id
    latest = instance.fetch_materializations(dg.AssetKey("scored"), limit=10).records
    assert [r.run_id for r in latest] == [latest_score, triggered, retraining], "the latest and the model's own runs stay"
    assert "deleted 4 finished runs older than 30 days; kept 7" in pruned.summary(30)
    assert prune_run_history(instance, keep_days=30, now=datetime.now(timezone.utc) + timedelta(days=31)) == retention.Pruned(0, 7)
    more = [_materialize(instance) for _ in range(2)] + [_materialize(instance)]  # the last one holds the latest materialization now
    out_of_time = prune_run_history(instance, keep_days=30, now=datetime.now(timezone.utc) + timedelta(days=31), budget_seconds=-1)
    assert out_of_time == retention.Pruned(0, 7, left=3) and "3 more are left for the next pass" in out_of_time.summary(30)
    assert prune_run_history(instance, keep_days=30, now=datetime.now(timezone.utc) + timedelta(days=31)).deleted == 3
    assert [instance.get_run_by_id(run_id) is None for run_id in (latest_score, *more)] == [True, True, True, False]


def test_the_daily_job_runs_in_the_code_location_with_its_settings(state: Settings, instance: dg.DagsterInstance,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = definitions().resolve_schedule_def(SCHEDULE_NAME)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.cron_schedule == "17 3 * * *"
    _materialize(instance)
    monkeypatch.setenv("MLPLATFORM_RUN_HISTORY_KEEP_DAYS", "1")
    result = run_history_retention_job.execute_in_process(instance=instance, resources={"platform": PlatformResource()})
    [output] = [e for e in result.all_events if e.is_successful_output]
    assert result.success and output.event_specific_data.metadata["keep_days"].value == 1  # type: ignore[union-attr]
    assert len(instance.get_runs()) == 2, "a run a second old is kept"


def test_schedule_ticks_are_purged_after_the_run_history_days(instance: dg.DagsterInstance) -> None:
    """The instance Dagster loads from the state folder's dagster.yaml: live_quality ticks 288 times a day per model."""
    retention_days = instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
    assert {retention_days[status] for status in (TickStatus.SKIPPED, TickStatus.SUCCESS, TickStatus.FAILURE)} == {14}
