"""The code location: every model declared under `mlplatform/defs/` (one RetrainingLoop component each), plus
what is shared by all of them. `dagster dev -w workspace.yaml` and `dg dev` load `defs` from here."""

import dagster as dg

from mlplatform.orchestration.alerts import run_alert_sensors
from mlplatform.orchestration.console import console
from mlplatform.orchestration.executor import run_executor
from mlplatform.orchestration.io import RunScopedIOManager
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.orchestration.retention import run_history_retention_job, run_history_schedule
from mlplatform.root import platform
from mlplatform.settings import REPO_ROOT


@dg.definitions
def defs() -> dg.Definitions:
    settings = platform().settings  # a bad or duplicate model declaration fails here, naming its defs.yaml, before Dagster reads any
    resource = PlatformResource()
    shared = dg.Definitions(
        sensors=run_alert_sensors,
        jobs=[run_history_retention_job],
        schedules=[run_history_schedule],
        resources={"platform": resource, "handover": RunScopedIOManager(platform=resource)},
        executor=run_executor(settings),
        loggers={"console": console},  # what a command's QUIET run config sets; the daemon's runs log to Dagster's own
    )
    # The defs folder alone: `load_from_defs_folder` also builds a catalogue of every installed component type (JSON
    # schemas and sample YAML of each, for the UI's component docs), which no run uses and every process that loads the
    # code location paid for: a third of `defs()` on each run worker's start (bench_reaction.py).
    tree = dg.ComponentTree.for_project(REPO_ROOT)
    return dg.Definitions.merge(tree.build_defs(tree.defs_module_path), shared)
