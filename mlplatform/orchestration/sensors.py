"""Sensors: retraining (counts and the latest drift verdict in, at most one run per trigger out) and drift reports every M events.

Both ticks read O(1) counters of the event log and the latest materialization metadata only: no Evidently,
no scans, so a tick costs the same with 10k or 10M events in the log (benchmarks/bench_sensor_tick.py).
"""


import time

import dagster as dg

from mlplatform.orchestration.assets import CHAMPION_CUTOFF_KEY, EVALUATION_REPORT, retraining_assets
from mlplatform.orchestration.instance import RETRAIN_RUN_TAGS
from mlplatform.orchestration.monitoring import DRIFT_REPORT, SKIPPED_KEY, drift_report
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.domain.policy import DRIFT_REPORT_TAG, Cursor, Observation, PolicyConfig, decide

SENSOR_NAME = "retraining_sensor"
DRIFT_SENSOR_NAME = "drift_report_sensor"
LAUNCHED_BY_TAG = "mlplatform/launched_by"
TRIGGERED_AT_TAG = "mlplatform/triggered_at"

__all__ = ["DRIFT_REPORT", "DRIFT_SENSOR_NAME", "LAUNCHED_BY_TAG", "SENSOR_NAME", "drift_report_sensor", "retraining_sensor"]


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[str, dict[str, object]] | None:
    """Storage id and metadata values of the asset's latest materialization: one indexed query, the cheapest read there is."""
    records = instance.fetch_materializations(key, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    return str(records[0].storage_id), {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def champion_state(instance: dg.DagsterInstance) -> tuple[int | None, int | None]:
    """The champion version and its label_seq cut-off from the latest evaluation, or (None, None) without a champion."""
    latest = _latest(instance, EVALUATION_REPORT)
    if latest is None or not int(str(latest[1].get("champion_version", 0))):
        return None, None
    return int(str(latest[1]["champion_version"])), int(str(latest[1].get(CHAMPION_CUTOFF_KEY, 0)))


def drift_state(instance: dg.DagsterInstance, champion_version: int | None) -> tuple[bool | None, float | None, str | None, str]:
    """Drift verdict, share, report id and, without a usable verdict, why: only a real report about the current champion counts."""
    latest = _latest(instance, DRIFT_REPORT)
    if latest is None:
        return None, None, None, "no drift report yet"
    report_id, meta = latest
    if meta.get(SKIPPED_KEY, True):
        return None, None, report_id, f"latest drift report was skipped: {meta.get('skip_reason', 'no reason recorded')}"
    about = int(str(meta.get("champion_version", 0)))
    if about != champion_version:
        return None, None, report_id, f"latest drift report is about v{about}, not the champion v{champion_version}: waiting for a new one"
    return bool(meta["dataset_drift"]), float(str(meta["drift_share"])), report_id, ""


def _recover_cursor(instance: dg.DagsterInstance) -> Cursor:
    """Rebuild the cursor from the newest run this sensor launched, so a lost cursor never repeats a run."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: SENSOR_NAME}), limit=1)
    if not runs:
        return Cursor()
    tags = runs[0].tags
    return Cursor(
        last_trigger_seq=int(tags.get("mlplatform/label_watermark", 0)),
        last_trigger_time=float(tags.get(TRIGGERED_AT_TAG, 0)),
        last_drift_report=tags.get(DRIFT_REPORT_TAG),
    )


# A tick reads counters only (~60 ms, flat in the log's size: bench_sensor_tick.py), so ticking every 5 s is cheap and
# keeps the wait for the next tick a small part of the reaction time (bench_reaction.py).
@dg.sensor(
    name=SENSOR_NAME,
    asset_selection=retraining_assets,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="Retrains (features → trained_model → evaluation_report) when N new labelled events arrived "
    "since the champion's cut-off, or when the latest drift report says drift and enough new labels exist.",
)
def retraining_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
    settings = platform.get_settings()
    counts = platform.get_event_log().counts()
    champion_version, champion_cutoff = champion_state(context.instance)
    drift = drift_state(context.instance, champion_version)
    cursor, was_reset = Cursor.from_json(context.cursor)
    if was_reset or not context.cursor:
        cursor = _recover_cursor(context.instance)
    now = time.time()
    trigger, next_cursor, why = decide(
        Observation(counts.label_watermark, champion_cutoff, now, *drift),
        cursor,
        PolicyConfig(settings.retrain_every_n, settings.min_new_labelled_for_drift, settings.retrain_cooldown_seconds),
    )
    if trigger is None:
        return dg.SensorResult(skip_reason=why, cursor=next_cursor.to_json())
    tags = {**trigger.tags, **RETRAIN_RUN_TAGS, LAUNCHED_BY_TAG: SENSOR_NAME, TRIGGERED_AT_TAG: f"{now:.3f}"}
    context.log.info(why)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=trigger.run_key, tags=tags)], cursor=next_cursor.to_json())


def _events_at_last_request(cursor: str | None) -> int | None:
    """The event total the previous report was requested at; None when the cursor is absent or unreadable."""
    try:
        return int(cursor) if cursor else None
    except ValueError:
        return None


# Its tick reads one counter: every 10 s costs nothing, and reports are still requested only every M events.
@dg.sensor(
    name=DRIFT_SENSOR_NAME,
    asset_selection=[drift_report],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="Requests a new drift_report every `drift_every_n_events` new events (served or ingested), once there is a champion.",
)
def drift_report_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
    every = platform.get_settings().drift_every_n_events
    total = platform.get_event_log().counts().total
    champion_version, _ = champion_state(context.instance)
    if champion_version is None:
        return dg.SensorResult(skip_reason="no champion yet: drift is measured against the champion's training window")
    last = _events_at_last_request(context.cursor)
    if last is not None and total - last < every:
        return dg.SensorResult(skip_reason=f"{total - last} new events since the last drift report request; {every} needed")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"drift-report-v{champion_version}-{total}", tags={LAUNCHED_BY_TAG: DRIFT_SENSOR_NAME})],
        cursor=str(total),
    )
