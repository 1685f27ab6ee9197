"""The retraining sensor: counts and the latest drift verdict in, at most one run request per trigger out."""


import time

import dagster as dg

from mlplatform.orchestration.assets import CHAMPION_CUTOFF_KEY, EVALUATION_REPORT, latest_metadata, retraining_assets
from mlplatform.orchestration.instance import RETRAIN_TAG
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.policy import Cursor, Observation, PolicyConfig, decide

DRIFT_REPORT = dg.AssetKey("drift_report")
SENSOR_NAME = "retraining_sensor"
LAUNCHED_BY_TAG = "mlplatform/launched_by"


def _drift_state(instance: dg.DagsterInstance) -> tuple[bool | None, float | None, str | None]:
    event = instance.get_latest_materialization_event(DRIFT_REPORT)
    if event is None or event.asset_materialization is None:
        return None, None, None
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    detected = meta.get("dataset_drift")
    share = meta.get("drift_share")
    return (None if detected is None else bool(detected)), (None if share is None else float(str(share))), str(event.storage_id)


def _recover_cursor(instance: dg.DagsterInstance) -> Cursor:
    """Rebuild the cursor from the newest run this sensor launched, so a lost cursor never repeats a run."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: SENSOR_NAME}), limit=1)
    if not runs:
        return Cursor()
    tags = runs[0].tags
    return Cursor(last_trigger_seq=int(tags.get("mlplatform/label_watermark", 0)), last_trigger_time=float(tags.get("mlplatform/triggered_at", 0)))


@dg.sensor(
    name=SENSOR_NAME,
    asset_selection=retraining_assets,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Retrains (features → trained_model → evaluation_report) when N new labelled events arrived "
    "since the champion's cut-off, or when the latest drift report says drift and enough new labels exist.",
)
def retraining_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
    settings = platform.get_settings()
    counts = platform.get_event_log().counts()
    evaluation = latest_metadata(context.instance, EVALUATION_REPORT)
    champion_cutoff = None
    if evaluation and int(str(evaluation.get("champion_version", 0))):
        champion_cutoff = int(str(evaluation.get(CHAMPION_CUTOFF_KEY, 0)))
    detected, share, report_id = _drift_state(context.instance)
    cursor, was_reset = Cursor.from_json(context.cursor)
    if was_reset or not context.cursor:
        cursor = _recover_cursor(context.instance)
    now = time.time()
    trigger, next_cursor, why = decide(
        Observation(counts.label_watermark, champion_cutoff, now, detected, share, report_id),
        cursor,
        PolicyConfig(settings.retrain_every_n, settings.min_new_labelled_for_drift, settings.retrain_cooldown_seconds),
    )
    if trigger is None:
        return dg.SensorResult(skip_reason=why, cursor=next_cursor.to_json())
    tags = {**trigger.tags, RETRAIN_TAG: "1", LAUNCHED_BY_TAG: SENSOR_NAME, "mlplatform/triggered_at": f"{now:.3f}"}
    context.log.info(why)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=trigger.run_key, tags=tags)], cursor=next_cursor.to_json())
