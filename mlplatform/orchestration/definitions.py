"""The code location: every model declared under `mlplatform/defs/` (one RetrainingLoop component each), plus
what is shared by all of them. `dagster dev -w workspace.yaml` and `dg dev` load `defs` from here."""

import dagster as dg

from mlplatform.orchestration.alerts import run_alert_sensors
from mlplatform.orchestration.io import RunScopedIOManager
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.root import platform
from mlplatform.settings import REPO_ROOT


@dg.definitions
def defs() -> dg.Definitions:
    platform()  # a bad or duplicate model declaration fails here, naming its defs.yaml, before Dagster reads any
    resource = PlatformResource()
    shared = dg.Definitions(
        sensors=run_alert_sensors,
        resources={"platform": resource, "handover": RunScopedIOManager(platform=resource)},
        # Steps of one run are a chain: one process per run (not per step) saves an import of the code location per step.
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(dg.load_from_defs_folder(project_root=REPO_ROOT), shared)
