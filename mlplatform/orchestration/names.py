"""Names of one model's definitions: asset keys, group, jobs, sensors, schedules, all prefixed by the model.

Defined here once, so the component, the CLI, the demo, the benchmarks and the tests agree on them.
"""

from dataclasses import dataclass

import dagster as dg

from mlplatform.domain.keys import CELERY_STEP_PRIORITY_TAG, PRIORITY_TAG
from mlplatform.domain.spec import dagster_name

RAW_EVENTS = "raw_events"
FEATURES = "features"
TRAINED_MODEL = "trained_model"
EVALUATION_REPORT = "evaluation_report"
DRIFT_REPORT = "drift_report"
DRIFT_DASHBOARD = "drift_dashboard"
RETRAINING_TRIGGER = "retraining_trigger"
LIVE_QUALITY = "live_quality"
ESTIMATED_PERFORMANCE = "estimated_performance"
RETRAINING = (FEATURES, TRAINED_MODEL, EVALUATION_REPORT)
# What the drift report sensor requests: the report, then the policy on its verdict, the retraining it calls for (skipped
# when it calls for none), and what is off that path (the estimate, the realized quality, the report in Evidently's
# workspace). live_quality rides along so quality_drop reads the champion every `drift_every_n_events` events, not only
# on its 5-minute schedule: a bad promotion served 5,000 events at 0.535 accuracy before its first reading (the probe).
DRIFT_RUN = (DRIFT_REPORT, RETRAINING_TRIGGER, *RETRAINING, ESTIMATED_PERFORMANCE, LIVE_QUALITY, DRIFT_DASHBOARD)
ALL_ASSETS = (RAW_EVENTS, *RETRAINING, DRIFT_REPORT, RETRAINING_TRIGGER, DRIFT_DASHBOARD, LIVE_QUALITY, ESTIMATED_PERFORMANCE)
# Step order inside a run (Dagster's `dagster/priority` op tag, higher first): the drift report path to a new champion before
# what can wait, so the in-process executor runs drift_report → retraining_trigger → features → … first; the Celery executor
# reads its own tag, one above its default.
CRITICAL_STEP = {PRIORITY_TAG: "1", CELERY_STEP_PRIORITY_TAG: "6"}

SET_CHAMPION_JOB_SUFFIX = "_set_champion"
QUALITY_FLOOR_CHECK = "quality_floor"
LIVE_QUALITY_CHECK = "live_quality_floor"
ESTIMATE_FLOOR_CHECK = "estimate_floor"
ESTIMATE_TRUST_CHECK = "estimate_trust"


@dataclass(frozen=True)
class ModelNames:
    """Everything Dagster calls one model's things; `model` is the spec's name (`bike-sharing`)."""

    model: str

    @property
    def prefix(self) -> str:
        return dagster_name(self.model)

    def asset(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([self.prefix, name])

    def assets(self, *names: str) -> list[dg.AssetKey]:
        return [self.asset(n) for n in names]

    @property
    def group(self) -> str:
        return self.prefix

    @property
    def retrain_job(self) -> str:
        return f"{self.prefix}_retrain"

    @property
    def champion_job(self) -> str:
        return f"{self.prefix}{SET_CHAMPION_JOB_SUFFIX}"

    @property
    def retraining_sensor(self) -> str:
        return f"{self.prefix}_retraining_sensor"

    @property
    def drift_sensor(self) -> str:
        return f"{self.prefix}_drift_report_sensor"

    @property
    def landing_sensor(self) -> str:
        return f"{self.prefix}_landing_sensor"

    @property
    def alerts_sensor(self) -> str:
        return f"{self.prefix}_alerts_sensor"

    @property
    def live_quality_schedule(self) -> str:
        return f"{self.prefix}_live_quality_schedule"


def model_of_asset(key: dg.AssetKey) -> str | None:
    """The Dagster name of the model an asset key belongs to (its first path element), if it has a prefix."""
    return key.path[0] if len(key.path) > 1 else None
