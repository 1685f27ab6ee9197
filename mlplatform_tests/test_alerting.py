"""Alerts end to end against a real Alertmanager: each kind fired through the real pipeline, read back from its
API v2 with its labels, and resolved when the condition clears; a down Alertmanager never fails the pipeline."""

import dataclasses
import datetime
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlplatform.stores.alerting import (ALERTS_FILE, RELOAD_ALIAS, RELOAD_LOAD, Alert, Alerter, AlertName, Delivery, Severity, run_failed_alert, serving_process,
                                         serving_reload_failed, serving_reload_succeeded)
from mlplatform.stores.eventlog import SERVING_SOURCE, EventLog
from mlplatform.pipeline.live_quality import SERVED, UNSERVED, ServedVersion, Unserved, measure, measure_reading
from mlplatform.domain.features import FeatureTransformer
from mlplatform.domain.training import TrainingConfig, train
from mlplatform.orchestration.names import EVALUATION_REPORT, LIVE_QUALITY_CHECK, ModelNames
from mlplatform_tests.support.loop import retrain_job
from mlplatform_tests.support.processes import wait_until
from mlplatform.domain.keys import CHALLENGER_VERSION, DECISION_META, POSITIVE_CLASS_TAG, PROMOTED, REJECTED
from mlplatform.orchestration.alerts import promoted_in
from mlplatform.stores.registry import Registry
from mlplatform.pipeline.replay import canonical_labels, read_source, write_batches
from mlplatform.serving.champion import ChampionWatcher
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.settings import Settings
from mlplatform.domain.spec import load_spec
from mlplatform.domain.validation import LABEL, validate_frame
from mlplatform_tests.alerting_support import (FIRST_ROWS, Alertmanager, alertmanager, champion, first_rows, labels_of, materialize, platform,
                                              platform_instance, tick)
from mlplatform_tests.conftest import ADULT_SPEC, BIKE_SPEC
from mlplatform_tests.serving_support import register_versions, served_regression_log

__all__ = ["alertmanager", "first_rows", "platform", "platform_instance"]  # fixtures used by name


def _alert(version: int | None = 3) -> Alert:
    return Alert(AlertName.DRIFT, Severity.WARNING, "adult", version, summary="s", description="d", links={"report": "/tmp/r.html"})


def test_alerter_fires_resolves_and_delivers_later_when_alertmanager_was_down(alertmanager: Alertmanager, tmp_path: Path) -> None:
    off = Alerter(None, tmp_path / "off.sqlite")
    assert off.fire(_alert()).error and not (tmp_path / "off.sqlite").exists()

    alerter = Alerter(alertmanager.url, tmp_path / "alerts.sqlite", ttl_seconds=600)
    assert alerter.fire(_alert()).sent == 1
    [got] = alertmanager.alerts(AlertName.DRIFT)
    assert labels_of(got) == {"alertname": "MLPlatformDriftDetected", "severity": "warning", "dataset": "adult", "model_version": "3"}
    assert got["annotations"] == {"summary": "s", "description": "d", "report": "/tmp/r.html"}
    assert alerter.resolve(AlertName.DRIFT, "adult").sent == 1
    assert alertmanager.alerts(AlertName.DRIFT) == []

    alertmanager.stop()
    try:
        down = alerter.fire(_alert(4))
        assert (down.sent, down.pending) == (0, 1) and down.error
        assert alerter.deliver().pending == 1
    finally:
        alertmanager.start()
    assert alerter.deliver().sent == 1
    assert [labels_of(a)["model_version"] for a in alertmanager.alerts(AlertName.DRIFT)] == ["4"]
    alerter.resolve(AlertName.DRIFT, "adult")
    assert alertmanager.alerts(AlertName.DRIFT) == [] and alerter.firing() == []


def test_a_reload_alert_and_its_resolve_leave_in_the_order_they_happened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review: each alert left on a thread of its own, so a recovery's resolve could be recorded before the failure's
    fire, which then stayed firing. Here the fire is slow to record, and the recovery comes right after it."""
    import threading

    import mlplatform.serving.champion as champion_module

    sent: list[str] = []
    both = threading.Event()

    def slow_fire(*args: Any) -> None:
        time.sleep(0.5)
        sent.append("fired")

    def resolve(*args: Any) -> None:
        sent.append("resolved")
        both.set()

    monkeypatch.setattr(champion_module, "serving_reload_failed", slow_fire)
    monkeypatch.setattr(champion_module, "serving_reload_succeeded", resolve)
    settings = Settings(state_dir=tmp_path / "state", alertmanager_url="http://127.0.0.1:1")
    spec = load_spec(settings.dataset_spec)
    watcher = ChampionWatcher(None, spec, interval_s=3600, metrics=ServingMetrics().model(spec.name), settings=settings)  # type: ignore[arg-type]
    watcher._settled()  # a fresh process resolves what an earlier one may have left firing
    assert both.wait(10)
    sent.clear()
    both.clear()
    watcher._failed(1, 2, "cannot load version 2")
    watcher._settled()
    assert both.wait(10) and sent == ["fired", "resolved"], sent


def test_a_serving_process_resolves_its_own_reload_alert_and_those_of_gone_processes_only(tmp_path: Path) -> None:
    """The review: with several serving workers, any worker's start or good reload resolved every reload alert of the
    model, while the worker that could not load the new version still served the old one. Each alert names its process;
    a good reload resolves this process's and those of processes of this host that are gone (a restart's predecessor)."""
    settings = Settings(state_dir=tmp_path / "state", alertmanager_url="http://127.0.0.1:1")
    spec = load_spec(settings.dataset_spec)
    alerter = Alerter(settings.alertmanager_url, settings.state_dir / ALERTS_FILE, attempts=1)
    other = subprocess.Popen(["sleep", "60"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    try:
        for process in (serving_process(), f"{host}:{other.pid}", f"{host}:{gone.pid}", f"elsewhere:{gone.pid}", "unreadable"):
            alerter.fire(Alert(AlertName.SERVING_RELOAD_FAILED, Severity.CRITICAL, spec.name, 2, "s", "d", extra_labels={"process": process}), deliver=False)
        alerter.fire(Alert(AlertName.SERVING_RELOAD_FAILED, Severity.CRITICAL, spec.name, 2, "s", "d"), deliver=False)  # from before the label
        serving_reload_succeeded(settings, spec)
        assert sorted(a.get("process", "") for a in alerter.firing()) == sorted([f"{host}:{other.pid}", f"elsewhere:{gone.pid}"])
    finally:
        other.kill()
        other.wait()
    serving_reload_succeeded(settings, spec)
    assert [a["process"] for a in alerter.firing()] == [f"elsewhere:{gone.pid}"], "another host's processes are its own to resolve"
    # The diff review: a process failing again after each restart piled up an alert per pid; a failure ends those of gone ones.
    alerter.fire(Alert(AlertName.SERVING_RELOAD_FAILED, Severity.CRITICAL, spec.name, 2, "s", "d", extra_labels={"process": f"{host}:{gone.pid}"}), deliver=False)
    serving_reload_failed(settings, spec, 2, "cannot load version 2")
    assert sorted(a["process"] for a in alerter.firing()) == sorted([f"elsewhere:{gone.pid}", serving_process()])


def test_an_outbox_whose_folder_cannot_be_made_sends_the_alert_unrecorded(tmp_path: Path) -> None:
    """The diff review: a state folder that cannot be made (a file in its way) raised OSError, not the SQLite error the
    fallback caught: the alert was neither recorded nor sent, and the caller crashed."""
    (tmp_path / "state").write_text("a file where the state folder should be", encoding="utf-8")
    alerter = Alerter("http://127.0.0.1:1", tmp_path / "state" / "alerts" / ALERTS_FILE, attempts=1)
    delivery = alerter.fire(Alert(AlertName.RUN_FAILED, Severity.CRITICAL, "adult", 1, "s", "d"))
    assert not delivery.recorded and delivery.sent == 0 and "sending it unrecorded failed too" in str(delivery.error), delivery
    assert not alerter.resolve(AlertName.RUN_FAILED, "adult").recorded


def test_a_proxy_that_says_later_keeps_the_alert_and_a_refusal_drops_it(tmp_path: Path) -> None:
    """The review: any 4xx marked the batch delivered, so a proxy's 429 (rate limit) or 408 (timeout) in front of
    Alertmanager dropped alerts; they say "later", as a 5xx does. A real refusal (400: the payload is wrong) still drops."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    answers = [429, 408, 400]

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(answers[0])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        alerter = Alerter(f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "alerts.sqlite", attempts=1)
        for status in (429, 408):
            answers[0] = status
            held = alerter.fire(_alert())
            assert (held.sent, held.pending, held.error) == (0, 1, f"HTTP {status}: "), held
        answers[0] = 400
        assert alerter.deliver() == Delivery(1, 0), "refused: dropped, as before"
    finally:
        server.shutdown()
        server.server_close()


def test_an_alert_fired_and_resolved_between_two_deliveries_still_fires_for_keep_firing_seconds(alertmanager: Alertmanager, tmp_path: Path) -> None:
    """The review: an alert fired and resolved within one alerts tick reached Alertmanager already over, so nobody heard
    of it (a drift report that drifted, then a clean one, between two ticks). It ends keep_firing after its start."""
    kept = Alerter(alertmanager.url, tmp_path / "alerts.sqlite", keep_firing_seconds=Settings().alert_keep_firing_seconds)
    started = time.time()
    kept.fire(Alert(AlertName.DRIFT, Severity.WARNING, "keep-firing", 3, "s", "d"), deliver=False)
    kept.resolve(AlertName.DRIFT, "keep-firing", deliver=False)
    assert kept.deliver().sent == 1 and kept.firing() == []
    [alert] = [a for a in alertmanager.alerts(AlertName.DRIFT) if labels_of(a)["dataset"] == "keep-firing"]
    ends = datetime.datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp()
    assert started + 59 <= ends <= time.time() + 61, (started, ends)
    # Without it (0, as before), and for an alert that fired longer: it ends when it was resolved.
    at_once = Alerter(alertmanager.url, tmp_path / "alerts.sqlite")
    at_once.fire(Alert(AlertName.DRIFT, Severity.WARNING, "keep-firing", 3, "s", "d"), deliver=False)
    at_once.resolve(AlertName.DRIFT, "keep-firing", deliver=False)
    assert at_once.deliver().sent == 1 and [a for a in alertmanager.alerts(AlertName.DRIFT) if labels_of(a)["dataset"] == "keep-firing"] == []


def test_alerts_about_versions_that_no_longer_serve_are_resolved(alertmanager: Alertmanager, tmp_path: Path) -> None:
    """Probe: drift alerts for v1, v3 and v4 fired at once, and v3's live quality alert stayed after v6 was promoted: only
    a report about the same version resolved one, and none about a replaced version comes again."""
    alerter = Alerter(alertmanager.url, tmp_path / "alerts.sqlite", ttl_seconds=600)
    for alert in (_alert(3), _alert(5), Alert(AlertName.LIVE_QUALITY, Severity.WARNING, "adult", 3, summary="s", description="d"),
                  Alert(AlertName.PROMOTION_REFUSED, Severity.WARNING, "adult", 4, summary="s", description="d"), Alert(AlertName.DRIFT, Severity.WARNING, "bike", 3, summary="s", description="d")):
        alerter.fire(alert)
    assert alerter.resolve_other_versions((AlertName.DRIFT, AlertName.LIVE_QUALITY), "adult", "5") == 2
    assert alerter.deliver().pending == 0
    firing = sorted((a["alertname"], a["dataset"], a["model_version"]) for a in alerter.firing())
    assert firing == [("MLPlatformDriftDetected", "adult", "5"), ("MLPlatformDriftDetected", "bike", "3"), ("MLPlatformPromotionRefused", "adult", "4")], firing
    assert sorted(labels_of(a)["model_version"] for a in alertmanager.alerts(AlertName.DRIFT)) == ["3", "5"], "bike's v3, adult's v5"
    assert alertmanager.alerts(AlertName.LIVE_QUALITY) == []
    assert alerter.resolve_other_versions((AlertName.DRIFT, AlertName.LIVE_QUALITY), "adult", "5") == 0
    for name, dataset in ((AlertName.DRIFT, "adult"), (AlertName.DRIFT, "bike"), (AlertName.PROMOTION_REFUSED, "adult")):  # the Alertmanager is shared
        alerter.resolve(name, dataset)
    assert alertmanager.alerts(AlertName.DRIFT) == [] and alertmanager.alerts(AlertName.PROMOTION_REFUSED) == []


ADULT = ModelNames("adult")
alerts_sensor, run_failure_alerts, run_success_alerts = ADULT.alerts_sensor, "run_failure_alerts", "run_success_alerts"


def test_serving_reload_failure_fires_from_the_champion_watcher_and_resolves_on_the_next_good_reload(
        alertmanager: Alertmanager, adult_rows: pd.DataFrame, tmp_path: Path) -> None:
    """The prediction service's own watcher: a promoted version that does not load alerts; a later good one resolves it."""
    settings = Settings(state_dir=tmp_path / "state", alertmanager_url=alertmanager.url, alert_keep_firing_seconds=0)
    settings.ensure_dirs()
    spec = load_spec(settings.dataset_spec)
    good, broken, later = register_versions(settings, spec, adult_rows.iloc[:3000], 3)
    registry = Registry(settings.tracking_uri, settings.artifact_root, spec)
    watcher = ChampionWatcher(registry, spec, interval_s=3600, metrics=ServingMetrics().model(spec.name), settings=settings)
    assert watcher.check().version == good
    location = Path(urlparse(registry.client.get_model_version_download_uri(registry.name, str(broken))).path)
    for booster in location.rglob("booster.txt"):
        booster.write_text("not a LightGBM model", encoding="utf-8")
    registry.promote(broken)
    outcome = watcher.check()
    assert outcome.version == good and outcome.error and f"cannot load version {broken}" in outcome.error
    assert watcher.last_error == outcome.error  # what /readyz says while no version is loaded
    wait_until("the reload failure alert", lambda: len(alertmanager.alerts(AlertName.SERVING_RELOAD_FAILED)) == 1, 30)
    [alert] = alertmanager.alerts(AlertName.SERVING_RELOAD_FAILED)
    assert labels_of(alert) == {"alertname": "MLPlatformServingReloadFailed", "severity": "critical", "dataset": "adult", "model_version": str(broken),
                                "process": serving_process(), "failure": "load"}
    assert f"cannot load version {broken}" in alert["annotations"]["description"]
    registry.promote(later)
    assert watcher.check().version == later and watcher.last_error is None
    wait_until("the reload failure alert to resolve", lambda: alertmanager.alerts(AlertName.SERVING_RELOAD_FAILED) == [], 30)

    # The production probe: the registry unreachable for a while, then back with the same champion (or none): /readyz
    # said the outage's error long after, and the alert stayed firing, as only a new version's load cleared them.
    store = tmp_path / "other" / "mlflow.db"
    store.parent.mkdir()
    watcher.registry = outage = Registry(f"sqlite:///{store}", settings.artifact_root, spec)
    store.write_bytes(b"not a database, as a store whose disk failed reads")
    down = watcher.check()
    assert down.version == later and down.error and "cannot read the champion alias" in down.error and watcher.last_error == down.error
    wait_until("the outage's alert", lambda: len(alertmanager.alerts(AlertName.SERVING_RELOAD_FAILED)) == 1, 30)
    watcher.registry = registry
    assert watcher.check().version == later and watcher.last_error is None, "back, with the version serving: the outage is over"
    wait_until("the outage's alert to resolve", lambda: alertmanager.alerts(AlertName.SERVING_RELOAD_FAILED) == [], 30)

    # The review: the process that fired the alert stopped, and the next one loaded the version fine; whether an alert
    # was firing was this process's memory only, so it stayed firing, re-sent every half hour.
    watcher.registry = outage
    assert watcher.check().error is not None
    wait_until("the alert of the process that stops", lambda: len(alertmanager.alerts(AlertName.SERVING_RELOAD_FAILED)) == 1, 30)
    restarted = ChampionWatcher(registry, spec, interval_s=3600, metrics=ServingMetrics().model(spec.name), settings=settings)
    assert restarted.check().version == later
    wait_until("the restarted process to resolve it", lambda: alertmanager.alerts(AlertName.SERVING_RELOAD_FAILED) == [], 30)


def test_failed_retraining_then_refused_promotion(platform: Settings, platform_instance: dg.DagsterInstance, alertmanager: Alertmanager,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow unavailable during training: retries, a failed run, an alert, champion unchanged; the next good run
    resolves it, and its challenger, refused, raises the promotion alert until a later promotion resolves that."""
    instance = platform_instance
    failures, _ = tick(instance, run_failure_alerts, None)
    successes, _ = tick(instance, run_success_alerts, None)
    cursor, _ = tick(instance, alerts_sensor, None)
    before = champion(platform)

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("MLflow's store cannot be created under a file\n")
    with monkeypatch.context() as mp:
        mp.setenv("MLPLATFORM_MLFLOW_TRACKING_URI", f"sqlite:///{blocked}/mlflow.db")
        failed = retrain_job().execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    retries = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert {e.step_key for e in retries} == {"adult__trained_model"} and len(retries) == 3
    assert instance.get_run_by_id(failed.run_id).tags.get("dagster/will_retry") == "true"  # run retries are on
    tick(instance, run_failure_alerts, failures)
    [alert] = alertmanager.alerts(AlertName.RUN_FAILED)
    assert labels_of(alert) == {"alertname": "MLPlatformRunFailed", "severity": "critical", "dataset": "adult", "model_version": str(before), "job": "adult_retrain"}
    assert failed.run_id in alert["annotations"]["dagster_run"] and "trained_model" in alert["annotations"]["description"]
    assert champion(platform) == before
    from mlplatform.cli.status import collect_status, render_status
    from mlplatform.root import platform as root_platform

    [listed] = [line for line in render_status(collect_status(root_platform().model("adult"), with_dagster=True)).splitlines() if failed.run_id[:8] in line]
    assert ": FAILURE in " in listed and "(adult__trained_model: " in listed and "reason=None" not in listed, "it said 'FAILURE in 0 s reason=None' (the estimation probe)"

    spec = load_spec(platform.dataset_spec)
    write_batches(read_source(spec).iloc[FIRST_ROWS : FIRST_ROWS + 3000], spec, platform.landing_dir, 3000)
    materialize(instance, ["raw_events"])
    monkeypatch.setenv("MLPLATFORM_PROMOTION_MARGIN", "1.0")  # no challenger can win by a whole AUC point
    assert retrain_job().execute_in_process(instance=instance, raise_on_error=False).success
    tick(instance, run_success_alerts, successes)
    assert alertmanager.alerts(AlertName.RUN_FAILED) == []
    cursor, message = tick(instance, alerts_sensor, cursor)
    assert "promotion refused: fired" in str(message)
    [refused] = alertmanager.alerts(AlertName.PROMOTION_REFUSED)
    assert labels_of(refused) == {"alertname": "MLPlatformPromotionRefused", "severity": "warning", "dataset": "adult", "model_version": str(before + 1)}
    assert re.search(rf"/adult-v{before + 1}-[0-9a-f]{{8}}\.html$", refused["annotations"]["report"]) and "margin" in refused["annotations"]["description"]
    assert champion(platform) == before

    monkeypatch.delenv("MLPLATFORM_PROMOTION_MARGIN")  # v2 saw ten times the data of v1: it wins by the default margin
    materialize(instance, ["evaluation_report"])
    tick(instance, alerts_sensor, cursor)
    assert alertmanager.alerts(AlertName.PROMOTION_REFUSED) == []
    assert champion(platform) == before + 1


def test_a_run_that_made_a_champion_before_it_failed_says_so(platform: Settings, platform_instance: dg.DagsterInstance) -> None:
    """The review: a run whose evaluation_report promoted and whose later step failed (estimated_performance, the
    dashboard) was alerted as failed with "the champion is unchanged". The failure sensor reads what the run's
    evaluation_report decided (`promoted_in`) into the alert."""
    adult = ModelNames("adult")

    @dg.op
    def decides_then_fails(context: dg.OpExecutionContext, decision: str) -> None:
        if decision:
            context.log_event(dg.AssetMaterialization(adult.asset(EVALUATION_REPORT), metadata={DECISION_META: decision, CHALLENGER_VERSION: 7}))
        context.log_event(dg.AssetMaterialization(ModelNames("bike_sharing").asset(EVALUATION_REPORT), metadata={DECISION_META: PROMOTED, CHALLENGER_VERSION: 9}))
        raise RuntimeError("estimated_performance: the event log is unreachable")

    @dg.job(name="decided_then_failed")
    def decided_then_failed() -> None:
        decides_then_fails()

    def failed(decision: str, **tags: str) -> str:
        return decided_then_failed.execute_in_process(instance=platform_instance, raise_on_error=False, tags=tags,
                                                      run_config={"ops": {"decides_then_fails": {"inputs": {"decision": decision}}}}).run_id

    def summary(run_id: str) -> str:
        return run_failed_alert(platform, "adult", 6, "adult_retrain", run_id, "boom", will_retry=False, promoted=promoted_in(platform_instance, run_id, adult)).summary

    promoted, rejected = failed(PROMOTED), failed(REJECTED)
    retry = failed("", **{"dagster/root_run_id": promoted, "dagster/parent_run_id": promoted})  # resumed after evaluation_report: decides nothing
    assert summary(promoted) == summary(retry) == "adult: Dagster run of adult_retrain failed after it made v7 champion", "a retry of the run that promoted"
    rerun = failed(REJECTED, **{"dagster/root_run_id": promoted, "dagster/parent_run_id": retry})  # all steps again: its own decision
    assert summary(rejected) == summary(rerun) == "adult: Dagster run of adult_retrain failed; the champion is unchanged", "bike_sharing's promotion is not adult's"
    for run_id in (promoted, rejected, retry, rerun):
        platform_instance.delete_run(run_id)


def _serve(settings: Settings, start: int, count: int, wrong_labels: bool) -> None:
    """What the prediction service does for `count` requests: predict with the champion, log the event with the
    version and prediction, and later record the true label by event id (or the opposite of the prediction)."""
    spec = load_spec(settings.dataset_spec)
    version = champion(settings)
    raw = read_source(spec).iloc[start : start + count]
    events = validate_frame(raw.drop(columns=[spec.label]), spec, generated_id_prefix="served", generated_time_start_us=0).events
    events[LABEL] = None
    predicted = Registry(settings.tracking_uri, settings.artifact_root, spec).load_predictor(version).predict(events)
    log = EventLog.for_dataset(settings.events_dir, spec)
    log.append(events.assign(model_version=str(version), prediction=predicted["prediction"], probability=predicted["probability"]), SERVING_SOURCE)
    classes = spec.classes or []
    labels = predicted["prediction"].map(dict(zip(classes, reversed(classes)))) if wrong_labels else canonical_labels(raw, spec)
    assert not log.add_labels(events["event_id"].tolist(), labels.tolist()).conflicts
    log.close()


def _check_passed(result: dg.ExecuteInProcessResult) -> bool:
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == LIVE_QUALITY_CHECK and evaluation.severity is dg.AssetCheckSeverity.WARN
    return evaluation.passed


def test_the_live_quality_asset_scores_a_landed_stream_on_the_events_its_champion_never_trained_on(
        platform: Settings, platform_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new-user probe, through the asset: a stream landed as files, its champion serving (next to) nothing, had no
    live quality reading. The labelled events landed after the champion's cut-off are scored, and it says so."""
    spec = load_spec(platform.dataset_spec)
    log = EventLog.for_dataset(platform.events_dir, spec)
    served = len(log.served_window(10**6, champion(platform)))
    log.close()
    for key, value in {"MLPLATFORM_LIVE_QUALITY_MIN_EVENTS": str(served + 1), "MLPLATFORM_LIVE_QUALITY_WINDOW": str(served + 300)}.items():
        monkeypatch.setenv(key, value)
    write_batches(read_source(spec).iloc[12_000:12_300], spec, platform.landing_dir, 300, prefix="landed-after")
    result = materialize(platform_instance, ["raw_events", "live_quality"])
    meta = result.asset_materializations_for_node("adult__live_quality")[0].metadata
    assert (meta["scored_on"].value, meta["events"].value) == (UNSERVED, served + 300) and meta["roc_auc"].value > 0.7, meta
    assert meta["quality_events"].value == served + 300 and meta["quality_metric"].value == "roc_auc", "the quality_drop reading too"


def test_the_alerts_sensor_ends_reload_alerts_about_a_version_no_longer_champion_only(platform: Settings, platform_instance: dg.DagsterInstance) -> None:
    """A reload alert names its process; one of another host's process is never known gone, so it ends once the version
    that would not load is no longer champion. One saying the champion alias could not be read is not about that version:
    it stays (the second diff review: ended so, a process stuck on an old model, or serving nothing, went unalerted)."""
    alerter = Alerter.from_settings(platform)
    now = champion(platform)
    for version, failure in ((now + 7, RELOAD_LOAD), (now, RELOAD_LOAD), (now + 7, RELOAD_ALIAS)):
        alerter.fire(Alert(AlertName.SERVING_RELOAD_FAILED, Severity.CRITICAL, "adult", version, "s", "d",
                           extra_labels={"process": f"elsewhere:{version}", "failure": failure}), deliver=False)
    _, message = tick(platform_instance, alerts_sensor, None)
    assert "resolved 1 drift, live quality or serving reload alert(s)" in str(message), message
    left = sorted((a["model_version"], a["failure"]) for a in alerter.firing(AlertName.SERVING_RELOAD_FAILED))
    assert left == sorted([(str(now), RELOAD_LOAD), (str(now + 7), RELOAD_ALIAS)]), left
    for failure in (RELOAD_LOAD, RELOAD_ALIAS):
        alerter.resolve(AlertName.SERVING_RELOAD_FAILED, "adult", failure=failure)


def test_live_quality_below_floor_alerts_even_after_an_alertmanager_outage(platform: Settings, platform_instance: dg.DagsterInstance,
                                                                           alertmanager: Alertmanager, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = platform_instance
    for key, value in {"MLPLATFORM_LIVE_QUALITY_WINDOW": "200", "MLPLATFORM_LIVE_MIN_PRECISION": "0.3", "MLPLATFORM_LIVE_MIN_RECALL": "0.3"}.items():
        monkeypatch.setenv(key, value)
    cursor, _ = tick(instance, alerts_sensor, None)
    _serve(platform, 10_000, 200, wrong_labels=True)

    alertmanager.stop()
    try:
        result = materialize(instance, ["live_quality"])  # the pipeline succeeds with Alertmanager down
        assert not _check_passed(result)
        cursor, message = tick(instance, alerts_sensor, cursor)
        assert "live quality below floor: fired" in str(message) and "pending 1" in str(message)
    finally:
        alertmanager.start()
    cursor, message = tick(instance, alerts_sensor, cursor)  # the next tick retries the alert
    assert "delivered 1" in str(message)
    [alert] = alertmanager.alerts(AlertName.LIVE_QUALITY)
    assert labels_of(alert) == {"alertname": "MLPlatformLiveQualityBelowFloor", "severity": "warning", "dataset": "adult", "model_version": str(champion(platform))}
    assert "precision" in alert["annotations"]["description"] and "recall" in alert["annotations"]["description"]

    _serve(platform, 10_200, 200, wrong_labels=False)
    result = materialize(instance, ["live_quality"])
    assert _check_passed(result)
    meta = result.asset_materializations_for_node("adult__live_quality")[0].metadata
    assert meta["events"].value == 200 and meta["precision"].value >= 0.3 and meta["recall"].value >= 0.3
    tick(instance, alerts_sensor, cursor)
    assert alertmanager.alerts(AlertName.LIVE_QUALITY) == []


def test_a_default_floor_the_champions_own_hold_out_never_met_is_not_checked(platform: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The yeast probe: the 0.5 defaults against a 12-class model's macro averages (or a rare positive class at 0.5) failed
    every reading from the first, on a model that never changed, and kept its alert firing. A default its own hold-out
    was beyond too is left unchecked, saying so; a floor set for the model is checked whatever its hold-out did."""
    from mlplatform.pipeline.live_quality import Bound, bounds, waive_unmet_defaults

    spec = load_spec(platform.dataset_spec)
    _serve(platform, 10_400, 200, wrong_labels=True)
    log = EventLog.for_dataset(platform.events_dir, spec)
    served, never = ServedVersion(champion(platform), spec.positive_class), {"precision": 0.4, "recall": 0.2, "roc_auc": 0.9}
    assert [(b.metric, b.chosen) for b in bounds(platform, spec)] == [("precision", False), ("recall", False)]
    assert measure(platform, spec, log, served, holdout={"precision": 0.7, "recall": 0.6}).below_floor, "defaults it met are checked"
    waived = measure(platform, spec, log, served, holdout=never)
    assert not waived.below_floor and waived.bounds == [] and [b.metric for b in waived.waived] == ["precision", "recall"]
    assert waived.verdict(50, never).startswith("no floor is checked for the live accuracy ")
    assert waived.verdict(50, never).endswith(
        f"(default floors precision >= 0.5, recall >= 0.5 not checked: v{served.version}'s own hold-out precision 0.4000, recall 0.2000 never met "
        "them; to check them, set the model's own in its defs.yaml, loop: {live_min_precision: <value>, live_min_recall: <value>})")
    monkeypatch.setenv("MLPLATFORM_LIVE_MIN_PRECISION", "0.5")  # set for every model: chosen, so checked
    chosen = Settings()
    assert waive_unmet_defaults(bounds(chosen, spec), never) == ([Bound("precision", 0.5, minimum=True)], (Bound("recall", 0.5, minimum=True, chosen=False),))
    set_here = measure(chosen, spec, log, served, holdout=never)
    assert set_here.below_floor and "a floor this model never met, no drop" in set_here.verdict(50, never)
    log.close()


def test_live_quality_of_a_regression_model_against_an_rmse_ceiling(tmp_path: Path) -> None:
    """Regression: predictions logged as text come back as numbers; the RMSE ceiling is the bound; other
    versions' predictions and unlabelled ones are not in the window."""
    spec = load_spec(BIKE_SPEC)
    settings = Settings(state_dir=tmp_path / "state", dataset_spec=BIKE_SPEC, live_max_rmse=5.0, live_quality_min_events=10)
    log = served_regression_log(settings, spec)
    within = measure(settings, spec, log, ServedVersion(3, None))
    assert (within.events, within.enough, within.below_floor) == (40, True, False) and within.metrics["rmse"] == pytest.approx(4.0)
    above = measure(settings.model_copy(update={"live_max_rmse": 3.0}), spec, log, ServedVersion(3, None))
    assert above.below_floor and above.breaches == ["live rmse 4.0000 > ceiling 3.0000"]
    assert measure(settings, spec, log, ServedVersion(2, None)).events == 10
    assert within.verdict(10) == "within floors" and above.verdict(10) == "live rmse 4.0000 > ceiling 3.0000"
    # The yeast probe: a floor the model's own hold-out missed too reads as a fall unless the verdict says it was never met.
    assert above.verdict(10, {"rmse": 3.5, "mae": 2.0}) == ("live rmse 4.0000 > ceiling 3.0000 (v3's own hold-out rmse 3.5000 was beyond it too: a floor "
                                                             "this model never met, no drop; set the model's own in its defs.yaml, loop: {live_max_rmse: <value>})")
    assert above.verdict(10, {"rmse": 2.9}) == above.verdict(10, {}) == "live rmse 4.0000 > ceiling 3.0000", "met on its hold-out: a drop"
    unset = measure(settings.model_copy(update={"live_max_rmse": None}), spec, log, ServedVersion(3, None))
    assert unset.verdict(10) == f"no floor is set for the live {', '.join(f'{m} {unset.metrics[m]:.4g}' for m in sorted(unset.metrics))}: not checked", \
        "it read 'within floors', then named the metrics without their values"


def test_a_regression_champion_that_served_too_few_is_scored_on_later_labelled_events(tmp_path: Path) -> None:
    """The second new-user probe: live_quality failed on every regression stream landed as files (KeyError 'probability'),
    its schedule failing every five minutes: a regression model's predictions made now have no probability column."""
    spec = load_spec(BIKE_SPEC)
    settings = Settings(state_dir=tmp_path / "state", dataset_spec=BIKE_SPEC, live_quality_min_events=50, live_max_rmse=1000.0)
    events = validate_frame(read_source(spec).iloc[:1800], spec, generated_id_prefix="landed", generated_time_start_us=0).events
    log = EventLog.for_dataset(settings.events_dir, spec)
    log.append(events.iloc[:1500], "landing")
    cutoff = log.counts().label_watermark
    champion = train(log.labelled_window(1500), spec, TrainingConfig(min_rows=100, trials=1, num_boost_round=100, early_stopping_rounds=10))
    log.append(events.iloc[1500:], "landing")
    quality = measure(settings, spec, log, ServedVersion(1, None), Unserved(cutoff, lambda: champion.predictor))
    assert (quality.events, quality.scored_on, quality.verdict(50)) == (300, UNSERVED, "within floors") and quality.metrics["rmse"] > 0, quality
    reading = measure_reading(settings, spec, log, ServedVersion(1, None), {"mae": quality.metrics["mae"]}, Unserved(cutoff, lambda: champion.predictor))
    assert not isinstance(reading, str) and (reading.metric, reading.events) == ("mae", 300) and not reading.as_reading("r").dropped(0.05), reading


def test_a_champion_that_served_too_few_is_scored_on_the_labelled_events_it_never_trained_on(adult_rows: pd.DataFrame, tmp_path: Path) -> None:
    """The new-user probe: a stream landed as files alone, never served, had no realized quality, so no live floor and
    no quality_drop. The champion is scored instead on the latest labelled events whose labels came after its training
    cut-off, predicted now; a label turned round there shows, as on served predictions."""
    spec = load_spec(ADULT_SPEC)
    settings = Settings(state_dir=tmp_path / "state", dataset_spec=ADULT_SPEC, live_quality_min_events=100, live_quality_window=400, quality_drop_events=300)
    events = validate_frame(adult_rows.iloc[:2600], spec, generated_id_prefix="landed", generated_time_start_us=0).events
    log = EventLog.for_dataset(settings.events_dir, spec)
    log.append(events.iloc[:2000], "landing")
    cutoff = log.counts().label_watermark
    champion = train(log.labelled_window(2000), spec, TrainingConfig(min_rows=100, trials=1, num_boost_round=200, early_stopping_rounds=10))
    loads: list[int] = []
    unserved = Unserved(cutoff, lambda: loads.append(1) or champion.predictor)  # type: ignore[func-returns-value]
    served = ServedVersion(1, spec.positive_class)
    assert measure(settings, spec, log, served, unserved).events == 0 and loads == [], "nothing after the cut-off: the model is not even loaded"
    later = events.iloc[2000:]
    log.append(later.assign(label=None), "landing")
    log.add_labels(later["event_id"].tolist()[:250], later[LABEL].tolist()[:250])
    quality = measure(settings, spec, log, served, unserved)
    assert (quality.events, quality.enough, quality.scored_on) == (250, True, UNSERVED) and quality.metrics["roc_auc"] > 0.8, quality
    assert quality.verdict(100) in ("within floors", "; ".join(quality.breaches)) and measure(settings, spec, log, served).events == 0, "served alone, as before"
    reading = measure_reading(settings, spec, log, served, {"roc_auc": quality.metrics["roc_auc"]}, unserved)
    assert not isinstance(reading, str) and reading.events == 250 and not reading.as_reading("r").dropped(0.05)
    turned = later.iloc[250:]
    log.add_labels(turned["event_id"].tolist(), [spec.negative_class if v == spec.positive_class else spec.positive_class for v in turned[LABEL]])
    dropped = measure_reading(settings, spec, log, served, {"roc_auc": quality.metrics["roc_auc"]}, unserved)
    assert not isinstance(dropped, str) and dropped.events == 300 and dropped.as_reading("r").dropped(0.05), dropped
    few = measure(settings.model_copy(update={"live_quality_min_events": 1000}), spec, log, served, unserved)
    assert few.verdict(1000) == f"v1: 400 {UNSERVED}, fewer than 1000: no verdict", few.verdict(1000)
    # A model reading history features is not scored so: the log's rows do not hold them.
    historied = dataclasses.replace(champion.predictor, transformer=FeatureTransformer([*champion.predictor.transformer.numeric, "hours-per-week_lag1"], [], []))
    assert measure(settings, spec, log, served, Unserved(cutoff, lambda: historied)).scored_on == SERVED
    # The diff review: a champion whose files cannot be loaded, or whose cut-off is unknown (0), is not scored so either.
    assert measure(settings, spec, log, served, Unserved(cutoff, lambda: None)).scored_on == SERVED
    assert measure(settings, spec, log, served, Unserved(0, lambda: champion.predictor)).scored_on == SERVED
    # Which events is decided on the served count, not on the reading's own window: with quality_drop_events below the
    # floor's minimum, the reading took the unserved events beside a live reading of the served ones.
    more = validate_frame(adult_rows.iloc[2600:2750], spec, generated_id_prefix="served", generated_time_start_us=10**12).events
    predicted = champion.predictor.predict(more)  # served turned round: their AUC is far below the re-predicted events'
    log.append(more.assign(label=None, model_version="1", prediction=predicted["prediction"], probability=1.0 - predicted["probability"]), SERVING_SOURCE)
    log.add_labels(more["event_id"].tolist(), more[LABEL].tolist())
    narrow = settings.model_copy(update={"quality_drop_events": 30})
    assert measure(narrow, spec, log, served, unserved).scored_on == SERVED
    reading = measure_reading(narrow, spec, log, served, {"roc_auc": quality.metrics["roc_auc"]}, unserved)
    assert not isinstance(reading, str) and reading.events == 30 and reading.value < 0.5, reading
    short = narrow.model_copy(update={"live_quality_min_events": 200})  # 150 served, fewer than the minimum: both readings unserved
    reading = measure_reading(short, spec, log, served, {"roc_auc": quality.metrics["roc_auc"]}, unserved)
    assert measure(short, spec, log, served, unserved).scored_on == UNSERVED and not isinstance(reading, str) and reading.value > 0.5, reading


def test_live_quality_reads_a_binary_model_s_probability_as_of_its_own_positive_class(adult_rows: pd.DataFrame, tmp_path: Path) -> None:
    """After the spec's positive_class is flipped, the champion still serves the probability of the class it was trained
    with: read as the new positive class's, its AUC came out inverted and a quality_drop fired on an unchanged model."""
    spec = load_spec(ADULT_SPEC)
    flipped = spec.model_copy(update={"positive_class": spec.negative_class})
    settings = Settings(state_dir=tmp_path / "state", dataset_spec=ADULT_SPEC, live_quality_min_events=10, quality_drop_events=100)
    rows = adult_rows.iloc[:200]
    events = validate_frame(rows.drop(columns=[spec.label]), spec, generated_id_prefix="served", generated_time_start_us=0).events
    truth = canonical_labels(rows, spec)
    positive = (truth == spec.positive_class).to_numpy()
    noise = np.random.default_rng(0).uniform(0.0, 0.6, len(rows))
    probability = np.where(positive, 0.4 + noise, noise)  # of >50K: a model ranking most positives first
    log = EventLog.for_dataset(settings.events_dir, spec)
    log.append(events.assign(label=None, model_version="1", prediction=np.where(probability >= 0.5, spec.positive_class, spec.negative_class),
                             probability=probability), SERVING_SOURCE)
    log.add_labels(events["event_id"].tolist(), truth.tolist())
    served = ServedVersion(1, spec.positive_class)

    as_trained = measure(settings, spec, log, served).metrics
    after_flip = measure(settings, flipped, log, served).metrics
    assert as_trained["roc_auc"] > 0.8
    assert after_flip["roc_auc"] == pytest.approx(as_trained["roc_auc"]), "the same ranking, whichever class is called positive"
    assert after_flip["log_loss"] == pytest.approx(as_trained["log_loss"])
    reference = {"roc_auc": as_trained["roc_auc"]}
    reading, before = (measure_reading(settings, s, log, served, reference) for s in (flipped, spec))
    assert not isinstance(reading, str) and not isinstance(before, str) and reading.value == pytest.approx(before.value)
    assert not reading.as_reading("r").dropped(0.05), "the quality_drop reading of an unchanged model does not drop"

    # What the live_quality asset reads it from: the version's tag, one store read; a version logged before the tag, loaded.
    [version] = register_versions(settings, spec, adult_rows, 1)
    registry = Registry(settings.tracking_uri, settings.artifact_root, spec)
    assert registry.get_version(version).tags[POSITIVE_CLASS_TAG] == ">50K" and registry.probability_of(version) == ">50K"
    registry.client.delete_model_version_tag(registry.name, str(version), POSITIVE_CLASS_TAG)
    assert registry.probability_of(version) == ">50K"



def test_a_run_the_stack_stopped_in_flight_is_a_warning_and_any_other_failure_critical(state: Settings) -> None:
    """The soak probe: Ctrl-C on `mlplatform dev` with runs in flight, and the next start paged critical alerts for them."""
    failed = run_failed_alert(state, "adult", 3, "adult_retrain", "r1", "trained_model: boom", will_retry=True)
    stopped = run_failed_alert(state, "adult", 3, "adult_retrain", "r1", "run worker gone", will_retry=True, stack_stopped=True)
    assert (failed.severity, stopped.severity) == (Severity.CRITICAL, Severity.WARNING)
    assert stopped.summary == "adult: Dagster run of adult_retrain was interrupted: the stack stopped while it ran; the champion is unchanged"
    assert "Dagster will retry the run." in stopped.description
