"""The retraining and drift sensors evaluated against a real Dagster instance, event log and MLflow store."""

import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlplatform.cli.status import collect_status, render_status
from mlplatform.domain.keys import (AGAIN_BASE_TAG, AGAIN_TAG, CHAMPION_MOVING, KEPT_BY_PERSON, CHAMPION_VERSION, DRIFT_REPORT_TAG, DRIFT_SHARE_TAG, LABEL_WATERMARK_TAG, LAUNCHED_BY_TAG, NEW_LABELLED_TAG, POLICY_TRIGGER_TAG,
                                   QUALITY_TAG, REALIZED_BAND_TAG, REALIZED_EVENTS_TAG, REALIZED_METRIC_TAG, REALIZED_REFERENCE_TAG, REALIZED_VALUE_TAG,
                                   REASON_TAG, RETRAIN_TAG, RETRY_ON_FAILURE_TAG, RUN_KEY_TAG, TRIGGER_REASON, TRIGGERED_AT_TAG,
                                   WILL_RETRY_TAG)
from mlplatform.domain.policy import DRIFT, NEW_OBSERVATIONS, QUALITY_DROP, Cursor, DriftBar, PolicyConfig
from mlplatform.domain.spec import DatasetSpec
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.launch import launch, launch_drift_run
from mlplatform.orchestration.names import DRIFT_REPORT, EVALUATION_REPORT, LIVE_QUALITY, ModelNames
from mlplatform.orchestration.sensors import LOST_SECONDS, DriftRequest, drift_request
from mlplatform.orchestration.trigger import AGAIN_MAX_ATTEMPTS, AGAIN_SECONDS, Verdict, decisions_by_run, evaluate, failed_trigger, policy_cursor, policy_record, trigger_runs
from mlplatform.pipeline.champion import ChampionError, ChampionRequest, change_champion
from mlplatform.pipeline.replay import DriftScenario, inject_drift
from mlplatform.root import platform as root_platform
from mlplatform.settings import Settings
from mlplatform.stores.registry import ChampionChange, Registry
from mlplatform_tests.support import loop
from mlplatform_tests.monitoring_support import CHAMPION_ROWS, Platform, trained_platform

ADULT = ModelNames("adult")
SENSOR_NAME, DRIFT_SENSOR_NAME = ADULT.retraining_sensor, ADULT.drift_sensor

EVERY_N = 1000
MIN_FOR_DRIFT = 200
DRIFT_EVERY = 500


def _watermark(platform: Platform) -> int:
    return collect_status(platform.model)["events"]["label_watermark"]


def _cursor(last_trigger_seq: int, last_trigger_time: float | None = None, last_drift_report: str | None = None) -> str:
    """A stored cursor, by default newer than every trigger recorded on a run (the champion trained by hand records one)."""
    return Cursor(last_trigger_seq, time.time() if last_trigger_time is None else last_trigger_time, last_drift_report).to_json()


def test_without_a_champion_both_sensors_wait(state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec) -> None:
    platform = Platform(root_platform().model("adult"), instance, pd.DataFrame())
    retraining = platform.tick(SENSOR_NAME, None)
    assert not retraining.run_requests and "no champion yet" in (retraining.skip_message or "")
    drift = platform.tick(DRIFT_SENSOR_NAME, None)
    assert not drift.run_requests and "no champion yet" in (drift.skip_message or "")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> Iterator[Platform]:
    """A champion v1 that no challenger can beat (margin 1.0), so a lost cursor could only be rebuilt from run tags."""
    env = {
        "MLPLATFORM_RETRAIN_EVERY_N": str(EVERY_N),
        "MLPLATFORM_MIN_NEW_LABELLED_FOR_DRIFT": str(MIN_FOR_DRIFT),
        "MLPLATFORM_RETRAIN_COOLDOWN_SECONDS": "0",
        "MLPLATFORM_PROMOTION_MARGIN": "1.0",
        "MLPLATFORM_DRIFT_EVERY_N_EVENTS": str(DRIFT_EVERY),
    }
    with trained_platform(tmp_path_factory.mktemp("sensor") / "state", adult_spec, adult_rows, **env) as platform:
        yield platform


def test_drift_sensor_requests_a_report_every_m_events(platform: Platform) -> None:
    first = platform.tick(DRIFT_SENSOR_NAME, None)
    total = CHAMPION_ROWS
    assert [r.run_key for r in first.run_requests or []] == [f"drift-report-v1-{total}"] and DriftRequest.from_json(first.cursor).events == total  # type: ignore[union-attr]
    assert not platform.tick(DRIFT_SENSOR_NAME, first.cursor).run_requests
    platform.replay(platform.next_rows(DRIFT_EVERY - 1))
    waiting = platform.tick(DRIFT_SENSOR_NAME, first.cursor)
    assert not waiting.run_requests and f"{DRIFT_EVERY - 1} new events" in (waiting.skip_message or "")
    platform.replay(platform.next_rows(1))
    due = platform.tick(DRIFT_SENSOR_NAME, first.cursor)
    assert [r.run_key for r in due.run_requests or []] == [f"drift-report-v1-{total + DRIFT_EVERY}"]
    corrupt = platform.tick(DRIFT_SENSOR_NAME, "not-a-number")
    assert len(corrupt.run_requests or []) == 1 and DriftRequest.from_json(corrupt.cursor).events == total + DRIFT_EVERY  # type: ignore[union-attr]
    assert not platform.tick(DRIFT_SENSOR_NAME, str(total + DRIFT_EVERY)).run_requests, "the earlier cursor format, the bare total"

    # One at a time: while a report it requested has not ended, no other (a large landing crossed M events tick after tick).
    @dg.job(name="drift_run")
    def drift_run() -> None:
        pass

    unfinished = platform.instance.create_run_for_job(drift_run, tags={LAUNCHED_BY_TAG: DRIFT_SENSOR_NAME})
    held = platform.tick(DRIFT_SENSOR_NAME, first.cursor)
    assert not held.run_requests and f"waiting for its run {unfinished.run_id[:8]} (not_started) to end" in (held.skip_message or "")
    platform.instance.report_run_canceled(unfinished)
    assert len(platform.tick(DRIFT_SENSOR_NAME, first.cursor).run_requests or []) == 1


def test_a_drift_report_request_whose_run_failed_is_made_again_with_a_back_off(platform: Platform) -> None:
    """The dev probe: a drift report run launched while a defs.yaml was broken failed, and the next report waited for
    another drift_every_n_events events. Made again after 60 s, doubling, and after LOST_SECONDS when its run never came;
    done once its run made the report (a later step may fail), was canceled by a person or succeeded. Runs of another
    model's sensor with the same run key count for nothing."""
    from dagster._core.test_utils import create_run_for_test

    @dg.op
    def fails(context: dg.OpExecutionContext, report: bool) -> None:
        if report:
            context.log_event(dg.AssetMaterialization(ADULT.asset(DRIFT_REPORT), metadata={"skipped": True, "skip_reason": "a test's report"}))
        raise RuntimeError("the code location did not load" if not report else "drift_dashboard: the workspace is not writable")

    @dg.job(name="drift_run")
    def drift_run() -> None:
        fails()

    def end_run(request: dg.RunRequest, report: bool = False) -> float:
        drift_run.execute_in_process(instance=platform.instance, raise_on_error=False, run_config={"ops": {"fails": {"inputs": {"report": report}}}},
                                     tags={RUN_KEY_TAG: request.run_key or "", RETRY_ON_FAILURE_TAG: "false", **request.tags})  # its run retries spent
        return time.time()

    def request(cursor: str | None, now: float) -> dg.SensorResult:
        return drift_request(platform.model, cursor, ADULT, platform.instance, now=now)

    first = request(None, time.time())
    [made] = first.run_requests or []
    create_run_for_test(platform.instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.FAILURE,
                        tags={RUN_KEY_TAG: made.run_key or "", LAUNCHED_BY_TAG: ModelNames("bike_sharing").drift_sensor})
    pending = request(first.cursor, time.time())
    assert not pending.run_requests and "0 new events since the last drift report request; " in str(pending.skip_reason), "bike_sharing's run is not ours"
    ended = end_run(made)
    waiting = request(first.cursor, ended)
    assert not waiting.run_requests and re.search(rf"ended \(failure\) without a report: requesting it again in (59|{AGAIN_SECONDS}) s", str(waiting.skip_reason)), waiting.skip_reason
    again = request(first.cursor, ended + AGAIN_SECONDS + 1)
    [retry] = again.run_requests or []
    assert retry.run_key == f"{made.run_key}-again1"
    ended = end_run(retry)
    assert not request(again.cursor, ended + AGAIN_SECONDS + 1).run_requests, "the back-off doubled"
    second = request(again.cursor, ended + 2 * AGAIN_SECONDS + 1)
    assert [r.run_key for r in second.run_requests or []] == [f"{made.run_key}-again2"]
    assert not request(second.cursor, time.time()).run_requests, "its run is not launched yet"
    lost = request(second.cursor, ended + 2 * AGAIN_SECONDS + LOST_SECONDS + 2)  # never launched, or deleted by run_history_retention
    [third] = lost.run_requests or []
    assert third.run_key == f"{made.run_key}-again3"
    ended = end_run(third, report=True)
    assert not request(lost.cursor, ended + AGAIN_SECONDS * 100).run_requests, "a run that made its report and failed later is done"
    for status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS):
        cursor = DriftRequest(DriftRequest.from_json(lost.cursor).events, 1, 7, time.time()).to_json()  # type: ignore[union-attr]
        create_run_for_test(platform.instance, job_name="__ASSET_JOB", status=status, tags={RUN_KEY_TAG: DriftRequest.from_json(cursor).run_key,  # type: ignore[union-attr]
                                                                                            LAUNCHED_BY_TAG: DRIFT_SENSOR_NAME})
        assert not request(cursor, time.time() + AGAIN_SECONDS * 100).run_requests, f"a {status.value.lower()} run ends its request"


def test_below_n_no_run_at_n_exactly_one(platform: Platform) -> None:
    start = _watermark(platform)
    cursor = _cursor(start)
    platform.replay(platform.next_rows(EVERY_N - 1))
    below = platform.tick(SENSOR_NAME, cursor)
    assert not below.run_requests and below.skip_message and below.skip_message.startswith(f"{EVERY_N - 1} new labelled events")
    platform.replay(platform.next_rows(1))
    at_n = platform.tick(SENSOR_NAME, cursor)
    assert len(at_n.run_requests or []) == 1
    request = (at_n.run_requests or [])[0]
    assert request.run_key == f"{NEW_OBSERVATIONS}-{start + EVERY_N}"
    assert request.tags[REASON_TAG] == NEW_OBSERVATIONS and request.tags[NEW_LABELLED_TAG] == str(EVERY_N)
    again = platform.tick(SENSOR_NAME, at_n.cursor)
    assert not again.run_requests, "the same observations never trigger twice"


def test_a_terminated_retraining_says_it_used_up_its_trigger(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator probe: a sensor retraining terminated from the UI before it decided used up its trigger (as a person's
    cancel of a drift report request does), and the sensor then waited for N more labels saying only "0 new labelled
    events since the last trigger". The skip now names the canceled run and how to retrain on what it saw."""
    from dagster._core.test_utils import create_run_for_test

    monkeypatch.setenv("MLPLATFORM_RETRAIN_COOLDOWN_SECONDS", "0")
    start = _watermark(platform)
    platform.replay(platform.next_rows(EVERY_N))
    due = platform.tick(SENSOR_NAME, _cursor(start, last_trigger_time=time.time() - 3600))
    [request] = due.run_requests or []
    run = create_run_for_test(platform.instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.CANCELED, tags={RUN_KEY_TAG: request.run_key or "", **request.tags})
    skipped = platform.tick(SENSOR_NAME, due.cursor).skip_message or ""
    assert skipped.startswith("0 new labelled events since the last trigger") and (f"; the latest trigger's run {run.run_id[:8]} (new_observations) was canceled before it decided, which uses up what it saw: "
                "`mlplatform materialize --model adult` (or the adult_retrain job) retrains on it now") in skipped, skipped
    platform.instance.delete_run(run.run_id)

    @dg.op
    def decides(context: dg.OpExecutionContext) -> None:
        context.log_event(dg.AssetMaterialization(ADULT.asset(EVALUATION_REPORT), metadata={"decision": "awaiting_shadow"}))

    @dg.job(name="decided_run")
    def decided_run() -> None:
        decides()

    decided = decided_run.execute_in_process(instance=platform.instance, tags={RUN_KEY_TAG: request.run_key or "", **request.tags}).dagster_run
    platform.instance.report_run_canceled(decided)  # terminated after its decision, as estimated_performance ran
    assert platform.instance.get_run_by_id(decided.run_id).status == dg.DagsterRunStatus.CANCELED  # type: ignore[union-attr]
    assert "was canceled" not in (platform.tick(SENSOR_NAME, due.cursor).skip_message or ""), "it decided: awaiting its shadow evidence"
    platform.instance.delete_run(decided.run_id)
    failed = create_run_for_test(platform.instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.FAILURE, tags={RUN_KEY_TAG: request.run_key or "", **request.tags})
    assert "was canceled" not in (platform.tick(SENSOR_NAME, due.cursor).skip_message or ""), "a failed run's retries are Dagster's"
    platform.instance.delete_run(failed.run_id)


@dg.op
def _fails(context: dg.OpExecutionContext, decide: bool) -> None:
    if decide:
        context.log_event(dg.AssetMaterialization(ADULT.asset(EVALUATION_REPORT), metadata={"decision": "rejected"}))
    raise RuntimeError("MLflow is unreachable" if not decide else "estimated_performance: the event log is unreachable")


@dg.job(name="failed_retraining")
def _failed_retraining() -> None:
    _fails()


def _fail(platform: Platform, request: dg.RunRequest, decide: bool = False, **tags: str) -> float:
    """A run of `request` that fails, its run retries spent unless `tags` say otherwise; with `decide`, after its
    evaluation_report rejected. Returns when it ended."""
    _failed_retraining.execute_in_process(instance=platform.instance, raise_on_error=False, run_config={"ops": {"_fails": {"inputs": {"decide": decide}}}},
                                          tags={RUN_KEY_TAG: request.run_key or "", **request.tags, "dagster/max_retries": "0", **tags})
    return time.time()


def test_a_trigger_whose_run_failed_before_deciding_is_decided_on_again_with_a_back_off(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review: a sensor retraining whose run failed with its run retries spent (MLflow down longer than they last)
    used up its trigger, and nothing retrained until N more labels came. The policy now decides on what that trigger saw
    again 60 s after the run ended, doubling with each such failure, with a run key Dagster has not run yet; a run left
    failed on purpose (what retrying cannot mend) or one whose evaluation decided used its trigger up."""
    monkeypatch.setenv("MLPLATFORM_RETRAIN_COOLDOWN_SECONDS", "0")

    def fail(request: dg.RunRequest, decide: bool = False, **tags: str) -> float:
        return _fail(platform, request, decide, **tags)

    def verdict(cursor: str | None, now: float) -> Verdict:
        return evaluate(platform.instance, platform.model, ADULT, platform.model.registry.champion_record(), Cursor.from_json(cursor)[0], now=now)

    start = _watermark(platform)
    platform.replay(platform.next_rows(EVERY_N))
    due = platform.tick(SENSOR_NAME, _cursor(start, last_trigger_time=time.time() - 3600))
    [request] = due.run_requests or []
    record = policy_record(platform.instance, ADULT, trigger_runs(platform.instance, "adult"))
    fail(request, **{"dagster/max_retries": "1"})  # the run, then Dagster's retry of it, with its tags
    assert platform.instance.get_runs(limit=1)[0].tags[WILL_RETRY_TAG] == "true"
    ended = fail(request)
    assert platform.instance.get_runs(limit=1)[0].tags[WILL_RETRY_TAG] == "false"
    waiting = platform.tick(SENSOR_NAME, due.cursor)
    assert not waiting.run_requests and re.search(r"the latest trigger's run \w{8} \(new_observations\) failed before it decided: the policy decides on what it saw "
                                                 rf"again in (5[0-9]|{AGAIN_SECONDS}) s \(`mlplatform materialize --model adult` retrains now\)", waiting.skip_message or ""), waiting.skip_message
    first = verdict(due.cursor, ended + AGAIN_SECONDS + 1)
    assert first.trigger is not None and first.trigger.run_key == f"{request.run_key}-again1" and first.tags[AGAIN_TAG] == "1"
    assert first.trigger.label_watermark == int(request.tags[LABEL_WATERMARK_TAG]) == start + EVERY_N
    assert re.match(r"retrain: new_observations \(\d+ new labelled events\); again, after the latest trigger's run \w{8} \(new_observations\) failed", first.why), first.why
    assert policy_record(platform.instance, ADULT, trigger_runs(platform.instance, "adult")) == record, "a trigger that failed before deciding is no outcome"
    again = dg.RunRequest(run_key=first.trigger.run_key, tags={**first.tags, LAUNCHED_BY_TAG: SENSOR_NAME})
    ended = fail(again)
    assert verdict(due.cursor, ended + AGAIN_SECONDS + 1).trigger is None, "the back-off doubled"
    second = verdict(due.cursor, ended + 2 * AGAIN_SECONDS + 1)
    assert second.trigger is not None and second.trigger.run_key == f"{request.run_key}-again2"
    assert (second.trigger.new_labelled, second.tags[AGAIN_BASE_TAG]) == (first.trigger.new_labelled, first.tags[AGAIN_BASE_TAG]), "decided on the cursor before the first failure"
    for i, used_up in enumerate(({"decide": True}, {RETRY_ON_FAILURE_TAG: "false"}, {AGAIN_TAG: str(AGAIN_MAX_ATTEMPTS - 1)})):
        later = dg.RunRequest(run_key=f"{second.trigger.run_key}-{i}", tags={**second.tags, LAUNCHED_BY_TAG: SENSOR_NAME, TRIGGERED_AT_TAG: f"{float(second.tags[TRIGGERED_AT_TAG]) + 1 + i:.3f}"})
        ended = fail(later, **used_up)  # type: ignore[arg-type]
        left = verdict(due.cursor, ended + AGAIN_SECONDS * 1000)
        assert left.trigger is None and left.why.startswith("0 new labelled events since the last trigger"), (used_up, left.why)
    assert (f"failed before it decided, the {AGAIN_MAX_ATTEMPTS}th time in a row, which uses up what it saw: `mlplatform materialize --model adult` "
            "(or the adult_retrain job) retrains on it now") in left.why, left.why
    for run in platform.instance.get_runs(filters=dg.RunsFilter(job_name="failed_retraining")):
        platform.instance.delete_run(run.run_id)


def test_a_chain_of_failed_triggers_leaves_the_decisions_before_it_in_the_record(platform: Platform) -> None:
    """The review: the runs read back for the record were 10, so five triggers in a row that failed before deciding, each
    with its run retry, pushed every decision out of it, and the drift bar fell to its minimum. The runs read back
    cover the record and the longest chain of failures the policy decides on again, with their run retries."""
    base = policy_cursor(trigger_runs(platform.instance, "adult"), None).last_trigger_time + 1  # newer than the module's earlier triggers

    def request(i: int) -> dg.RunRequest:
        return dg.RunRequest(run_key=f"chain-{i}", tags={POLICY_TRIGGER_TAG: "adult", REASON_TAG: DRIFT, LAUNCHED_BY_TAG: SENSOR_NAME,
                                                         LABEL_WATERMARK_TAG: str(_watermark(platform)), TRIGGERED_AT_TAG: f"{base + i:.3f}"})

    _fail(platform, request(0), decide=True)
    assert [o.promoted for o in policy_record(platform.instance, ADULT, trigger_runs(platform.instance, "adult"))][:1] == [False]
    for i in range(1, AGAIN_MAX_ATTEMPTS):
        _fail(platform, request(i), **{"dagster/max_retries": "1"})  # the run, then Dagster's retry of it
        _fail(platform, request(i))
    record = policy_record(platform.instance, ADULT, trigger_runs(platform.instance, "adult"))
    assert [(o.reason, o.promoted) for o in record][:1] == [(DRIFT, False)], record
    for run in platform.instance.get_runs(filters=dg.RunsFilter(job_name="failed_retraining")):
        platform.instance.delete_run(run.run_id)


def test_an_unreadable_again_base_counts_from_the_runs_before_it(platform: Platform) -> None:
    """The review: a trigger decided on again whose recorded base cursor (AGAIN_BASE_TAG) was unreadable failed again and
    was decided on from an empty cursor, every label of the log counted as new; it counts from the runs before the
    chain's first failure (the diff review: not from that failure's own trigger)."""
    before = policy_cursor(trigger_runs(platform.instance, "adult"), None)
    assert before != Cursor(), "the module's earlier triggers record a cursor"

    def request(i: int, **again: str) -> dg.RunRequest:
        return dg.RunRequest(run_key=f"unreadable-base-{i}", tags={POLICY_TRIGGER_TAG: "adult", REASON_TAG: NEW_OBSERVATIONS, LAUNCHED_BY_TAG: SENSOR_NAME,
                                                                   LABEL_WATERMARK_TAG: str(_watermark(platform) + i),
                                                                   TRIGGERED_AT_TAG: f"{before.last_trigger_time + i:.3f}", **again})

    _fail(platform, request(1))  # the chain's first failure
    # A person's retraining that decided between the failure and its retry (queued before the retry began): kept.
    _fail(platform, dg.RunRequest(run_key="by-hand", tags={**request(1).tags, LABEL_WATERMARK_TAG: str(_watermark(platform) + 5),
                                                          TRIGGERED_AT_TAG: f"{before.last_trigger_time + 1.5:.3f}"}), decide=True)
    before = policy_cursor(trigger_runs(platform.instance, "adult")[:1], None)
    for again in ({AGAIN_TAG: "1", AGAIN_BASE_TAG: '{"version": 1, "last_trigger_seq": '}, {AGAIN_TAG: "1"}):
        _fail(platform, request(2, **again))
        failed = failed_trigger(platform.instance, trigger_runs(platform.instance, "adult"), decisions_by_run(platform.instance, ADULT))
        assert failed is not None and (failed.attempt, failed.base) == (2, before), (again, failed)
        platform.instance.delete_run(platform.instance.get_runs(limit=1)[0].run_id)
    _fail(platform, request(2, **{AGAIN_BASE_TAG: before.to_json()}))  # a base without the attempt: not read as one
    failed = failed_trigger(platform.instance, trigger_runs(platform.instance, "adult"), decisions_by_run(platform.instance, ADULT))
    assert failed is not None and failed.attempt == 1 and failed.base == before, failed
    for run in platform.instance.get_runs(filters=dg.RunsFilter(job_name="failed_retraining")):
        platform.instance.delete_run(run.run_id)


def test_cooldown_holds_against_thrashing(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    recent = _cursor(_watermark(platform) - EVERY_N, last_trigger_time=time.time() - 1)
    monkeypatch.setenv("MLPLATFORM_RETRAIN_COOLDOWN_SECONDS", "3600")
    held = platform.tick(SENSOR_NAME, recent)
    assert not held.run_requests and "cool-down" in (held.skip_message or "")
    assert held.cursor == recent, "a held tick does not move the cursor"
    monkeypatch.setenv("MLPLATFORM_RETRAIN_COOLDOWN_SECONDS", "0.5")
    assert len(platform.tick(SENSOR_NAME, recent).run_requests or []) == 1


def test_no_trigger_while_a_retraining_of_the_model_is_unfinished(platform: Platform) -> None:
    due = _cursor(_watermark(platform) - EVERY_N)
    assert len(platform.tick(SENSOR_NAME, due).run_requests or []) == 1

    @dg.job(name="adult_retrain")
    def retraining() -> None:
        pass

    unfinished = platform.instance.create_run_for_job(retraining, tags={RETRAIN_TAG: "adult"})
    other_model = platform.instance.create_run_for_job(retraining, tags={RETRAIN_TAG: "bike_sharing"})
    held = platform.tick(SENSOR_NAME, due)
    assert not held.run_requests and f"retraining run {unfinished.run_id[:8]} is unfinished" in (held.skip_message or "")
    assert held.cursor == due, "a held tick does not move the cursor"
    platform.instance.report_run_canceled(unfinished)
    assert len(platform.tick(SENSOR_NAME, due).run_requests or []) == 1, f"another model's retraining ({other_model.run_id[:8]}) holds nothing"
    platform.instance.report_run_canceled(other_model)


def test_drift_triggers_one_run_with_the_reason_in_its_tags(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = DriftScenario(shift_numeric={"age": 1.5, "hours-per-week": 1.5, "education-num": 1.0}, category_mix={"workclass": "Self-emp-inc", "occupation": "Sales", "marital-status": "Never-married", "relationship": "Own-child"})
    drifted = inject_drift(platform.next_rows(300), platform.spec, scenario, reference=platform.rows.iloc[:CHAMPION_ROWS])
    platform.replay(drifted)
    monkeypatch.setenv("MLPLATFORM_DRIFT_CURRENT_HOURS", str(300 * 60 / 3600))
    platform.materialize("drift_report")
    meta = latest_metadata(platform.instance, ADULT.asset(DRIFT_REPORT)) or {}
    assert meta["dataset_drift"] is True
    report_id = str(platform.instance.fetch_materializations(ADULT.asset(DRIFT_REPORT), limit=1).records[0].storage_id)
    cursor = _cursor(_watermark(platform) - 300)
    result = platform.tick(SENSOR_NAME, cursor)
    assert len(result.run_requests or []) == 1
    tags = (result.run_requests or [])[0].tags
    assert (result.run_requests or [])[0].run_key == f"{DRIFT}-{report_id}"
    assert tags[REASON_TAG] == DRIFT and tags[NEW_LABELLED_TAG] == "300" and tags[DRIFT_REPORT_TAG] == report_id
    assert float(tags[DRIFT_SHARE_TAG]) == pytest.approx(float(str(meta["drift_share"])), abs=1e-4)
    again = platform.tick(SENSOR_NAME, result.cursor)
    assert not again.run_requests and "is from before the latest retraining" in (again.skip_message or "")


def test_restart_keeps_the_cursor_and_a_lost_or_corrupt_one_recovers_without_duplicates(platform: Platform) -> None:
    platform.replay(platform.next_rows(EVERY_N))
    requested = platform.tick(SENSOR_NAME, _cursor(_watermark(platform) - EVERY_N))
    assert len(requested.run_requests or []) == 1
    request = (requested.run_requests or [])[0]
    run = launch(platform.instance, "adult", request)
    assert collect_status(platform.model)["champion"] == 1, "margin 1.0: the challenger cannot win, the champion's cut-off stays put"
    launched = platform.instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: SENSOR_NAME}), limit=1)
    assert launched and launched[0].run_id == run.run_id
    for stored in [requested.cursor, None, "{not json", '{"last_seq": 5}', "[1, 2]", '{"version": 1, "last_trigger_seq": "x"}', '{"version": 0}']:
        tick = platform.tick(SENSOR_NAME, stored)
        assert not tick.run_requests, f"cursor {stored!r} led to a duplicate run"
        assert tick.skip_message and tick.skip_message.startswith("0 new labelled events"), tick.skip_message
    status = collect_status(platform.model, with_dagster=True)
    [trained] = [v for v in status["versions"] if v["dagster_run_id"] == run.run_id]
    assert status["sensor_runs"][0]["run_id"] == run.run_id and status["sensor_runs"][0]["reason"] == NEW_OBSERVATIONS
    assert (status["sensor_runs"][0]["version"], status["sensor_runs"][0]["decision"]) == (trained["version"], "rejected"), "what became of it, beside why"
    assert 0 < status["sensor_runs"][0]["seconds"] < 600
    assert f"reason={NEW_OBSERVATIONS} new_labelled={EVERY_N}: v{trained['version']} rejected" in render_status(status)


def test_a_hand_moved_or_pinned_champion_is_what_sensors_status_and_evaluation_follow(platform: Platform, monkeypatch: pytest.MonkeyPatch,
                                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The registry alias is the one truth: a move in the MLflow UI, a CLI rollback with a pin, an unpin."""
    registry = platform.model.registry
    if len(registry.versions()) < 2:  # run alone: make the version to roll to (margin 1.0 keeps v1 champion)
        platform.materialize("features", "trained_model", "evaluation_report")
    registry.client.set_registered_model_alias(registry.name, "champion", "2")  # what the MLflow UI does
    cursor = _cursor(_watermark(platform))
    moved = platform.tick(SENSOR_NAME, cursor)
    assert not moved.run_requests
    change = registry.timeline()[-1]
    assert change.version == 2 and "outside mlplatform" in change.reason and change.by == SENSOR_NAME
    assert collect_status(platform.model)["champion"] == 2
    drift = platform.tick(DRIFT_SENSOR_NAME, None)
    assert [r.run_key for r in drift.run_requests or []] == [f"drift-report-v2-{platform.model.event_log.counts().total}"]

    from mlplatform.cli import main

    assert main(["champion", "set", "--model", "adult", "--version", "1", "--reason", "rollback after incident 42"]) == 0
    said = capsys.readouterr().out
    assert "champion: v2 → v1; pinned: the retraining loop leaves it in place until `champion unpin`" in said
    assert "champion v1, pinned (rollback after incident 42)" in said
    record = registry.champion_record()
    assert record is not None and (record.version, record.pinned) == (1, True)
    for action in ("show", "unpin"):  # `show --version 2` showed the champion, ignoring the version asked for
        assert main(["champion", action, "--model", "adult", "--version", "2"]) == 2
        assert f"champion {action}: --version and --no-pin go with `champion set`" in capsys.readouterr().err
    assert main(["--model", "adult", "champion", "set", "--version", "99", "--reason", "typo"]) == 2
    assert "has no version 99" in capsys.readouterr().err and registry.champion_record() == record
    flipped = platform.spec.model_copy(update={"positive_class": platform.spec.negative_class})  # the spec edited since v2 was trained
    with pytest.raises(ChampionError, match=re.escape("v2 does not fit dataset spec 'adult' as it is now: the model's probability is of class '>50K'")):
        change_champion(registry, flipped, ChampionRequest("roll forward", 2, pin=True), by="test")
    assert registry.champion_record() == record, "the alias named, and pinned, a version serving could not load"
    artifacts = Path(urllib.parse.urlparse(registry.client.get_model_version_download_uri(registry.name, "2")).path)
    (artifacts / "MLmodel").rename(artifacts / "MLmodel.aside")  # its artifacts lost or half-copied
    try:
        assert main(["champion", "set", "--model", "adult", "--version", "2", "--reason", "roll forward"]) == 2
        assert "v2 cannot be loaded (" in capsys.readouterr().err and registry.champion_record() == record
    finally:
        (artifacts / "MLmodel.aside").rename(artifacts / "MLmodel")
    assert main(["champion", "set", "--model", "adult", "--version", "2", "--reason", "  "]) == 2
    assert registry.champion_record() == record

    platform.replay(platform.next_rows(EVERY_N))
    pinned = platform.tick(SENSOR_NAME, _cursor(_watermark(platform) - EVERY_N))
    assert not pinned.run_requests and "pinned (rollback after incident 42)" in (pinned.skip_message or "")
    monkeypatch.setenv("MLPLATFORM_PROMOTION_MARGIN", "0")
    platform.materialize("features", "trained_model", "evaluation_report")
    evaluation = latest_metadata(platform.instance, ADULT.asset("evaluation_report")) or {}
    assert evaluation["decision"] == "rejected" and "pinned" in str(evaluation["reason"]) and evaluation["champion_version"] == 1
    assert registry.champion_record() == record
    # Kept out by the pin if it won on the scores (then no verdict the drift bar learns from), else rejected on its merits.
    judged = platform.instance.get_runs(limit=1)[0]
    improvement = float(str(evaluation["improvement"]))
    won = improvement > 0 and improvement >= float(str(evaluation["margin"]))
    assert evaluation[KEPT_BY_PERSON] is won, evaluation["reason"]
    assert [o.promoted for o in policy_record(platform.instance, ADULT, [_as_drift_retraining(judged)])] == [None if won else False]

    assert main(["champion", "unpin", "--model", "adult", "--reason", "incident closed"]) == 0
    assert "champion: v1 unpinned: the retraining loop may replace it" in capsys.readouterr().out
    unpinned = platform.tick(SENSOR_NAME, _cursor(_watermark(platform) - EVERY_N))
    assert len(unpinned.run_requests or []) == 1
    timeline = [(c.version, c.pinned, c.reason) for c in registry.timeline()]
    assert timeline[-3:] == [(2, False, "alias moved outside mlplatform (MLflow UI or API)"), (1, True, "rollback after incident 42"),
                             (1, False, "unpinned: incident closed")]
    assert main(["champion", "unpin", "--model", "adult", "--reason", "twice"]) == 0  # asked for what is: said, nothing recorded
    assert "champion: nothing to unpin: v1 is not pinned" in capsys.readouterr().out
    assert main(["champion", "set", "--model", "adult", "--version", "1", "--no-pin", "--reason", "again"]) == 0
    assert "champion: v1 already is the champion: nothing moved" in capsys.readouterr().out
    assert [(c.version, c.pinned, c.reason) for c in registry.timeline()][-3:] == timeline[-3:]
    assert [c["version"] for c in collect_status(platform.model)["timeline"]][0] == 1, "v1's promotion by the first run starts the timeline"

    from mlplatform_tests.support.loop import job

    change = {"ops": {"adult_change_champion": {"config": {"version": 2, "reason": "canary from the launchpad", "pin": False}}}}
    launched = job(ADULT.champion_job).execute_in_process(instance=platform.instance, run_config=change)
    assert launched.success and registry.champion_record().version == 2  # type: ignore[union-attr]
    assert registry.timeline()[-1].by == f"dagster run {launched.run_id}" and not registry.champion_record().pinned  # type: ignore[union-attr]
    wrong = {"ops": {"adult_change_champion": {"config": {"version": 99, "reason": "typo"}}}}
    refused = job(ADULT.champion_job).execute_in_process(instance=platform.instance, run_config=wrong, raise_on_error=False)
    assert not refused.success and registry.champion_record().version == 2  # type: ignore[union-attr]
    assert "has no version 99" in " ".join(e.event_specific_data.error.message for e in refused.all_events if e.is_step_failure)  # type: ignore[union-attr]

    # A pin ends when the alias is moved away outside mlplatform: left behind, it came back with the alias (pinned again
    # with no timeline entry saying so).
    capsys.readouterr()
    assert main(["champion", "set", "--model", "adult", "--version", "2", "--reason", "pin in place"]) == 0
    assert "champion: v2 already the champion, now pinned; pinned" in capsys.readouterr().out
    assert main(["champion", "set", "--model", "adult", "--version", "2", "--no-pin", "--reason", "let it go"]) == 0  # said nothing of the pin it removed
    assert "champion: v2 unpinned: the retraining loop may replace it" in capsys.readouterr().out
    assert main(["champion", "set", "--model", "adult", "--version", "2", "--reason", "pin again"]) == 0
    assert main(["champion", "set", "--model", "adult", "--version", "1", "--no-pin", "--reason", "move off it"]) == 0
    assert "champion: v2 → v1 (the pin of v2 ends); not pinned: the retraining loop may replace it" in capsys.readouterr().out
    assert main(["champion", "set", "--model", "adult", "--version", "2", "--reason", "hold"]) == 0
    for version in ("1", "2"):
        registry.client.set_registered_model_alias(registry.name, "champion", version)
        platform.tick(SENSOR_NAME, _cursor(_watermark(platform)))
    away, back = registry.timeline()[-2:]
    assert (away.version, away.pinned, away.reason) == (1, False, "alias moved outside mlplatform (MLflow UI or API); the pin of v2 (hold) ends")
    assert (back.version, back.pinned) == (2, False) and not registry.champion_record().pinned  # type: ignore[union-attr]

    # Two `champion set` at once (the operator probe: both said "v6 → …"): another moved the alias between this
    # command's read and its own move; it says the move the timeline records.
    import mlplatform.pipeline.champion as champion_module

    alone = champion_module.change_champion

    def meanwhile(registry_: Registry, spec: DatasetSpec, request: ChampionRequest, by: str) -> ChampionChange:
        alone(registry_, spec, ChampionRequest("the other terminal", 1, pin=False), by="another terminal")
        return alone(registry_, spec, request, by)

    monkeypatch.setattr(champion_module, "change_champion", meanwhile)
    capsys.readouterr()
    assert main(["champion", "set", "--model", "adult", "--version", "2", "--no-pin", "--reason", "two at once"]) == 0
    assert "champion: v1 → v2; not pinned" in capsys.readouterr().out
    monkeypatch.setattr(champion_module, "change_champion", alone)
    # A version its own evaluation rejected may be made champion, knowingly: the command says so (the new-user probe).
    assert main(["champion", "set", "--model", "adult", "--version", "3", "--no-pin", "--reason", "try it"]) == 0
    said = capsys.readouterr().out
    assert "champion: v2 → v3; not pinned" in said and "champion: note: v3's own evaluation rejected it: champion v1 is pinned" in said, said
    assert main(["champion", "set", "--model", "adult", "--version", "1", "--no-pin", "--reason", "the first"]) == 0
    assert "note:" not in capsys.readouterr().out, "v1 was promoted by its own evaluation"
    assert main(["champion", "set", "--model", "adult", "--version", "2", "--no-pin", "--reason", "back"]) == 0
    assert "champion: note: v2's own evaluation rejected it: challenger roc_auc" in capsys.readouterr().out

    # The probe: the champion's version deleted (or the alias removed) outside mlplatform read as a fresh model, "no
    # champion yet: train and promote a first model", in the sensors and status alike.
    registry.client.delete_registered_model_alias(registry.name, "champion")
    try:
        gone = "no champion: @champion is gone, last moved to v2 (that version deleted, or the alias removed outside mlplatform)"
        assert gone in (platform.tick(SENSOR_NAME, _cursor(_watermark(platform))).skip_message or "")
        assert gone in (platform.tick(DRIFT_SENSOR_NAME, None).skip_message or "")
        status = collect_status(platform.model)
        assert status["champion"] is None and status["no_champion"].startswith(gone) and f"champion: {gone}" in render_status(status)
        capsys.readouterr()
        assert main(["champion", "show", "--model", "adult"]) == 0 and f"adult: {gone}" in capsys.readouterr().out
    finally:
        registry.client.set_registered_model_alias(registry.name, "champion", "2")


def _drift_run(platform: Platform, rows: pd.DataFrame, with_labels: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dg.DagsterRun]:
    """Replay drifted rows, then what the daemon does on the drift sensor's next tick: its run, launched with its tags and run key."""
    scenario = DriftScenario(shift_numeric={"age": 1.5, "hours-per-week": 1.5, "education-num": 1.0}, category_mix={"workclass": "Self-emp-inc", "occupation": "Sales", "marital-status": "Never-married", "relationship": "Own-child"})
    platform.replay(inject_drift(rows, platform.spec, scenario, reference=platform.rows.iloc[:CHAMPION_ROWS]), with_labels=with_labels)
    monkeypatch.setenv("MLPLATFORM_DRIFT_CURRENT_HOURS", str(len(rows) * 60 / 3600))
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVERY_N", "1000000")  # only the drift report can call for a retraining here
    [request] = platform.tick(DRIFT_SENSOR_NAME, None).run_requests or []
    result = launch_drift_run(platform.instance, "adult", request)
    run = platform.instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags[LAUNCHED_BY_TAG] == DRIFT_SENSOR_NAME
    report = platform.instance.fetch_materializations(ADULT.asset(DRIFT_REPORT), limit=1).records[0]
    assert report.run_id == run.run_id
    return str(report.storage_id), run


def _materialized_in(platform: Platform, run_id: str) -> set[str]:
    events = platform.instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {e.dagster_event.asset_key.path[-1] for e in events if e.dagster_event and e.dagster_event.asset_key}


def test_a_drift_report_run_retrains_in_the_same_run_once_per_trigger(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = len(platform.model.registry.versions())
    report_id, run = _drift_run(platform, platform.next_rows(300), True, monkeypatch)
    assert (latest_metadata(platform.instance, ADULT.asset(DRIFT_REPORT)) or {})["dataset_drift"] is True
    assert _materialized_in(platform, run.run_id) >= {"drift_report", "retraining_trigger", "features", "trained_model", "evaluation_report",
                                                       "estimated_performance", "live_quality", "drift_dashboard"}
    tags = run.tags  # what the sensor records on a run it requests, added by retraining_trigger
    assert tags[REASON_TAG] == DRIFT and tags[DRIFT_REPORT_TAG] == report_id and tags[POLICY_TRIGGER_TAG] == "adult"
    assert tags[LABEL_WATERMARK_TAG] == str(_watermark(platform)) and int(tags[NEW_LABELLED_TAG]) >= 300 and float(tags[TRIGGERED_AT_TAG]) > 0
    assert tags[RETRAIN_TAG] == "adult" and float(tags[DRIFT_SHARE_TAG]) > 0
    [challenger] = [v for v in platform.model.registry.versions() if int(v.version) > versions]
    assert challenger.tags[TRIGGER_REASON] == DRIFT, "trained_model reads the tags added during its run"
    starts = [str(e.step_key).rpartition("__")[2] for e in platform.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)]
    assert starts.index("evaluation_report") < min(starts.index(s) for s in ("estimated_performance", "live_quality", "drift_dashboard")), \
        f"the path to a new champion runs first: {starts}"
    for stored in [_cursor(_watermark(platform) - 300, last_trigger_time=0.0), None]:  # the sensor never takes the run's trigger again, even with a lost cursor
        tick = platform.tick(SENSOR_NAME, stored)
        assert not tick.run_requests and "is from before the latest retraining" in (tick.skip_message or ""), tick.skip_message
    assert collect_status(platform.model, with_dagster=True)["sensor_runs"][0]["run_id"] == run.run_id


def test_a_drift_report_run_without_a_retraining_to_call_for_skips_the_training_steps(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    if not platform.instance.get_runs(filters=dg.RunsFilter(tags={POLICY_TRIGGER_TAG: "adult"}), limit=1):  # run alone: consume the labels first
        _drift_run(platform, platform.next_rows(300), True, monkeypatch)
    versions = len(platform.model.registry.versions())
    _, run = _drift_run(platform, platform.next_rows(300), False, monkeypatch)
    assert (latest_metadata(platform.instance, ADULT.asset(DRIFT_REPORT)) or {})["dataset_drift"] is True
    assert _materialized_in(platform, run.run_id) == {"drift_report", "estimated_performance", "live_quality", "drift_dashboard"}, \
        "the readings quality_drop and estimated_drop act on are as fresh as each drift report"
    skipped = {str(e.step_key).rpartition("__")[2] for e in platform.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SKIPPED)}
    assert skipped == {"features", "trained_model", "evaluation_report"}
    assert len(platform.model.registry.versions()) == versions and REASON_TAG not in run.tags, "nothing trained, registered or recorded"
    [observed] = [e for e in platform.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)]
    why = str(observed.dagster_event.event_specific_data.asset_observation.metadata["reason"].value)  # type: ignore[union-attr]
    assert "waiting for labels: 0 new labelled events" in why, why
    tick = platform.tick(SENSOR_NAME, None)  # the run has ended: the verdict is the sensor's to act on once labels come
    assert not tick.run_requests and "drift detected, waiting for labels" in (tick.skip_message or ""), tick.skip_message


def _fake_drift_verdict(platform: Platform, status: dg.DagsterRunStatus) -> tuple[str, dg.DagsterRun]:
    """A drift report saying drift about the champion, made by a drift report run in `status` (no Evidently needed)."""
    from dagster._core.events import DagsterEvent, StepMaterializationData
    from dagster._core.test_utils import create_run_for_test

    record = platform.model.registry.champion_record()
    assert record is not None
    deciding = create_run_for_test(platform.instance, job_name="__ASSET_JOB", status=status, tags={LAUNCHED_BY_TAG: DRIFT_SENSOR_NAME})
    verdict = dg.AssetMaterialization(asset_key=ADULT.asset(DRIFT_REPORT), metadata={"skipped": False, "champion_version": record.version,
                                                                                       "dataset_drift": True, "drift_share": 0.6})
    platform.instance.report_dagster_event(DagsterEvent(dg.DagsterEventType.ASSET_MATERIALIZATION.value, job_name=deciding.job_name,
                                                        event_specific_data=StepMaterializationData(verdict)), run_id=deciding.run_id)
    return str(platform.instance.fetch_materializations(ADULT.asset(DRIFT_REPORT), limit=1).records[0].storage_id), deciding


def _drift_bar(platform: Platform) -> DriftBar:
    """The bar the policy's record sets now (earlier tests in this module may have left rejected drift retrainings)."""
    runs, record = trigger_runs(platform.instance, "adult"), platform.model.registry.champion_record()
    assert record is not None
    return DriftBar.of(policy_record(platform.instance, ADULT, runs), PolicyConfig(1_000_000, MIN_FOR_DRIFT, 0), record.label_seq_cutoff, record.since)


def test_the_sensor_leaves_a_drift_report_to_its_run_until_that_run_ends(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report made inside a drift report run that is still running is that run's to decide on: no second retraining."""
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVERY_N", "1000000")
    report_id, deciding = _fake_drift_verdict(platform, dg.DagsterRunStatus.STARTED)
    platform.replay(platform.next_rows(_drift_bar(platform).labels))  # enough labels for a drift trigger
    waiting = platform.tick(SENSOR_NAME, None)
    assert not waiting.run_requests and f"run {deciding.run_id} is still deciding" in (waiting.skip_message or ""), waiting.skip_message
    platform.instance.report_run_failed(deciding)  # it ended without deciding (a failure before retraining_trigger): the sensor may act now
    [request] = platform.tick(SENSOR_NAME, None).run_requests or []
    assert request.run_key == f"{DRIFT}-{report_id}" and request.tags[LAUNCHED_BY_TAG] == SENSOR_NAME


def test_a_drift_retraining_that_is_not_promoted_doubles_the_labels_the_next_drift_needs(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy's record read back from the trigger runs and their evaluation_report decisions (margin 1.0: rejected)."""
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVERY_N", "1000000")
    before = _drift_bar(platform)
    report_id, _ = _fake_drift_verdict(platform, dg.DagsterRunStatus.SUCCESS)
    platform.replay(platform.next_rows(before.labels))
    [request] = platform.tick(SENSOR_NAME, None).run_requests or []
    assert request.run_key == f"{DRIFT}-{report_id}"
    run = launch(platform.instance, "adult", request)
    assert (latest_metadata(platform.instance, ADULT.asset("evaluation_report")) or {})["decision"] == "rejected"
    assert platform.instance.get_run_by_id(run.run_id).tags[REASON_TAG] == DRIFT  # type: ignore[union-attr]

    _fake_drift_verdict(platform, dg.DagsterRunStatus.SUCCESS)
    platform.replay(platform.next_rows(before.labels))
    held = platform.tick(SENSOR_NAME, None)
    why = held.skip_message or ""
    assert not held.run_requests and f"{before.labels} new labelled events of {2 * before.labels} needed" in why, why
    count = before.unpromoted + 1
    assert f"doubled from {MIN_FOR_DRIFT}: {count} drift, quality_drop or estimated_drop retraining{'s were' if count > 1 else ' was'} not promoted since the latest promotion" in why, why
    platform.replay(platform.next_rows(before.labels))
    [retrain] = platform.tick(SENSOR_NAME, None).run_requests or []
    assert retrain.tags[REASON_TAG] == DRIFT, "with the doubled bar's labels the drift retrains"


def test_a_champion_set_by_hand_takes_over_with_a_fresh_drift_bar(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator probe: after a rollback to an older version, the rejections of challengers judged against the version
    rolled back from kept the bar raised (their triggers came after the older version's cut-off, the only reset a hand
    set had). Retrainings triggered before a champion took over were about another champion: here the champion is set
    again by hand, its cut-off unchanged, and the next drift verdict retrains at the configured bar."""
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVERY_N", "1000000")
    _fake_drift_verdict(platform, dg.DagsterRunStatus.SUCCESS)
    platform.replay(platform.next_rows(_drift_bar(platform).labels))
    [request] = platform.tick(SENSOR_NAME, None).run_requests or []
    launch(platform.instance, "adult", request)  # rejected (margin 1.0): a raised bar, and no label since its trigger
    raised = _drift_bar(platform)
    assert raised.unpromoted >= 1 and raised.labels > MIN_FOR_DRIFT, raised
    registry = platform.model.registry
    record = registry.champion_record()
    assert record is not None
    registry.set_champion(record.version, "pinned while we look", "operator", pin=True)
    registry.unpin("looked", "operator")
    assert _drift_bar(platform) == raised, "a pin and an unpin of the same champion change no champion (the review)"
    rejected = max(v.version for v in registry.versions(limit=5))
    assert rejected != record.version
    registry.set_champion(rejected, "tried by hand", "operator", pin=False)
    registry.set_champion(record.version, "rolled back by hand", "operator", pin=False)
    assert _drift_bar(platform) == DriftBar(MIN_FOR_DRIFT, 0)
    report_id, _ = _fake_drift_verdict(platform, dg.DagsterRunStatus.SUCCESS)
    platform.replay(platform.next_rows(MIN_FOR_DRIFT))
    [request] = platform.tick(SENSOR_NAME, None).run_requests or []
    assert request.run_key == f"{DRIFT}-{report_id}" and request.tags[REASON_TAG] == DRIFT


QUALITY_EVENTS = 200


def _champion(platform: Platform) -> int:
    record = platform.model.registry.champion_record()
    assert record is not None
    return record.version


def _live_quality_id(platform: Platform) -> str:
    return str(platform.instance.fetch_materializations(ADULT.asset(LIVE_QUALITY), limit=1).records[0].storage_id)


def test_a_realized_quality_drop_on_served_predictions_triggers_one_retraining(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """live_quality below the champion's hold-out reference (labels of its served predictions flipped: a concept change no
    drift report or estimate sees) → one quality_drop run, its reading in the tags; consumed once, also with a lost cursor."""
    from dagster._core.test_utils import create_run_for_test

    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVERY_N", "1000000")
    monkeypatch.setenv("MLPLATFORM_QUALITY_DROP_EVENTS", str(QUALITY_EVENTS))
    version = _champion(platform)  # earlier tests in this module may have moved it
    drift = platform.instance.fetch_materializations(ADULT.asset(DRIFT_REPORT), limit=1).records
    start = Cursor(_watermark(platform), time.time() - 1, str(drift[0].storage_id) if drift else None).to_json()  # earlier drift consumed
    platform.serve(QUALITY_EVENTS - 1, version, flip_labels=True)
    platform.materialize("live_quality")
    few = platform.tick(SENSOR_NAME, start)
    assert not few.run_requests and f"realized quality reading over {QUALITY_EVENTS - 1} events; {QUALITY_EVENTS} needed" in (few.skip_message or "")

    platform.serve(1, version, flip_labels=True)
    platform.replay(platform.next_rows(_drift_bar(platform).labels))  # the drift bar's new labels: a retraining can learn from them
    platform.materialize("live_quality")
    meta = latest_metadata(platform.instance, ADULT.asset(LIVE_QUALITY)) or {}
    assert meta["quality_metric"] == "roc_auc" and meta["quality_events"] == QUALITY_EVENTS and meta["champion_version"] == version
    assert float(str(meta["quality_upper"])) < float(str(meta["reference"])), meta
    reading = _live_quality_id(platform)
    monkeypatch.setenv("MLPLATFORM_RETRAIN_ON_QUALITY_DROP", "false")
    off = platform.tick(SENSOR_NAME, start)
    assert not off.run_requests and "quality drop: off" in (off.skip_message or ""), off.skip_message
    monkeypatch.delenv("MLPLATFORM_RETRAIN_ON_QUALITY_DROP")

    result = platform.tick(SENSOR_NAME, start)
    [request] = result.run_requests or []
    tags = request.tags
    assert request.run_key == f"{QUALITY_DROP}-{reading}" and tags[REASON_TAG] == QUALITY_DROP and tags[QUALITY_TAG] == reading
    assert tags[REALIZED_METRIC_TAG] == "roc_auc" and tags[REALIZED_EVENTS_TAG] == str(QUALITY_EVENTS)
    assert float(tags[REALIZED_VALUE_TAG]) == pytest.approx(float(str(meta["quality_value"])), abs=1e-4)
    assert float(tags[REALIZED_REFERENCE_TAG]) == pytest.approx(float(str(meta["reference"])), abs=1e-4)
    assert tags[REALIZED_BAND_TAG] == f"{float(str(meta['quality_lower'])):.4f}-{float(str(meta['quality_upper'])):.4f}"
    again = platform.tick(SENSOR_NAME, result.cursor)
    assert not again.run_requests and "the latest realized quality reading is from before the latest retraining (whatever triggered it)" in (again.skip_message or "")

    made = create_run_for_test(platform.instance, job_name="__ASSET_JOB", tags={**tags, LAUNCHED_BY_TAG: SENSOR_NAME})  # the run the request made
    waiting = platform.tick(SENSOR_NAME, None)
    assert not waiting.run_requests and f"retraining run {made.run_id[:8]} is unfinished" in (waiting.skip_message or "")
    platform.instance.report_run_canceled(made)
    lost = platform.tick(SENSOR_NAME, None)
    assert not lost.run_requests and "is from before the latest retraining" in (lost.skip_message or ""), "a lost cursor is rebuilt from the run's tags"


@pytest.mark.parametrize(("metadata", "says"), [
    ({"quality_metric": "roc_auc", "quality_value": "high", "quality_lower": 0.1, "quality_upper": 0.2, "reference": 0.9, "quality_events": 500},
     "latest realized quality reading is unreadable (ValueError"),
    ({"quality_metric": "roc_auc", "quality_value": 0.1, "quality_events": 500}, "is unreadable (KeyError"),
    ({"quality_metric": "log_loss", "quality_value": 0.1, "quality_lower": 0.0, "quality_upper": 0.2, "reference": 0.9, "quality_events": 500},
     "has no usable log_loss against its reference"),
    ({"quality_metric": "roc_auc", "quality_value": float("nan"), "quality_lower": 0.0, "quality_upper": 0.2, "reference": 0.9, "quality_events": 500},
     "has no usable roc_auc"),
    ({"quality_note": "12 labelled served predictions of the champion"}, "no recent realized quality reading: 12 labelled"),
    ({"champion_version": 7, "quality_value": 0.1}, "latest realized quality reading is about v7, not the champion"),
    ({"events": 0, "verdict": "no champion yet", "champion_version": None}, "latest realized quality reading was taken before there was a champion"),
])
def test_a_bad_or_missing_live_quality_reading_is_a_reason_not_a_crash(platform: Platform, monkeypatch: pytest.MonkeyPatch,
                                                                        metadata: dict[str, object], says: str) -> None:
    """Read about the current champion unless the metadata says otherwise."""
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVERY_N", "1000000")
    about = {"champion_version": _champion(platform), **metadata}
    recorded = {k: v for k, v in about.items() if v is not None}
    platform.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=ADULT.asset(LIVE_QUALITY), metadata=recorded))
    tick = platform.tick(SENSOR_NAME, None)
    assert not tick.run_requests and says in (tick.skip_message or ""), tick.skip_message


def test_a_promotion_read_between_its_alias_move_and_its_timeline_entry_is_no_outside_move(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """`promote` moves the alias, then writes the timeline entry; a tick that read in between noted the platform's own
    promotion as "alias moved outside mlplatform" (seen live: 0.25 s apart, the sensor ticking every second). Here the
    tick runs inside `promote`, right after its alias move."""
    registry = platform.model.registry
    if len(registry.versions()) < 2:  # run alone: make a version to promote
        platform.materialize("features", "trained_model", "evaluation_report")
    before = registry.champion_record()
    assert before is not None
    target = next(int(v.version) for v in registry.versions() if int(v.version) != before.version)
    entries = len(registry.timeline())
    move_alias = registry.client.set_registered_model_alias
    halfway: list[object] = []

    def move_then_tick(name: str, alias: str, version: str) -> None:
        move_alias(name, alias, version)
        halfway.append(platform.tick(SENSOR_NAME, _cursor(_watermark(platform))))

    monkeypatch.setattr(registry.client, "set_registered_model_alias", move_then_tick)
    registry.promote(target, "promoted: read halfway", "dagster run halfway")
    monkeypatch.undo()
    assert len(halfway) == 1 and [(c.version, c.reason) for c in registry.timeline()[entries:]] == [(target, "promoted: read halfway")]
    mark = registry.client.get_registered_model(registry.name).tags[CHAMPION_MOVING]
    assert registry.champion_record().recorded and mark.startswith(f"{target}:{registry.timeline()[-1].seq}:"), "left in place, inert: its entry exists"  # type: ignore[union-attr]
    registry.client.set_registered_model_alias(registry.name, "champion", str(before.version))  # a move the next tick notes
    platform.tick(SENSOR_NAME, _cursor(_watermark(platform)))
    assert [(c.version, c.reason) for c in registry.timeline()[entries + 1:]] == [(before.version, "alias moved outside mlplatform (MLflow UI or API)")]


def test_a_champion_pinned_while_a_challenger_is_judged_stays_champion(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The concurrency probe: the pin is read as the evaluation starts; one set a moment later was overridden by the
    challenger's promotion a second after, and the pinned champion was gone. Here the challenger wins on the scores
    (the decision made so) and another operator pins the champion between the judgement and its application."""
    from dataclasses import replace

    import mlplatform.orchestration.assets as assets

    registry = platform.model.registry
    before = registry.champion_record()
    assert before is not None and not before.pinned
    apply = assets.apply_decision

    def pinned_meanwhile(registry_: object, evaluation: object, run_id: str | None) -> object:
        won = replace(evaluation, decision=replace(evaluation.decision, promote=True))  # type: ignore[type-var, attr-defined]
        change_champion(registry, platform.spec, ChampionRequest("operator B holds it", before.version, pin=True), by="operator B")
        return apply(registry_, won, run_id)  # type: ignore[arg-type]

    monkeypatch.setattr(assets, "apply_decision", pinned_meanwhile)
    platform.materialize("features", "trained_model", "evaluation_report")
    monkeypatch.undo()
    evaluation = latest_metadata(platform.instance, ADULT.asset("evaluation_report")) or {}
    assert evaluation["decision"] == "rejected" and evaluation[CHAMPION_VERSION] == before.version
    assert str(evaluation["reason"]).startswith(f"the champion was pinned (operator B holds it) while v{evaluation['challenger_version']} was judged "
                                                f"against v{before.version}: not promoted; on the scores: "), evaluation["reason"]
    after = registry.champion_record()
    assert after is not None and (after.version, after.pinned) == (before.version, True), "the pin holds"
    assert registry.get_version(int(str(evaluation["challenger_version"]))).tags["mlplatform.decision"] == "rejected"
    # Won on the scores, kept out by a person: no false alarm the drift bar learns from (the operator probe: four
    # challengers kept out by a pin doubled the bar to 5000 after the pin was gone).
    assert evaluation[KEPT_BY_PERSON] is True
    assert [o.promoted for o in policy_record(platform.instance, ADULT, [_as_drift_retraining(platform.instance.get_runs(limit=1)[0])])] == [None]
    registry.unpin("test done", "test")


def _as_drift_retraining(run: dg.DagsterRun) -> dg.DagsterRun:
    """A run materialized by hand, with the tags of one the retraining sensor launched on a drift report."""
    return run.with_tags({**run.tags, REASON_TAG: DRIFT, LABEL_WATERMARK_TAG: "1000000"})


def test_a_champion_pinned_while_the_decision_is_recorded_stays_champion(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second review: the champion was checked again before the decision's tags were written (several MLflow calls)
    and not after: a pin set in that window was still overridden. It is checked again just before the promotion."""
    from dataclasses import replace

    import mlplatform.orchestration.assets as assets

    registry = platform.model.registry
    before = registry.champion_record()
    assert before is not None and not before.pinned
    apply, tag_version = assets.apply_decision, Registry.tag_version
    pinned: list[bool] = []

    def won(registry_: object, evaluation: object, run_id: str | None) -> object:
        return apply(registry_, replace(evaluation, decision=replace(evaluation.decision, promote=True)), run_id)  # type: ignore[type-var, attr-defined, arg-type]

    def pinned_while_tagging(self: Registry, version: object, tags: dict[str, str]) -> None:
        tag_version(self, version, tags)  # type: ignore[arg-type]
        if not pinned:
            pinned.append(True)
            change_champion(registry, platform.spec, ChampionRequest("operator C holds it", before.version, pin=True), by="operator C")

    monkeypatch.setattr(assets, "apply_decision", won)
    monkeypatch.setattr(Registry, "tag_version", pinned_while_tagging)
    platform.materialize("features", "trained_model", "evaluation_report")
    monkeypatch.undo()
    evaluation = latest_metadata(platform.instance, ADULT.asset("evaluation_report")) or {}
    assert evaluation["decision"] == "rejected" and str(evaluation["reason"]).startswith("the champion was pinned (operator C holds it)"), evaluation
    after = registry.champion_record()
    assert after is not None and (after.version, after.pinned) == (before.version, True)
    assert registry.get_version(int(str(evaluation["challenger_version"]))).tags["mlplatform.decision"] == "rejected", "its tags say so too"
    registry.unpin("test done", "test")


def test_a_retraining_by_hand_consumes_the_evidence_it_saw_once_it_decided(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dev probe: a retraining from the UI, rejected, was followed at once by the sensor's drift retraining on the same labels."""
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVERY_N", "1000000")
    report_id, _ = _fake_drift_verdict(platform, dg.DagsterRunStatus.SUCCESS)
    bar = _drift_bar(platform)
    platform.replay(platform.next_rows(bar.labels))
    [due] = platform.tick(SENSOR_NAME, None).run_requests or []
    assert due.run_key == f"{DRIFT}-{report_id}"

    unfinished = platform.materialize("features").run_id  # by hand, never reaching a decision: it consumes nothing
    assert POLICY_TRIGGER_TAG not in platform.instance.get_run_by_id(unfinished).tags  # type: ignore[union-attr]
    assert [r.run_key for r in platform.tick(SENSOR_NAME, None).run_requests or []] == [due.run_key]

    watermark = _watermark(platform)
    run = platform.instance.get_run_by_id(platform.materialize("features", "trained_model", "evaluation_report").run_id)
    assert run is not None and (latest_metadata(platform.instance, ADULT.asset("evaluation_report")) or {})["decision"] == "rejected"
    assert run.tags[REASON_TAG] == "by_hand" and run.tags[POLICY_TRIGGER_TAG] == "adult" and run.tags[RETRAIN_TAG] == "adult"
    assert run.tags[DRIFT_REPORT_TAG] == report_id and run.tags[LABEL_WATERMARK_TAG] == str(watermark)
    held = platform.tick(SENSOR_NAME, None)
    assert not held.run_requests and "is from before the latest retraining" in (held.skip_message or ""), held.skip_message
    assert _drift_bar(platform) == bar, "a person's retraining is no false alarm of the drift policy"
    said = render_status(collect_status(platform.model, with_dagster=True))
    assert f"retraining run {run.run_id[:8]}: SUCCESS" in said and f"{run.run_id[:8]}: SUCCESS in " in said and "reason=by_hand: v" in said, said


def test_a_retraining_from_the_asset_graph_keeps_out_of_an_unfinished_one(platform: Platform) -> None:
    """Started from the UI's asset graph, a run has no retraining tag, so the queue does not keep it apart: features refuses it
    while another retraining of the model is unfinished (otherwise it tags the run, and the sensor waits for it: the test above)."""

    @dg.job(name="adult_retrain")
    def retraining() -> None:
        pass

    other = platform.instance.create_run_for_job(retraining, tags={RETRAIN_TAG: "adult"})
    refused = loop.materialize(platform.instance, ["features"])
    assert not refused.success and f"retraining run {other.run_id} of adult is unfinished" in loop.failures(refused), loop.failures(refused)
    platform.instance.report_run_canceled(other)
