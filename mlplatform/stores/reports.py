"""Links to the HTML reports under `settings.reports_dir`, so metadata holds a page a browser opens, not a server path.

`mlplatform dev` serves the reports folder at `settings.reports_url`; the links built here point there.
"""

from pathlib import Path
from urllib.parse import quote

from mlplatform.settings import Settings


def report_url(settings: Settings, path: Path) -> str:
    """The URL of a report file written under `settings.reports_dir` (ValueError for a file outside it)."""
    relative = path.resolve().relative_to(settings.reports_dir.resolve())
    return f"{settings.reports_url.rstrip('/')}/{quote(relative.as_posix())}"


def mlflow_version_url(settings: Settings, model_name: str, version: int | str) -> str:
    """The MLflow UI page of one registered model version (its tags hold the promotion decision)."""
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/models/{quote(model_name)}/versions/{version}"


def mlflow_run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run: params, metrics and logged artifacts (the reports among them)."""
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
