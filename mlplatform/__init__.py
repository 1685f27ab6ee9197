"""mlplatform: keeps a LightGBM model fresh on a stream of labelled events.

Telemetry of Dagster, MLflow and Evidently is switched off here, before any of them is imported:
the machines this runs on have no internet and a product should not phone home by default.
"""

import os
import warnings

# Dagster says, at every load of a code location, that what it uses for components (code references, module loaders)
# and sensor owners is beta or preview: about Dagster's own API, nothing a user of the platform can act on, and about
# fifty lines of every command's output.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)", module=r"dagster\.")

TELEMETRY_OFF = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
}
for _name, _value in {**TELEMETRY_OFF, "GIT_PYTHON_REFRESH": "quiet", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"


COMPONENTS = ("RetrainingLoop",)


def __dir__() -> list[str]:
    """Dagster's component registry lists a module's members by dir(): the component type is one of them."""
    return sorted({*globals(), *COMPONENTS})


def __getattr__(name: str) -> object:
    """`mlplatform.RetrainingLoop`, the component type models' defs.yaml name, imported (with Dagster) only when asked for."""
    if name in COMPONENTS:
        from mlplatform.orchestration.component import RetrainingLoop

        return RetrainingLoop
    raise AttributeError(name)
