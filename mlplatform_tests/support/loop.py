"""Driving the code location's real definitions in tests: materialize, tick a sensor, launch a retraining.

The same calls as `mlplatform materialize`, the demo and the benchmarks (mlplatform.orchestration.launch),
with the model (adult unless told) and raise_on_error chosen per test.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg
from dagster._cli.job import _create_run
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.workspace.context import BaseWorkspaceRequestContext, WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from mlplatform.cli.dev import WORKSPACE
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


@contextmanager
def code_location(instance: dg.DagsterInstance) -> Iterator[BaseWorkspaceRequestContext]:
    """The workspace as the daemon and the webserver load it (a code server of this process, from workspace.yaml)."""
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(WORKSPACE)])) as process:
        yield process.create_request_context()


def create_retrain_run(instance: dg.DagsterInstance, workspace: BaseWorkspaceRequestContext, name: str = ADULT) -> str:
    """A retraining run created as the UI creates one (NOT_STARTED, with its code origin), for the test to submit or launch."""
    location = workspace.get_code_location("mlplatform")
    [repository] = location.get_repositories().values()
    job = repository.get_full_job(names(name).retrain_job)
    return _create_run(instance=instance, code_location=location, remote_repo=repository, remote_job=job, run_config={}, tags={},
                       op_selection=None, run_id=None).run_id
