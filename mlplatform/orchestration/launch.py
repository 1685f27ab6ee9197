"""Running the code location's definitions from Python against a real instance: what `mlplatform materialize`,
the demo, the benchmarks and the tests use, so each runs what the daemon and the UI run."""

from collections.abc import Sequence
from functools import cache

import dagster as dg
from dagster._core.definitions.sensor_definition import SensorExecutionData

from mlplatform.orchestration.names import ModelNames
from mlplatform.orchestration.resources import PlatformResource

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class LaunchError(RuntimeError):
    """A run failed; the message holds its failed steps' errors."""


@cache
def definitions() -> dg.Definitions:
    from mlplatform.orchestration.definitions import defs

    return defs()


def _check(result: dg.ExecuteInProcessResult, what: str) -> dg.ExecuteInProcessResult:
    if not result.success:
        failures = [e.event_specific_data.error.message.strip() for e in result.all_events if e.is_step_failure]  # type: ignore[union-attr]
        raise LaunchError(f"{what} failed (run {result.run_id}): {' | '.join(failures) or 'see the run in the Dagster UI'}")
    return result


def materialize(instance: dg.DagsterInstance, model: str, assets: Sequence[str], tags: dict[str, str] | None = None,
                raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Materialize `assets` (names such as `raw_events`) of `model` in this process, recorded in `instance` like any run."""
    names = ModelNames(model)
    job = definitions().resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(names.assets(*assets)))
    result = job.execute_in_process(instance=instance, tags=tags or {}, run_config=QUIET, raise_on_error=False)
    return _check(result, f"materializing {', '.join(assets)} of {model}") if raise_on_error else result


def tick(instance: dg.DagsterInstance, sensor_name: str, cursor: str | None, platform: PlatformResource | None = None) -> SensorExecutionData:
    """One evaluation of a sensor, as the daemon would make it (with `platform` overriding the resource, if given):
    its run requests, next cursor and skip message."""
    sensor = definitions().resolve_sensor_def(sensor_name)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions(), sensor_name=sensor_name,
                                      resources={"platform": platform or PlatformResource()})
    return sensor.evaluate_tick(context)


def launch(instance: dg.DagsterInstance, model: str, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run what a retraining sensor asked for, in this process, with its tags and run key (the daemon does the same)."""
    job = definitions().resolve_job_def(ModelNames(model).retrain_job)
    result = job.execute_in_process(instance=instance, tags={**request.tags, "dagster/run_key": request.run_key or ""}, run_config=QUIET, raise_on_error=False)
    return _check(result, f"retraining run of {model}")
