"""The local Evidently workspace: every drift report's snapshot, live-quality score and estimated-performance chunk in
its model's project, drift and quality over time on the project's dashboard, browsed with `evidently ui` (which
`mlplatform dev` serves at `settings.evidently_ui_url`).

One project per model, found by name and created on the model's first snapshot; panels a project lacks are added when
the snapshot that feeds them first arrives. Live quality and estimates come in as value snapshots: a one-row Evidently
report whose `MeanValue` per column is the measured value (and the floor it is held to), timestamped with the data's
time, so the dashboard plots them against the floor and the champion version over time. Adding is best effort: the
asset's own record is already made when this runs, so a workspace that cannot be written or read is reported back
(into the asset's metadata and logs), never raised; the next snapshot adds itself again.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from mlplatform.domain.timeformat import naive_utc
from mlplatform.settings import Settings

if TYPE_CHECKING:  # Evidently loads only where a report is written
    from evidently.core.report import Snapshot
    from evidently.sdk.models import DashboardPanelPlot
    from evidently.ui.workspace import Project, Workspace

LOCK_FILE = ".mlplatform.lock"  # not a folder, so Evidently never takes it for a project
DRIFT_TAB = "Drift"
QUALITY_TAB = "Quality"
TOP_COLUMNS = 5  # per-column drift score panel: the most drifted columns of the model's first report
DRIFT_KIND = "drift"
LIVE_QUALITY_KIND = "live_quality"
ESTIMATED_KIND = "estimated_performance"
CHAMPION_COLUMN = "champion_version"  # in every value snapshot: the champion panel steps where the champion changed
KIND_TAG = "kind:"
SERIES_TAG = "series:"  # on a value snapshot, one per value it holds (the value panels' series)
VALUES_TAG = "values:"  # on a value snapshot, a digest of its values: a later reading of the same data that differs replaces it


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


def snapshot_tags(model: str, champion_version: int, kind: str = DRIFT_KIND) -> list[str]:
    """What a snapshot carries, so the UI can filter a project's snapshots by champion and kind (and retention can keep
    each kind's newest)."""
    return [f"model:{model}", f"champion:v{champion_version}", f"{KIND_TAG}{kind}"]


def _kind(tags: list[str]) -> str:
    """A snapshot's kind from its tags; drift snapshots added before kinds were tagged have none."""
    return next((t[len(KIND_TAG):] for t in tags if t.startswith(KIND_TAG)), DRIFT_KIND)


@dataclass(frozen=True)
class ValuePoint:
    """Values measured on the data up to `data_time` (microseconds since 1970, UTC), e.g. {"live_precision": 0.81,
    "precision_floor": 0.5}; `name` names its snapshot in the UI."""

    name: str
    data_time: int
    values: dict[str, float]

    @property
    def timestamp(self) -> datetime:
        return naive_utc(self.data_time)


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


def value_panels(title: str, kind: str, series: list[str]) -> list[DashboardPanelPlot]:
    """The given value series (measured values and their floors) of one kind over time, and the champion version."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    tags = [f"{KIND_TAG}{kind}"]  # a floor series is in both kinds' snapshots: each panel reads its own
    return [
        line_plot_panel(title, [PanelMetric(legend=c, tags=tags, metric="MeanValue", metric_labels={"column": c}) for c in series],
                        description="At the time of the data it was measured on; a *_floor or *_ceiling series is the bound it is held to"),
        line_plot_panel("Champion version", [PanelMetric(legend="champion", metric="MeanValue", metric_labels={"column": CHAMPION_COLUMN})],
                        description="Per live-quality or estimate snapshot: a step is a champion change", size="half"),
    ]


def _project(workspace: Workspace, model: str, panels: list[DashboardPanelPlot], tab: str, add_series: bool = False) -> Project:
    """The model's project (created on first use) with the given panels on `tab`: those it lacks added by title and,
    with `add_series`, to one it has the series (by legend) it lacks. An estimate panel first drawn before any labels
    came back had no realized series, and later snapshots' realized values were never plotted (the estimation probe);
    the drift panel keeps the first report's top columns."""
    found = workspace.search_project(model)
    project = found[0] if found else workspace.create_project(model, description=f"Drift, live quality and estimated performance of {model} (mlplatform)")
    dashboard = workspace.get_dashboard(project.id)
    shown = {p.title: p for p in dashboard.panels}
    grown = False
    for panel in panels:
        if add_series and (existing := shown.get(panel.title)) is not None:
            legends = {v.legend for v in existing.values}
            missing = [v for v in panel.values if v.legend not in legends]
            existing.values.extend(missing)
            grown = grown or bool(missing)
    if grown:  # saved before panels are added: each addition reads the dashboard as saved
        workspace.save_dashboard(project.id, dashboard)
    for panel in panels:
        if panel.title not in shown:
            project.dashboard.add_panel(panel, tab=tab)
    return project


def _snapshots(workspace: Workspace, project_id: str, kind: str) -> list[tuple[str, datetime, list[str]]]:
    """The project's snapshots of one kind as the workspace found them when it opened, newest added first (Evidently's
    snapshot ids are UUIDv7, time-ordered from when each was added), with their timestamps. Read from the snapshots the
    local workspace parsed on opening, as its own `add_dataset` reads its projects: `get_run` would parse each again.
    Each with its tags."""
    from evidently.ui.service.storage.local import JsonFileProjectMetadataStorage

    storage = workspace.datasets.project_manager.project_metadata
    assert isinstance(storage, JsonFileProjectMetadataStorage)
    stored = storage.state.snapshots.get(uuid.UUID(project_id), {})
    return sorted(((str(sid), s.timestamp, list(s.tags)) for sid, s in stored.items() if _kind(s.tags) == kind), reverse=True)


def _prune(workspace: Workspace, project_id: str, newest_first: list[str], keep: int) -> None:
    """Keep the newest `keep` of these snapshots (one kind's), as the reports folder keeps its newest reports."""
    for sid in newest_first[keep:]:
        workspace.delete_run(project_id, sid)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time: a drift report and an estimate of the same run (or two models' assets) would otherwise
    both create the model's project, or both prune what the other just counted."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _failed(folder: Path, exc: Exception) -> WorkspaceEntry:
    return WorkspaceEntry(error=f"Evidently workspace {folder} not updated: {type(exc).__name__}: {exc}"[:500])


def add_drift_snapshot(folder: Path, model: str, snapshot: Snapshot, name: str, top_columns: list[str], keep: int) -> WorkspaceEntry:
    """Add one drift report's snapshot (named `name`) to the model's project in the workspace at `folder`."""
    try:
        from evidently.ui.workspace import Workspace

        with _locked(folder):
            workspace = Workspace(str(folder))
            project = _project(workspace, model, drift_panels(top_columns), DRIFT_TAB)
            project_id = str(project.id)
            known = [sid for sid, _, _ in _snapshots(workspace, project_id, DRIFT_KIND)]
            added = str(workspace.add_run(project_id, snapshot, name=name).id)
            _prune(workspace, project_id, [added, *known], keep)
        return WorkspaceEntry(project_id, added)
    # Anything: the workspace is a view over reports already kept in the reports folder, and Evidently's local storage
    # raises what its file system, JSON and pydantic layers raise on an unwritable or corrupt folder.
    except Exception as exc:  # noqa: BLE001
        return _failed(folder, exc)


def _value_snapshot(point: ValuePoint, tags: list[str]) -> Snapshot:
    """A one-row report whose MeanValue of each column is the point's value: Evidently's own metric results, so the
    dashboard's data series and the snapshot page read it like any report."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    columns = sorted(point.values)
    frame = pd.DataFrame([{c: float(point.values[c]) for c in columns}])
    dataset = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=columns))
    return Report([MeanValue(column=c) for c in columns]).run(dataset, timestamp=point.timestamp, tags=tags, name=point.name)


def _values_tag(values: dict[str, float]) -> str:
    """The digest tag of a point's values, to 6 significant digits (a value read again the same is the same)."""
    text = ";".join(f"{k}={v:.6g}" for k, v in sorted(values.items()))
    return f"{VALUES_TAG}{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def add_value_snapshots(folder: Path, model: str, kind: str, champion_version: int, points: list[ValuePoint], panel_title: str,
                        keep: int) -> WorkspaceEntry:
    """Add the points (oldest first) whose data is newer than the newest snapshot of this kind already in the model's
    project, each with the champion version as a value and a tag; keep the newest `keep` of the kind. A point of the
    same champion and data time as a snapshot there, whose values differ, replaces it: an estimated chunk read again
    once its labels came back carries its realized value (the estimation probe: late labels never reached the
    dashboard), and again with its realized value on more of them. The entry names the last one added (none when no
    point was new)."""
    if not points:
        return WorkspaceEntry()
    # One point per data time, the last given (the newest chunk): two chunks whose newest events share a time (a date-only
    # clock) each replaced the other's snapshot at every reading (the review).
    points = list({p.timestamp: p for p in points}.values())
    try:
        from evidently.ui.workspace import Workspace

        with _locked(folder):
            workspace = Workspace(str(folder))
            series = sorted({c for p in points for c in p.values})
            project = _project(workspace, model, value_panels(panel_title, kind, series), QUALITY_TAB, add_series=True)
            project_id = str(project.id)
            known = _snapshots(workspace, project_id, kind)
            newest = max((t for _, t, _ in known), default=None)
            tags = snapshot_tags(model, champion_version, kind)
            added: list[tuple[str, datetime]] = []
            for point in points:
                values = {k: v for k, v in point.values.items() if math.isfinite(v)}  # a metric without a value has no point
                digest = _values_tag(values)
                changed = [sid for sid, t, had in known if t == point.timestamp and set(tags) <= set(had) and digest not in had]
                if newest is None or point.timestamp > newest or changed:
                    for sid in changed:
                        workspace.delete_run(project_id, sid)
                    known = [k for k in known if k[0] not in changed]
                    snapshot = _value_snapshot(ValuePoint(point.name, point.data_time, {**values, CHAMPION_COLUMN: champion_version}),
                                               [*tags, *(f"{SERIES_TAG}{k}" for k in sorted(values)), digest])
                    added.append((str(workspace.add_run(project_id, snapshot, name=point.name).id), point.timestamp))
            # By data time, newest first: a replaced snapshot of an older chunk is not the newest (it was added last).
            kept = sorted([*((sid, t) for sid, t, _ in known), *added], key=lambda entry: entry[1], reverse=True)
            _prune(workspace, project_id, [sid for sid, _ in kept], keep)
        return WorkspaceEntry(project_id, added[-1][0] if added else None)
    except Exception as exc:  # noqa: BLE001 (as for drift snapshots: the workspace is a view, never the record)
        return _failed(folder, exc)
