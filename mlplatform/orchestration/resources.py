"""The Dagster resource that hands assets, checks and sensors their model from the composition root."""

from pathlib import Path

import dagster as dg
from pydantic import ValidationError

from mlplatform.orchestration.instance import stack_stopping
from mlplatform.root import ModelContext, Platform, platform
from mlplatform.settings import Settings, SettingsError, env_name


class PlatformResource(dg.ConfigurableResource):
    """Settings come from `MLPLATFORM_*` variables; these fields stand in for those variables per deployment or run
    (the run config's `resources.platform.config`). A model's own `loop:` in its defs.yaml still wins over both, as it
    wins over the environment: it is that model's setting, these are every model's default.

    The Platform (each model's spec, event log, registry) is built once per process by the composition
    root and shared by every run, tick and check that uses the same settings; reading the settings from the
    environment each time costs microseconds and lets a changed variable take effect on the next run.
    """

    state_dir: str | None = None
    retrain_every_n: int | None = None
    min_new_labelled_for_drift: int | None = None
    retrain_cooldown_seconds: float | None = None

    def platform(self) -> Platform:
        """The platform of these settings; a run config that cannot hold fails once, naming the field (a negative
        cool-down had failed inside pydantic, retried three times, then run again by the daemon)."""
        overrides = {k: v for k, v in {"state_dir": self.state_dir, "retrain_every_n": self.retrain_every_n, "min_new_labelled_for_drift": self.min_new_labelled_for_drift,
                                         "retrain_cooldown_seconds": self.retrain_cooldown_seconds}.items() if v is not None}
        if self.state_dir is not None and not Path(self.state_dir).expanduser().is_dir():
            raise dg.Failure(description=f"resources.platform.config.state_dir: {self.state_dir} is not a folder; a run pointed at a state that does not "
                                         "exist would start an empty event log and registry beside the ones serving reads", allow_retries=False)
        try:
            settings = Settings(**overrides)
        except ValidationError as exc:
            problems = "; ".join(f"{_source(str(e['loc'][0]) if e['loc'] else '', overrides)}: {e['msg']}" for e in exc.errors())
            raise dg.Failure(description=problems, allow_retries=False) from None
        except SettingsError as exc:  # an MLPLATFORM_* variable that names no setting, in the run worker's environment: no retry mends it
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        return platform(settings)

    def model(self, name: str) -> ModelContext:
        return self.platform().model(name)

    def for_step(self, name: str) -> ModelContext:
        """The model a step (an asset, a check, an op) works on, from `step_platform`."""
        return self.step_platform().model(name)

    def step_platform(self) -> Platform:
        """The platform a step works on: no step starts in a run whose stack is stopping. A step reading an input was
        stopped so by the IO manager, and every other started anyway: after `dev` was killed, its orphaned run went on
        to `estimated_performance` and retried `drift_report` with no stack (the operator probe)."""
        found = self.platform()
        stopping = stack_stopping(found.settings.dagster_home)
        if stopping is not None:
            raise dg.Failure(description=stopping, allow_retries=False)
        return found


def _source(field: str, overrides: dict[str, object]) -> str:
    """Where a refused value came from: the run's resource config, or the environment."""
    return f"resources.platform.config.{field}" if field in overrides else env_name(field)
