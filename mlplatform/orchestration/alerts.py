"""Someone is told: live quality of the champion, and the sensors that turn what happens into Alertmanager alerts.

- `live_quality` (asset, group monitoring) scores the champion on its labelled served predictions; its
  WARN check `live_quality_floor` fails below the configured floors.
- `alerts_sensor` reads new materializations of drift_report, evaluation_report and live_quality and
  fires or resolves the matching alert; every tick it also delivers what the outbox still holds.
- `run_failure_alerts` fires when any run of this code location fails; `run_success_alerts` resolves
  that job's failure alert when one of its runs succeeds.
Sending never raises: a down Alertmanager shows up as a log line and a pending count, not a failed run.
"""

import json

from typing import Optional, Protocol

import dagster as dg

from mlplatform.stores.alerting import Alerter, AlertName, drift_alert, live_quality_alert, promotion_refused_alert, run_failed_alert
from mlplatform.pipeline.live_quality import measure
from mlplatform.orchestration.assets import EVALUATION_REPORT, EXTERNAL_RETRY, RAW_EVENTS
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.orchestration.sensors import champion_state
from mlplatform.orchestration.monitoring import DRIFT_REPORT, SKIPPED_KEY
from mlplatform.settings import Settings

MONITORING = "monitoring"
LIVE_QUALITY = dg.AssetKey("live_quality")
LIVE_QUALITY_CHECK = "live_quality_floor"
ALERTS_SENSOR = "alerts_sensor"
WATCHED = (DRIFT_REPORT, EVALUATION_REPORT, LIVE_QUALITY)
WILL_RETRY_TAG = "dagster/will_retry"  # set by the instance on a failed run when run retries will re-launch it
BATCH = 100


@dg.asset(
    deps=[RAW_EVENTS],
    group_name=MONITORING,
    kinds={"python", "sqlite"},
    retry_policy=EXTERNAL_RETRY,
    check_specs=[dg.AssetCheckSpec(LIVE_QUALITY_CHECK, asset="live_quality",
                                   description="The champion's live precision/recall (or RMSE) on labelled served predictions meets its floor.")],
    description="The champion scored on its latest labelled served predictions (a sliding window of "
    "`live_quality_window` events): how good the model is now, not on the past hold-out.",
)
def live_quality(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
    settings, spec, log = platform.get_settings(), platform.get_spec(), platform.get_event_log()
    champion = platform.get_registry().champion()
    if champion is None:
        return dg.MaterializeResult(
            metadata={"model_version": 0, "events": 0, "verdict": "no champion yet"},
            check_results=[dg.AssetCheckResult(check_name=LIVE_QUALITY_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN, description="no champion yet")],
        )
    quality = measure(settings, spec, log, int(champion.version))
    if not quality.enough:
        verdict = f"{quality.events} labelled served predictions of v{quality.model_version}, fewer than {settings.live_quality_min_events}: no verdict"
    else:
        verdict = "; ".join(quality.breaches) or "within floors"
    context.log.info(verdict)
    floors = {b.metric: (">= " if b.minimum else "<= ") + str(b.value) for b in quality.bounds}
    return dg.MaterializeResult(
        metadata={
            "model_version": quality.model_version,
            "events": quality.events,
            **quality.metrics,
            "enough_events": quality.enough,
            "below_floor": quality.below_floor,
            "verdict": verdict,
            "floors": dg.MetadataValue.json(floors),
            "window_start": quality.first_event_time or 0,
            "window_end": quality.last_event_time or 0,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=LIVE_QUALITY_CHECK,
                passed=not quality.below_floor,
                severity=dg.AssetCheckSeverity.WARN,
                description=verdict,
                metadata={"events": quality.events, **quality.metrics},
            )
        ],
    )


live_quality_schedule = dg.ScheduleDefinition(
    name="live_quality_schedule",
    target=dg.AssetSelection.assets(LIVE_QUALITY),
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-scores the champion on its latest labelled served predictions every five minutes.",
)


def _on_materialization(settings: Settings, alerter: Alerter, dataset: str, record: dg.EventLogRecord) -> str:
    """Fire or resolve the alert this materialization calls for; returns what was done, for the tick's log."""
    materialization = record.asset_materialization
    assert materialization is not None
    meta = {k: v.value for k, v in materialization.metadata.items()}
    key, run_id = materialization.asset_key, record.run_id
    if key == DRIFT_REPORT:
        if meta.get(SKIPPED_KEY, True):
            return f"drift report skipped ({meta.get('skip_reason', 'no reason')})"
        if not meta["dataset_drift"]:
            alerter.resolve(AlertName.DRIFT, dataset)
            return "no drift: resolved"
        alerter.fire(drift_alert(settings, dataset, int(str(meta["champion_version"])), float(str(meta["drift_share"])),
                                 str(meta["drifted_column_names"]), str(meta["report_path"]), run_id))
        return "drift: fired"
    if key == EVALUATION_REPORT:
        if meta.get("decision") == "promoted":
            alerter.resolve(AlertName.PROMOTION_REFUSED, dataset)
            return "promoted: resolved"
        champion = int(str(meta.get("champion_version", 0))) or None
        alerter.fire(promotion_refused_alert(settings, dataset, int(str(meta["challenger_version"])), champion, str(meta.get("reason", "")),
                                             str(meta.get("report_path", "")), run_id))
        return "promotion refused: fired"
    if meta.get("below_floor"):
        alerter.fire(live_quality_alert(settings, dataset, str(meta["model_version"]), str(meta["verdict"]).split("; "), int(str(meta["events"])), run_id))
        return "live quality below floor: fired"
    if meta.get("enough_events"):
        alerter.resolve(AlertName.LIVE_QUALITY, dataset)
        return "live quality within floors: resolved"
    return "live quality without a verdict"


@dg.sensor(
    name=ALERTS_SENSOR,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Alerts on drift, refused promotions and live quality below its floor (resolved when the next "
    "materialization says the condition cleared), and re-delivers alerts Alertmanager has not received yet.",
)
def alerts_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
    settings = platform.get_settings()
    alerter = Alerter.from_settings(settings)
    if not alerter.enabled:
        return dg.SensorResult(skip_reason="alerting is off: set MLPLATFORM_ALERTMANAGER_URL", cursor=context.cursor)
    dataset = platform.get_spec().name
    cursor: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    done = []
    for key in WATCHED:
        name = key.to_user_string()
        if name in cursor:
            records = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor[name]), limit=BATCH, ascending=True).records
        else:  # first tick: only the current state matters, not the history
            records = context.instance.fetch_materializations(key, limit=1).records
        for record in records:
            done.append(f"{name}: {_on_materialization(settings, alerter, dataset, record)}")
            cursor[name] = record.storage_id
        cursor.setdefault(name, 0)
    delivery = alerter.deliver()
    done.append(f"delivered {delivery.sent}, pending {delivery.pending}" + (f" ({delivery.error})" if delivery.error else ""))
    return dg.SensorResult(skip_reason="; ".join(done), cursor=json.dumps(cursor))


class ErrorInfo(Protocol):
    """The shape of Dagster's serialized step error: message, exception class and the exception it came from."""

    message: str
    cls_name: str | None
    cause: Optional["ErrorInfo"]


DAGSTER_ERRORS = ("Dagster", "RetryRequested")


def _root_cause(error: ErrorInfo) -> str:
    """What actually went wrong: after retries the step error is Dagster's "Exceeded max_retries"; the
    platform's own exception (which names the file or store) is the first cause that is not Dagster's."""
    outer = error.message.strip().splitlines()[0]
    cause: ErrorInfo | None = error
    while cause is not None and (cause.cls_name or "").startswith(DAGSTER_ERRORS):
        cause = cause.cause
    if cause is None or cause is error:
        return outer
    return f"{cause.message.strip().splitlines()[0]} ({outer})"


@dg.run_failure_sensor(
    name="run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when a run of this code location fails (retraining, ingestion, any materialization).",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, platform: PlatformResource) -> None:
    settings = platform.get_settings()
    run = context.dagster_run
    steps = [f"{e.step_key}: {_root_cause(e.event_specific_data.error)}"  # type: ignore[union-attr]
             for e in context.get_step_failure_events() if e.event_specific_data and e.event_specific_data.error]  # type: ignore[union-attr]
    error = ("; ".join(steps) or context.failure_event.message or "run failed")[:1000]
    alert = run_failed_alert(settings, platform.get_spec().name, champion_state(context.instance)[0], run.job_name, run.run_id, error,
                             will_retry=run.tags.get(WILL_RETRY_TAG) == "true")
    delivery = Alerter.from_settings(settings).fire(alert)
    context.log.info(f"run {run.run_id} failed: alert {alert.name} delivered {delivery.sent}, pending {delivery.pending}")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="run_success_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Resolves a job's run-failure alert when a run of that job succeeds.",
)
def run_success_alerts(context: dg.RunStatusSensorContext, platform: PlatformResource) -> None:
    settings = platform.get_settings()
    Alerter.from_settings(settings).resolve(AlertName.RUN_FAILED, platform.get_spec().name, job=context.dagster_run.job_name)


alert_sensors = [alerts_sensor, run_failure_alerts, run_success_alerts]
