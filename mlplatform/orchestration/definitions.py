"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here."""

import dagster as dg

from mlplatform.orchestration.alerts import alert_sensors, live_quality, live_quality_schedule
from mlplatform.orchestration.assets import all_assets, retraining_assets
from mlplatform.orchestration.checks import all_checks
from mlplatform.orchestration.instance import RETRAIN_RUN_TAGS
from mlplatform.orchestration.monitoring import monitoring_assets, monitoring_checks
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.orchestration.sensors import drift_report_sensor, retraining_sensor

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(*retraining_assets),
    tags={**RETRAIN_RUN_TAGS, "dagster/max_runtime": "3600"},
    description="features → trained_model → evaluation_report: what the retraining sensor launches.",
)

defs = dg.Definitions(
    assets=[*all_assets, live_quality, *monitoring_assets],
    asset_checks=[*all_checks, *monitoring_checks],
    jobs=[retrain_job],
    sensors=[retraining_sensor, drift_report_sensor, *alert_sensors],
    schedules=[live_quality_schedule],
    resources={"platform": PlatformResource()},
    # Steps of one run are a chain: one process per run (not per step) saves an import of the code location per step.
    executor=dg.in_process_executor,
)
