"""The local Evidently workspace: every drift report's snapshot in its model's project, drift over time on the
project's dashboard, browsed with `evidently ui` (which `mlplatform dev` serves at `settings.evidently_ui_url`).

One project per model, found by name and created (with its dashboard panels) on the model's first report. Adding is
best effort: the report's own snapshot file is already written when this runs, so a workspace that cannot be written or
read is reported back (into the drift report's metadata and logs), never raised; the next report adds itself again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from mlplatform.settings import Settings

if TYPE_CHECKING:  # Evidently loads only where a report is written
    from evidently.core.report import Snapshot
    from evidently.sdk.models import DashboardPanelPlot
    from evidently.ui.workspace import Project, Workspace

DRIFT_TAB = "Drift"
TOP_COLUMNS = 5  # per-column drift score panel: the most drifted columns of the model's first report


@dataclass(frozen=True)
class WorkspaceEntry:
    """Where a snapshot landed in the workspace, or why it did not (`error`, one sentence)."""

    project_id: str | None = None
    snapshot_id: str | None = None
    error: str | None = None

    def project_url(self, settings: Settings) -> str | None:
        """The model's project (its dashboard) in `evidently ui`."""
        return None if self.project_id is None else f"{settings.evidently_ui_url.rstrip('/')}/projects/{quote(self.project_id)}"

    def snapshot_url(self, settings: Settings) -> str | None:
        """This report in `evidently ui`."""
        project = self.project_url(settings)
        return None if project is None or self.snapshot_id is None else f"{project}/reports/{quote(self.snapshot_id)}"


def snapshot_tags(model: str, champion_version: int) -> list[str]:
    """What a drift snapshot carries, so the UI can filter a project's reports by champion."""
    return [f"model:{model}", f"champion:v{champion_version}"]


def drift_panels(top_columns: list[str]) -> list[DashboardPanelPlot]:
    """Share and count of drifted columns over time, and the drift score of the given columns."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    panels = [
        line_plot_panel("Share of drifted columns", [PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
                        description="Per drift report; dataset drift at or above drift_share_threshold", size="half"),
        bar_plot_panel("Drifted columns", [PanelMetric(legend="count", metric="DriftedColumnsCount", metric_labels={"value_type": "count"})],
                       description="Per drift report", size="half"),
    ]
    if top_columns:
        panels.append(line_plot_panel("Drift score per column", [PanelMetric(legend=c, metric="ValueDrift", metric_labels={"column": c}) for c in top_columns],
                                      description="Evidently's test score (p-value or distance, per the column's method)"))
    return panels


def _project(workspace: Workspace, model: str, top_columns: list[str]) -> Project:
    """The model's project, created with its dashboard on first use."""
    found = workspace.search_project(model)
    if found:
        return found[0]
    project = workspace.create_project(model, description=f"Drift reports of {model} against its champion's training window (mlplatform)")
    for panel in drift_panels(top_columns):
        project.dashboard.add_panel(panel, tab=DRIFT_TAB)
    return project


def _prune(workspace: Workspace, project_id: str, keep: int) -> None:
    """Keep the newest `keep` snapshots of the project, as the reports folder does. Evidently's snapshot ids are UUIDv7
    (time-ordered from when each was added), so they sort by age without parsing every snapshot (3 s for 50 of them)."""
    for sid in sorted(workspace.list_runs(project_id), reverse=True)[keep:]:
        workspace.delete_run(project_id, sid)


def add_drift_snapshot(folder: Path, model: str, snapshot: Snapshot, name: str, top_columns: list[str], keep: int) -> WorkspaceEntry:
    """Add one drift report's snapshot (named `name`) to the model's project in the workspace at `folder`."""
    try:
        from evidently.ui.workspace import Workspace

        workspace = Workspace(str(folder))
        project = _project(workspace, model, top_columns)
        ref = workspace.add_run(project.id, snapshot, name=name)
        _prune(workspace, str(project.id), keep)
        return WorkspaceEntry(str(project.id), str(ref.id))
    # Anything: the workspace is a view over reports already kept in the reports folder, and Evidently's local storage
    # raises what its file system, JSON and pydantic layers raise on an unwritable or corrupt folder.
    except Exception as exc:  # noqa: BLE001
        return WorkspaceEntry(error=f"Evidently workspace {folder} not updated: {type(exc).__name__}: {exc}"[:500])
