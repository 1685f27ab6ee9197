"""The Dagster resource that hands assets, checks and sensors their model from the composition root."""

import dagster as dg

from mlplatform.root import ModelContext, Platform, platform
from mlplatform.settings import Settings


class PlatformResource(dg.ConfigurableResource):
    """Settings come from `MLPLATFORM_*` variables; these fields override them per deployment or run.

    The Platform (each model's spec, event log, registry) is built once per process by the composition
    root and shared by every run, tick and check that uses the same settings; reading the settings from the
    environment each time costs microseconds and lets a changed variable take effect on the next run.
    """

    state_dir: str | None = None
    retrain_every_n: int | None = None
    retrain_cooldown_seconds: float | None = None

    def platform(self) -> Platform:
        overrides = {k: v for k, v in {"state_dir": self.state_dir, "retrain_every_n": self.retrain_every_n,
                                         "retrain_cooldown_seconds": self.retrain_cooldown_seconds}.items() if v is not None}
        return platform(Settings(**overrides))

    def model(self, name: str) -> ModelContext:
        return self.platform().model(name)
