"""Drift alerts and an unavailable event log, through the real pipeline against a real Alertmanager (a second
module, so it runs beside test_alerting.py under `pytest -n 2 --dist loadfile`)."""

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pydantic
import pytest
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus

from mlplatform.stores.alerting import AlertName
from mlplatform.orchestration.launch import LaunchError, raise_on_failure
from mlplatform.orchestration.names import ModelNames
from mlplatform.orchestration.assets import latest_metadata
from mlplatform_tests.support import loop
from mlplatform_tests.support.loop import names, retrain_job
from mlplatform.pipeline.replay import DriftScenario, inject_drift, read_source, write_batches
from mlplatform.settings import Settings
from mlplatform.domain.spec import load_spec
from mlplatform_tests.alerting_support import Alertmanager, alertmanager, champion, labels_of, materialize, platform, platform_instance, tick

alerts_sensor, run_failure_alerts, run_success_alerts = ModelNames("adult").alerts_sensor, "run_failure_alerts", "run_success_alerts"

__all__ = ["alertmanager", "platform", "platform_instance"]  # fixtures used by name

FIRST_ROWS = 3000


@pytest.fixture(scope="module")
def first_rows() -> int:
    """A larger first window than test_alerting.py: rare categories then appear in the drift reference too."""
    return FIRST_ROWS


DRIFT = DriftScenario(shift_numeric={"age": 3.0, "hours-per-week": 3.0, "education-num": -3.0, "capital-gain": 3.0},
                      category_mix={"workclass": "Self-emp-inc", "marital-status": "Widowed", "relationship": "Other-relative", "race": "Other"})


def _ingest(settings: Settings, start: int, count: int, instance: dg.DagsterInstance, scenario: DriftScenario | None = None) -> None:
    spec = load_spec(settings.dataset_spec)
    rows = read_source(spec)
    chunk = rows.iloc[start : start + count]
    if scenario is not None:
        chunk = inject_drift(chunk, spec, scenario, reference=rows.iloc[:start])
    write_batches(chunk, spec, settings.landing_dir, count, prefix=f"rows-{start}")
    materialize(instance, ["raw_events"])


def test_drift_alert_names_the_drifted_columns_and_resolves_on_a_clean_report(platform: Settings, platform_instance: dg.DagsterInstance,
                                                                              alertmanager: Alertmanager, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = platform_instance
    monkeypatch.setenv("MLPLATFORM_DRIFT_SHARE_THRESHOLD", "0.3")
    cursor, _ = tick(instance, alerts_sensor, None)
    _ingest(platform, FIRST_ROWS, 1000, instance, DRIFT)
    materialize(instance, ["drift_report"])
    cursor, message = tick(instance, alerts_sensor, cursor)
    assert "drift: fired" in str(message)
    [alert] = alertmanager.alerts(AlertName.DRIFT)
    assert labels_of(alert) == {"alertname": "MLPlatformDriftDetected", "severity": "warning", "dataset": "adult", "model_version": str(champion(platform))}
    report = latest_metadata(instance, names().asset("drift_report"))["report_url"]  # type: ignore[index]
    assert alert["annotations"]["report"] == report and report.startswith(f"{platform.reports_url}/drift/") and report.endswith(".html")
    assert "/runs/" in alert["annotations"]["dagster_run"]
    assert {"age", "hours-per-week"} <= {c.strip() for c in alert["annotations"]["description"].removeprefix("Drifted columns: ").split(".")[0].split(",")}

    _ingest(platform, FIRST_ROWS + 1000, 1000, instance)
    monkeypatch.setenv("MLPLATFORM_DRIFT_CURRENT_HOURS", "10")  # the last 600 events: all clean
    materialize(instance, ["drift_report"])
    _, message = tick(instance, alerts_sensor, cursor)
    assert "no drift: resolved" in str(message)
    assert alertmanager.alerts(AlertName.DRIFT) == []


def test_a_run_is_labelled_by_what_it_did_whatever_job_ran_it() -> None:
    """Sensors run every selection as __ASSET_JOB: a landing run's success resolved a failed retraining's alert (the
    review), and a drift run, which selects the retraining it may call for, read as a retraining even when it did not
    retrain (the diff review)."""
    from mlplatform.orchestration.alerts import what_ran
    from mlplatform.orchestration.names import DRIFT_RUN, RETRAINING

    adult = ModelNames("adult")
    drift = dg.DagsterRun(job_name="__ASSET_JOB", run_id="d", asset_selection=frozenset(adult.assets(*DRIFT_RUN)))
    assert what_ran(drift, "adult", retraining=False) == "assets drift_dashboard, drift_report, estimated_performance, live_quality, retraining_trigger"
    assert what_ran(drift, "adult", retraining=True) == "adult_retrain"
    landing = dg.DagsterRun(job_name="__ASSET_JOB", run_id="l", asset_selection=frozenset(adult.assets("raw_events")))
    assert what_ran(landing, "adult", retraining=False) == "assets raw_events"
    retraining = dg.DagsterRun(job_name="__ASSET_JOB", run_id="r", asset_selection=frozenset(adult.assets(*RETRAINING)))
    assert what_ran(retraining, "adult", retraining=True) == "adult_retrain" == what_ran(dg.DagsterRun(job_name="adult_retrain", run_id="j"), "adult", True)
    assert what_ran(dg.DagsterRun(job_name="run_history_retention", run_id="h"), None, retraining=False) == "run_history_retention"


def test_a_challenger_awaiting_its_shadow_evidence_is_no_refused_promotion(platform: Settings, platform_instance: dg.DagsterInstance,
                                                                         alertmanager: Alertmanager) -> None:
    """The review: every decision but `promoted` fired MLPlatformPromotionRefused, so a hold-out winner waiting (up to a
    day) for its shadow evidence was announced as 'not promoted'. Decisions recorded as evaluation_report records them."""
    instance = platform_instance
    cursor, _ = tick(instance, alerts_sensor, None)
    evaluation = names().asset("evaluation_report")
    for decision in ("awaiting_shadow", "rejected"):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=evaluation, metadata={
            "decision": decision, "challenger_version": 7, "champion_version": 1, "reason": f"the test's {decision}", "report_url": ""}))
        cursor, message = tick(instance, alerts_sensor, cursor)
        if decision == "awaiting_shadow":
            assert "awaiting shadow evidence: nothing to alert on yet" in str(message) and alertmanager.alerts(AlertName.PROMOTION_REFUSED) == []
    assert "promotion refused: fired" in str(message) and len(alertmanager.alerts(AlertName.PROMOTION_REFUSED)) == 1


def _report_drift(instance: dg.DagsterInstance, platform: Settings, drifted: bool = True) -> None:
    """A drift_report materialization about the champion, as the asset records one (without running it)."""
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=names().asset("drift_report"), metadata={
        "skipped": False, "dataset_drift": drifted, "champion_version": champion(platform), "drift_share": 0.6 if drifted else 0.1,
        "drifted_column_names": "age" if drifted else "", "report_url": dg.MetadataValue.url("http://127.0.0.1:1/r.html")}))


@contextmanager
def _outbox_unopenable(platform: Settings, aside: Path) -> Iterator[None]:
    """A directory where the alerts outbox was, for as long as the block runs: it cannot be opened."""
    from mlplatform.stores.alerting import ALERTS_FILE

    outbox = platform.state_dir / ALERTS_FILE
    existed = outbox.exists()
    if existed:
        outbox.rename(aside)
    outbox.mkdir()
    try:
        yield
    finally:
        outbox.rmdir()
        if existed:
            aside.rename(outbox)


def test_an_alert_the_outbox_could_not_record_is_recorded_at_the_next_tick(platform: Settings, platform_instance: dg.DagsterInstance,
                                                                            alertmanager: Alertmanager, tmp_path: Path) -> None:
    """The review: the alerts sensor moved its cursor past a drift report whose alert the outbox could not record (a
    SQLite error for one tick), and the alert was lost for good. It stops before that report, and the next tick fires it."""
    instance = platform_instance
    cursor, _ = tick(instance, alerts_sensor, None)
    _report_drift(instance, platform)
    with _outbox_unopenable(platform, tmp_path / "outbox-aside"):
        cursor, message = tick(instance, alerts_sensor, cursor)
    assert "drift: fired, but not recorded in the alerts outbox" in str(message) and "tried again next tick" in str(message), message
    assert alertmanager.alerts(AlertName.DRIFT) == []
    _, message = tick(instance, alerts_sensor, cursor)
    assert "drift: fired" in str(message) and len(alertmanager.alerts(AlertName.DRIFT)) == 1, message
    # A first tick stopped so stays a first tick (the diff review: its cursor at 0, the next replayed the whole history).
    with _outbox_unopenable(platform, tmp_path / "outbox-aside"):
        first, message = tick(instance, alerts_sensor, None)
    assert "not recorded" in str(message) and "adult/drift_report" not in json.loads(first or "{}"), first


def test_a_materialization_the_alerts_sensor_cannot_read_is_passed_saying_so(platform: Settings, platform_instance: dg.DagsterInstance,
                                                                               alertmanager: Alertmanager) -> None:
    """A materialization without the metadata an alert needs (written by hand, or by an older version) would fail every
    tick at it, and hold every alert recorded before it from delivery: it is passed, saying so, and the next one fires."""
    instance = platform_instance
    cursor, _ = tick(instance, alerts_sensor, None)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=names().asset("drift_report"), metadata={"skipped": False, "dataset_drift": True}))
    _report_drift(instance, platform)
    _, message = tick(instance, alerts_sensor, cursor)
    assert "not read, no alert from it (KeyError: 'champion_version')" in str(message) and "drift: fired" in str(message), message
    assert len(alertmanager.alerts(AlertName.DRIFT)) == 1


def test_the_alerts_sensor_delivers_once_a_tick_whatever_it_recorded(platform: Settings, platform_instance: dg.DagsterInstance,
                                                                     alertmanager: Alertmanager, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review: each record's fire or resolve delivered at once (up to three tries with their timeouts), so a backlog
    of a hundred records behind an unreachable Alertmanager held a tick for minutes, past the sensor's timeout, and its
    cursor was never saved. The records are kept in the outbox, and the tick delivers them once, at its end."""
    from mlplatform.stores.alerting import Alerter

    instance = platform_instance
    cursor, _ = tick(instance, alerts_sensor, None)
    for drifted in (True, False, True):
        _report_drift(instance, platform, drifted)
    posts: list[int] = []
    post = Alerter._post
    monkeypatch.setattr(Alerter, "_post", lambda self, payload: posts.append(len(payload)) or post(self, payload))
    _, message = tick(instance, alerts_sensor, cursor)
    assert str(message).count("drift: fired") == 2 and "no drift: resolved" in str(message), message
    assert posts == [1] and len(alertmanager.alerts(AlertName.DRIFT)) == 1, posts


def test_event_log_unavailable_fails_the_run_after_retries_alerts_and_keeps_the_champion(platform: Settings, platform_instance: dg.DagsterInstance,
                                                                                         alertmanager: Alertmanager, tmp_path: Path) -> None:
    instance = platform_instance
    failures, _ = tick(instance, run_failure_alerts, None)
    successes, _ = tick(instance, run_success_alerts, None)
    before = champion(platform)
    log_file = platform.events_dir / "adult.sqlite"
    aside = tmp_path / "events"
    aside.mkdir()
    for part in platform.events_dir.glob("adult.sqlite*"):
        part.rename(aside / part.name)
    log_file.mkdir()  # a directory where the SQLite file was: the log cannot be opened
    try:  # as the retraining sensor runs it: the selection, in Dagster's one asset job (__ASSET_JOB), as every sensor run
        failed = materialize(instance, ["features", "trained_model", "evaluation_report"], raise_on_error=False)
    finally:
        log_file.rmdir()
        for part in aside.iterdir():
            shutil.move(part, platform.events_dir / part.name)
    assert not failed.success
    with pytest.raises(LaunchError, match=r"^retraining failed \(run .*\): .*event log.* \(Exceeded max_retries of 3\)$"):
        raise_on_failure(failed, "retraining")  # what `mlplatform materialize` says: the cause, not only "Exceeded max_retries of 3"
    retries = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert {e.step_key for e in retries} == {"adult__features"} and len(retries) == 3
    # The outbox unopenable as the failure is handed over (once: Dagster moves the sensor past the run): the alert goes
    # out unrecorded, and the tick fails saying so (the review: it was lost).
    with _outbox_unopenable(platform, tmp_path / "outbox-aside"):
        [reaction] = loop.tick(instance, run_failure_alerts, failures).dagster_run_reactions or []
    assert reaction.error is not None and "not recorded in the alerts outbox" in reaction.error.message, reaction
    assert "sent to Alertmanager once as it is" in reaction.error.message, reaction.error.message
    [alert] = alertmanager.alerts(AlertName.RUN_FAILED)
    assert labels_of(alert) == {"alertname": "MLPlatformRunFailed", "severity": "critical", "dataset": "adult", "model_version": str(before), "job": "adult_retrain"}
    assert "event log" in alert["annotations"]["description"] and failed.run_id in alert["annotations"]["dagster_run"]
    assert champion(platform) == before
    # A landing run succeeding (the same asset job) is no retraining: the alert stays (the review: it was resolved by it).
    materialize(instance, ["raw_events"])
    tick(instance, run_success_alerts, successes)
    assert [labels_of(a)["job"] for a in alertmanager.alerts(AlertName.RUN_FAILED)] == ["adult_retrain"]


def test_instance_enables_run_retries_and_run_monitoring_and_retraining_has_a_max_runtime(instance: dg.DagsterInstance) -> None:
    """The instance Dagster loads from the state folder's dagster.yaml, not just the YAML we wrote."""
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 3600
    assert retrain_job().tags["dagster/max_runtime"] == "3600"
    retention = instance.get_tick_retention_settings(InstigatorType.SENSOR)
    assert (retention[TickStatus.SKIPPED], retention[TickStatus.FAILURE], retention[TickStatus.SUCCESS]) == (2, -1, -1), "skips purged, the rest kept"


@pytest.mark.parametrize("name", ["skipped_ticks_keep_days", "run_history_keep_days"])
@pytest.mark.parametrize("days", ["0", "-1", "1.5", "", "two"])
def test_a_bad_number_of_days_to_keep_is_refused_naming_it(name: str, days: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"MLPLATFORM_{name.upper()}", days)
    with pytest.raises(pydantic.ValidationError, match=name):
        Settings()
