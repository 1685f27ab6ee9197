"""Drift reports in the local Evidently workspace: one project per model with the platform's dashboard panels, read back
through Evidently's own workspace API and served by a real `evidently ui` on loopback; a workspace that cannot be
written or read never fails the drift report."""

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from evidently.ui.workspace import Workspace

from mlplatform.cli.dev import evidently_server, free_port, running
from mlplatform.domain.keys import EVIDENTLY_PROJECT_URL, EVIDENTLY_SNAPSHOT_URL, EVIDENTLY_WORKSPACE_ERROR, REPORT_PATH
from mlplatform.domain.spec import DatasetSpec
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.names import ModelNames
from mlplatform.stores.evidently_workspace import DRIFT_TAB, TOP_COLUMNS
from mlplatform.stores.reports import html_path
from mlplatform_tests.monitoring_support import Platform, shuffled_stream, trained_platform

DRIFT_REPORT, DRIFT_DASHBOARD = ModelNames("adult").assets("drift_report", "drift_dashboard")
WORKSPACE_KEYS = {EVIDENTLY_PROJECT_URL, EVIDENTLY_SNAPSHOT_URL, EVIDENTLY_WORKSPACE_ERROR}
UI_URL = "http://127.0.0.1:39999"  # only links are built from it here; the server test starts its own on a free port
PANELS = {"Share of drifted columns", "Drifted columns", "Drift score per column"}


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> Iterator[tuple[Platform, list[dict[str, object]]]]:
    """A champion and three drift reports of its stream, the workspace keeping the newest two (as the reports folder does)."""
    env = {"MLPLATFORM_RETRAIN_EVERY_N": "1000000", "MLPLATFORM_DRIFT_MIN_CURRENT_ROWS": "100", "MLPLATFORM_DRIFT_REPORTS_KEEP": "2",
           "MLPLATFORM_EVIDENTLY_UI_URL": UI_URL}
    with trained_platform(tmp_path_factory.mktemp("evidently") / "state", adult_spec, shuffled_stream(adult_rows, seed=5), **env) as platform:
        metas = [_report(platform) for _ in range(3)]
        yield platform, metas


def _report(platform: Platform) -> dict[str, object]:
    """A drift report and drift_dashboard after it, as a drift report run makes them: the report's metadata with the dashboard's."""
    platform.ingest(platform.next_rows(150))
    platform.materialize("drift_report", "drift_dashboard")
    meta = latest_metadata(platform.instance, DRIFT_REPORT)
    assert meta is not None and meta["skipped"] is False, meta
    assert not WORKSPACE_KEYS & set(meta), "the verdict is materialized without waiting for the workspace"
    return {**meta, **(latest_metadata(platform.instance, DRIFT_DASHBOARD) or {})}


def test_each_drift_report_is_a_snapshot_in_the_models_project_with_its_dashboard(reported: tuple[Platform, list[dict[str, object]]]) -> None:
    platform, metas = reported
    workspace = Workspace(str(platform.settings.evidently_workspace_dir))
    [project] = workspace.search_project("adult")  # created once, found by name after
    assert len(workspace.list_projects()) == 1
    runs = {str(sid): workspace.get_run(project.id, sid) for sid in workspace.list_runs(project.id)}
    kept = [html_path(Path(str(m[REPORT_PATH]))).stem for m in metas[1:]]
    assert sorted(r.name for r in runs.values() if r is not None) == sorted(kept), "the newest two, named after their report files"
    for run in runs.values():
        assert run is not None and {"model:adult", "champion:v1"} <= set(run.tags)
    newest = metas[-1]
    assert newest[EVIDENTLY_PROJECT_URL] == f"{UI_URL}/projects/{project.id}" and EVIDENTLY_WORKSPACE_ERROR not in newest
    snapshot_id = str(newest[EVIDENTLY_SNAPSHOT_URL]).rsplit("/", 1)[1]
    newest_run = runs[snapshot_id]
    assert newest_run is not None and newest_run.name == kept[-1]
    assert max(r.timestamp for r in runs.values() if r is not None) == newest_run.timestamp

    dashboard = workspace.get_dashboard(project.id)
    assert [t.title for t in dashboard.tabs] == [DRIFT_TAB] and {p.title for p in dashboard.panels} == PANELS
    assert len(dashboard.panels) == len(PANELS), "panels are added with the project, not with every report"
    [per_column] = [p for p in dashboard.panels if p.title == "Drift score per column"]
    columns = [v.metric_labels["column"] for v in per_column.values]
    assert len(columns) == TOP_COLUMNS and set(columns) <= set(platform.spec.features)
    share = [p for p in dashboard.panels if p.title == "Share of drifted columns"][0].values[0]
    assert share.metric == "evidently:metric_v2:DriftedColumnsCount" and share.metric_labels == {"value_type": "share"}


def test_evidently_ui_serves_the_project_and_its_snapshots_on_loopback(reported: tuple[Platform, list[dict[str, object]]], tmp_path: Path) -> None:
    platform, _ = reported
    settings = platform.settings.model_copy(update={"evidently_ui_url": f"http://127.0.0.1:{free_port()}"})
    with running(settings, log_dir=tmp_path / "logs", timeout_seconds=120, grace_seconds=5, servers=[evidently_server(settings)]) as [server]:
        projects = httpx.get(f"{settings.evidently_ui_url}/api/projects", timeout=30).json()
        [project] = [p for p in projects if p["name"] == "adult"]
        snapshots = httpx.get(f"{settings.evidently_ui_url}/api/projects/{project['id']}/snapshots", timeout=30)
        assert snapshots.status_code == 200 and len(snapshots.json()) == 2, snapshots.text
        dashboard = httpx.get(f"{settings.evidently_ui_url}/api/v2/dashboards/{project['id']}", timeout=30)
        assert dashboard.status_code == 200, dashboard.text
        for panel in dashboard.json()["panels"]:  # each panel's metrics resolve to one value per kept snapshot
            filters = [{"tags": v["tags"], "metadata": v["metadata"], "metric": v["metric"], "metric_labels": v["metric_labels"]} for v in panel["values"]]
            answer = httpx.post(f"{settings.evidently_ui_url}/api/v2/snapshots/{project['id']}/data_series_batch", json={"series_filter": filters}, timeout=30)
            assert answer.status_code in (200, 201), answer.text
            series = answer.json()
            assert len(series["sources"]) == 2 and len(series["series"]) == len(filters), (panel["title"], series)
            assert all(len(s["values"]) == 2 and None not in s["values"] for s in series["series"]), (panel["title"], series)
        assert server.process is not None
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
        assert b"DO_NOT_TRACK=true" in environ, "Evidently's telemetry stays off in the UI server"

        added = str(_report(platform)[EVIDENTLY_SNAPSHOT_URL]).rsplit("/", 1)[1]  # a report while the UI runs shows up in it
        deadline = time.monotonic() + 60
        while added not in (listed := [x["id"] for x in httpx.get(f"{settings.evidently_ui_url}/api/projects/{project['id']}/snapshots", timeout=30).json()]):
            assert time.monotonic() < deadline, listed
            time.sleep(0.5)


def _blocked(folder: Path) -> Path:
    """A workspace path under a regular file: no one, root included, can create it."""
    (folder / "blocker").write_text("a file where a folder should be", encoding="utf-8")
    return folder / "blocker" / "evidently"


def _corrupt(folder: Path) -> Path:
    """A workspace whose one project's metadata is not JSON."""
    project = folder / "corrupt" / "0190c1a0-0000-7000-8000-000000000000"
    project.mkdir(parents=True)
    (project / "metadata.json").write_text("{not json", encoding="utf-8")
    return folder / "corrupt"


@pytest.mark.parametrize("broken", [_blocked, _corrupt], ids=["unwritable", "corrupt"])
def test_a_broken_workspace_never_fails_the_drift_report(reported: tuple[Platform, list[dict[str, object]]], broken: object, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    platform, _ = reported
    folder = broken(tmp_path)  # type: ignore[operator]
    monkeypatch.setenv("MLPLATFORM_EVIDENTLY_WORKSPACE_DIR", str(folder))
    meta = _report(platform)
    assert Path(str(meta[REPORT_PATH])).is_file(), "the report itself is kept"
    error = str(meta[EVIDENTLY_WORKSPACE_ERROR])
    assert error.startswith(f"Evidently workspace {folder} not updated: ") and EVIDENTLY_PROJECT_URL not in meta
    [run] = platform.instance.get_runs(limit=1)
    warnings = [e.user_message for e in platform.instance.all_logs(run.run_id) if e.level == logging.WARNING]
    assert any(error in message for message in warnings), warnings

    monkeypatch.delenv("MLPLATFORM_EVIDENTLY_WORKSPACE_DIR")  # the workspace is back: the next report is added
    meta = _report(platform)
    assert EVIDENTLY_WORKSPACE_ERROR not in meta
    workspace = Workspace(str(platform.settings.evidently_workspace_dir))
    [project] = workspace.search_project("adult")
    newest = workspace.get_run(project.id, str(meta[EVIDENTLY_SNAPSHOT_URL]).rsplit("/", 1)[1])
    assert newest is not None and newest.name == html_path(Path(str(meta[REPORT_PATH]))).stem


def test_a_report_gone_from_the_reports_folder_is_not_added_and_says_why(reported: tuple[Platform, list[dict[str, object]]]) -> None:
    platform, _ = reported
    meta = _report(platform)
    Path(str(meta[REPORT_PATH])).unlink()  # pruned, or removed by hand, before drift_dashboard ran again
    platform.materialize("drift_dashboard")
    again = latest_metadata(platform.instance, DRIFT_DASHBOARD) or {}
    assert "FileNotFoundError" in str(again[EVIDENTLY_WORKSPACE_ERROR]) and EVIDENTLY_SNAPSHOT_URL not in again, again
