"""Driving the code location's real definitions in tests: materialize, tick a sensor, launch a retraining.

The same calls as `mlplatform materialize`, the demo and the benchmarks (mlplatform.orchestration.launch),
with the model (adult unless told) and raise_on_error chosen per test.
"""

from collections.abc import Sequence

import dagster as dg
from dagster._core.definitions.sensor_definition import SensorExecutionData

from mlplatform.orchestration import launch
from mlplatform.orchestration.names import ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.root import ModelContext, platform

ADULT = "adult"
BIKE = "bike-sharing"
LOOP = ["raw_events", "features", "trained_model", "evaluation_report"]
RETRAIN = LOOP[1:]


def model(name: str = ADULT) -> ModelContext:
    """The model as the composition root builds it from the environment the test set."""
    return platform().model(name)


def names(name: str = ADULT) -> ModelNames:
    return ModelNames(name)


def materialize(instance: dg.DagsterInstance, assets: Sequence[str], name: str = ADULT, raise_on_error: bool = False,
                tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    return launch.materialize(instance, name, assets, tags=tags, raise_on_error=raise_on_error)


def tick(instance: dg.DagsterInstance, sensor_name: str, cursor: str | None, resource: PlatformResource | None = None) -> SensorExecutionData:
    return launch.tick(instance, sensor_name, cursor, resource)


def job(name: str) -> dg.JobDefinition:
    return launch.definitions().resolve_job_def(name)


def retrain_job(name: str = ADULT) -> dg.JobDefinition:
    return job(ModelNames(name).retrain_job)


def failures(result: dg.ExecuteInProcessResult) -> str:
    return " | ".join(e.event_specific_data.error.message for e in result.all_events if e.is_step_failure)  # type: ignore[union-attr]
