"""Drift reports, live-quality scores and estimated-performance chunks in the local Evidently workspace: one project per
model with the platform's dashboard panels, read back through Evidently's own workspace API and served by a real
`evidently ui` on loopback; a workspace that cannot be written or read never fails the asset."""

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest
from evidently.ui.workspace import Workspace

from mlplatform.cli.dev import evidently_server, running
from mlplatform.ports import free_port
from mlplatform.cli.status import collect_status, render_status
from mlplatform.domain.evaluation import SCORED
from mlplatform.domain.keys import EVIDENTLY_PROJECT_URL, EVIDENTLY_SNAPSHOT_URL, EVIDENTLY_WORKSPACE_ERROR, REPORT_PATH
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.timeformat import iso_time
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.names import ModelNames
from mlplatform.pipeline.estimation import estimate_floors
from mlplatform.settings import Settings
from mlplatform.stores.evidently_workspace import (CHAMPION_COLUMN, DRIFT_KIND, DRIFT_TAB, ESTIMATED_KIND, LIVE_QUALITY_KIND, QUALITY_TAB, TOP_COLUMNS,
                                                   KIND_TAG, ValuePoint, add_value_snapshots)
from mlplatform.stores.reports import html_path
from mlplatform_tests.monitoring_support import Platform, shuffled_stream, trained_platform

ADULT = ModelNames("adult")
DRIFT_REPORT, DRIFT_DASHBOARD = ADULT.assets("drift_report", "drift_dashboard")
LIVE_QUALITY, ESTIMATED = ADULT.asset("live_quality"), ADULT.asset("estimated_performance")
WORKSPACE_KEYS = {EVIDENTLY_PROJECT_URL, EVIDENTLY_SNAPSHOT_URL, EVIDENTLY_WORKSPACE_ERROR}
UI_URL = "http://127.0.0.1:39999"  # only links are built from it here; the server test starts its own on a free port
DRIFT_PANELS = {"Share of drifted columns", "Drifted columns", "Drift score per column"}
QUALITY_PANELS = {"Live quality vs floor", "Estimated performance vs floor", "Champion version"}
SERVED = 120  # per batch of served predictions; live_quality needs MLPLATFORM_LIVE_QUALITY_MIN_EVENTS of them


@dataclass
class Reported:
    platform: Platform
    drift: list[dict[str, object]]  # three drift reports' metadata, oldest first
    live: list[dict[str, object]]  # two live_quality scores, each over newly served predictions, then one with nothing new
    estimated: dict[str, object]  # one estimated_performance


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> Iterator[Reported]:
    """A champion, three drift reports of its stream, two live-quality scores and an estimate, the workspace keeping the
    newest two of each kind (as the reports folder keeps its newest reports)."""
    env = {"MLPLATFORM_RETRAIN_EVERY_N": "1000000", "MLPLATFORM_DRIFT_MIN_CURRENT_ROWS": "100", "MLPLATFORM_DRIFT_REPORTS_KEEP": "2",
           "MLPLATFORM_EVIDENTLY_UI_URL": UI_URL, "MLPLATFORM_LIVE_QUALITY_MIN_EVENTS": "50", "MLPLATFORM_ESTIMATION_CHUNK_EVENTS": "200"}
    with trained_platform(tmp_path_factory.mktemp("evidently") / "state", adult_spec, shuffled_stream(adult_rows, seed=5), **env) as platform:
        drift = [_report(platform) for _ in range(3)]
        live = [_score(platform, SERVED), _score(platform, SERVED), _score(platform, 0)]
        platform.materialize("estimated_performance")
        yield Reported(platform, drift, live, latest_metadata(platform.instance, ESTIMATED) or {})


def _report(platform: Platform) -> dict[str, object]:
    """A drift report and drift_dashboard after it, as a drift report run makes them: the report's metadata with the dashboard's."""
    platform.ingest(platform.next_rows(150))
    platform.materialize("drift_report", "drift_dashboard")
    meta = latest_metadata(platform.instance, DRIFT_REPORT)
    assert meta is not None and meta["skipped"] is False, meta
    assert not WORKSPACE_KEYS & set(meta), "the verdict is materialized without waiting for the workspace"
    newest = platform.model.event_log.time_range()
    assert newest is not None and meta["current_until"] == iso_time(newest[1]), "the data time it read up to: the log's newest event"
    return {**meta, **(latest_metadata(platform.instance, DRIFT_DASHBOARD) or {})}


def _score(platform: Platform, served: int) -> dict[str, object]:
    if served:
        platform.serve(served)
    platform.materialize("live_quality")
    meta = latest_metadata(platform.instance, LIVE_QUALITY)
    assert meta is not None and meta["enough_events"] is True, meta
    return meta


def _runs(workspace: Workspace, project_id: object, kind: str) -> dict[str, object]:
    """The project's snapshots of one kind by id (drift snapshots carry `kind:drift`)."""
    runs = {str(sid): workspace.get_run(project_id, sid) for sid in workspace.list_runs(project_id)}  # type: ignore[arg-type]
    return {sid: run for sid, run in runs.items() if run is not None and f"{KIND_TAG}{kind}" in run.tags}


def _values(run: object) -> dict[str, float]:
    """A value snapshot's MeanValue per column."""
    return {r.metric_value_location.metric.params["column"]: r.value for r in run.metric_results.values()}  # type: ignore[attr-defined]


def _at(micros: object) -> datetime:
    return datetime.fromtimestamp(int(str(micros)) / 1e6, tz=timezone.utc).replace(tzinfo=None)


def test_each_drift_report_is_a_snapshot_in_the_models_project_with_its_dashboard(reported: Reported) -> None:
    platform, metas = reported.platform, reported.drift
    workspace = Workspace(str(platform.settings.evidently_workspace_dir))
    [project] = workspace.search_project("adult")  # created once, found by name after
    assert len(workspace.list_projects()) == 1
    runs = _runs(workspace, project.id, DRIFT_KIND)
    kept = [html_path(Path(str(m[REPORT_PATH]))).stem for m in metas[1:]]
    assert sorted(r.name for r in runs.values() if r is not None) == sorted(kept), "the newest two, named after their report files"
    for run in runs.values():
        assert run is not None and {"model:adult", "champion:v1", "kind:drift"} <= set(run.tags)
    newest = metas[-1]
    assert newest[EVIDENTLY_PROJECT_URL] == f"{UI_URL}/projects/{project.id}" and EVIDENTLY_WORKSPACE_ERROR not in newest
    snapshot_id = str(newest[EVIDENTLY_SNAPSHOT_URL]).rsplit("/", 1)[1]
    newest_run = runs[snapshot_id]
    assert newest_run is not None and newest_run.name == kept[-1]
    assert max(r.timestamp for r in runs.values() if r is not None) == newest_run.timestamp
    # when each report ran, one point per report: by its data's newest time, two reports of late-landed events fell on one
    stamps = sorted(r.timestamp for r in runs.values() if r is not None)  # type: ignore[attr-defined]
    assert len(set(stamps)) == len(stamps) == 2 and stamps[0] > _at(pd.Timestamp(str(metas[-1]["current_until"])).value // 1000)

    dashboard = workspace.get_dashboard(project.id)
    assert [t.title for t in dashboard.tabs] == [DRIFT_TAB, QUALITY_TAB] and {p.title for p in dashboard.panels} == DRIFT_PANELS | QUALITY_PANELS
    assert len(dashboard.panels) == len(DRIFT_PANELS | QUALITY_PANELS), "panels are added once, not with every snapshot"
    [per_column] = [p for p in dashboard.panels if p.title == "Drift score per column"]
    columns = [v.metric_labels["column"] for v in per_column.values]
    assert len(columns) == TOP_COLUMNS and set(columns) <= set(platform.spec.features)
    share = [p for p in dashboard.panels if p.title == "Share of drifted columns"][0].values[0]
    assert share.metric == "evidently:metric_v2:DriftedColumnsCount" and share.metric_labels == {"value_type": "share"}


def test_live_quality_scores_are_snapshots_beside_their_floors_at_the_time_of_their_data(reported: Reported) -> None:
    platform, live = reported.platform, reported.live
    settings = platform.settings
    workspace = Workspace(str(settings.evidently_workspace_dir))
    [project] = workspace.search_project("adult")
    runs = _runs(workspace, project.id, LIVE_QUALITY_KIND)
    assert len(runs) == 2, "one per score over new data; a score with nothing new adds none"
    assert EVIDENTLY_SNAPSHOT_URL not in live[2] and live[2][EVIDENTLY_PROJECT_URL] == f"{UI_URL}/projects/{project.id}"
    for meta in live[:2]:
        assert EVIDENTLY_WORKSPACE_ERROR not in meta
        run = runs[str(meta[EVIDENTLY_SNAPSHOT_URL]).rsplit("/", 1)[1]]
        assert run.timestamp == _at(meta["window_end"]) and {"model:adult", "champion:v1"} <= set(run.tags)  # type: ignore[attr-defined]
        assert _values(run) == pytest.approx({"live_precision": meta["precision"], "live_recall": meta["recall"], "live_roc_auc": meta["roc_auc"],
                                              "precision_floor": settings.live_min_precision, "recall_floor": settings.live_min_recall, CHAMPION_COLUMN: 1})
    [panel] = [p for p in workspace.get_dashboard(project.id).panels if p.title == "Live quality vs floor"]
    assert {v.metric_labels["column"] for v in panel.values} == {"live_precision", "live_recall", "live_roc_auc", "precision_floor", "recall_floor"}
    assert all(v.tags == ["kind:live_quality"] for v in panel.values), "the floors are in the estimates too: each panel reads its own kind"


def test_estimated_chunks_are_snapshots_at_their_newest_events_time(reported: Reported) -> None:
    platform, meta = reported.platform, reported.estimated
    workspace = Workspace(str(platform.settings.evidently_workspace_dir))
    [project] = workspace.search_project("adult")
    runs = _runs(workspace, project.id, ESTIMATED_KIND)
    assert int(str(meta["chunks"])) > 2 and len(runs) == 2, "every chunk was added, the newest two kept"
    newest = runs[str(meta[EVIDENTLY_SNAPSHOT_URL]).rsplit("/", 1)[1]]
    assert max(r.timestamp for r in runs.values()) == newest.timestamp  # type: ignore[attr-defined]
    values = _values(newest)
    floors = {f"{b.metric}_{b.kind}": b.value for b in estimate_floors(platform.settings, platform.spec, {})[0]}
    assert values[CHAMPION_COLUMN] == 1 and set(floors) == {"precision_floor", "recall_floor", "roc_auc_floor"} and floors.items() <= values.items()
    assert values["estimated_roc_auc_lower"] <= values["estimated_roc_auc"] <= values["estimated_roc_auc_upper"]
    assert values["estimated_roc_auc"] == pytest.approx(float(str(meta["estimated_roc_auc"])))
    assert {"estimated_precision", "estimated_recall"} <= set(values)
    assert len(_runs(workspace, project.id, DRIFT_KIND)) == 2, "each kind keeps its own newest: the estimates pushed out no drift report"
    platform.materialize("estimated_performance")  # the same chunks again: nothing new
    again = latest_metadata(platform.instance, ESTIMATED) or {}
    assert EVIDENTLY_SNAPSHOT_URL not in again and set(_runs(workspace, project.id, ESTIMATED_KIND)) == set(runs)


def test_status_says_the_latest_live_quality_and_estimate(reported: Reported) -> None:
    """`mlplatform status --dagster` answers from a terminal what the UI shows: the live verdict and the recent estimate."""
    status = collect_status(reported.platform.model, with_dagster=True)
    live, estimated = reported.live[-1], reported.estimated
    assert status["live_quality"] == {"model_version": live["model_version"], "events": live["events"], "verdict": live["verdict"], "scored_on": live["scored_on"],
                                      "metrics": {name: live[name] for name in SCORED if name in live}}
    assert {"accuracy", "precision", "recall"} <= set(status["live_quality"]["metrics"]), "the values, not the verdict alone (the third new-user probe)"
    assert status["estimated_performance"]["recent_estimate"] == estimated["recent_estimate"] and not status["estimated_performance"]["skipped"]
    said = render_status(status)
    assert f"live quality of v1 on {live['events']} {live['scored_on']}: {live['verdict']}" in said, said
    recent = (f"estimated performance of v1: {estimated['estimated_metric']} {estimated['recent_estimate']:.4g} recently "
              f"(95 % band {estimated['recent_lower']:.4g}-{estimated['recent_upper']:.4g}, {estimated['recent_events']} events) vs reference {estimated['reference']:.4g}: ")
    assert recent in said and f"; {estimated['floor_verdict']}" in said, said


def test_evidently_ui_serves_the_project_and_its_snapshots_on_loopback(reported: Reported, tmp_path: Path) -> None:
    platform = reported.platform
    settings = platform.settings.model_copy(update={"evidently_ui_url": f"http://127.0.0.1:{free_port()}"})
    with running(settings, log_dir=tmp_path / "logs", timeout_seconds=120, grace_seconds=5, servers=[evidently_server(settings)]) as [server]:
        projects = httpx.get(f"{settings.evidently_ui_url}/api/projects", timeout=30).json()
        [project] = [p for p in projects if p["name"] == "adult"]
        snapshots = httpx.get(f"{settings.evidently_ui_url}/api/projects/{project['id']}/snapshots", timeout=30)
        assert snapshots.status_code == 200 and len(snapshots.json()) == 6, snapshots.text  # two of each kind
        dashboard = httpx.get(f"{settings.evidently_ui_url}/api/v2/dashboards/{project['id']}", timeout=30)
        assert dashboard.status_code == 200, dashboard.text
        for panel in dashboard.json()["panels"]:  # each panel's metrics resolve to one value per kept snapshot it reads
            filters = [{"tags": v["tags"], "metadata": v["metadata"], "metric": v["metric"], "metric_labels": v["metric_labels"]} for v in panel["values"]]
            answer = httpx.post(f"{settings.evidently_ui_url}/api/v2/snapshots/{project['id']}/data_series_batch", json={"series_filter": filters}, timeout=30)
            assert answer.status_code in (200, 201), answer.text
            series = answer.json()
            read = 4 if panel["title"] == "Champion version" else 2  # the champion is in live-quality and estimate snapshots
            assert len(series["sources"]) == read and len(series["series"]) == len(filters), (panel["title"], series)
            assert all(len(s["values"]) == read and None not in s["values"] for s in series["series"]), (panel["title"], series)
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
def test_a_broken_workspace_never_fails_the_asset(reported: Reported, broken: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = reported.platform
    folder = broken(tmp_path)  # type: ignore[operator]
    monkeypatch.setenv("MLPLATFORM_EVIDENTLY_WORKSPACE_DIR", str(folder))
    meta = _report(platform)
    assert Path(str(meta[REPORT_PATH])).is_file(), "the report itself is kept"
    error = str(meta[EVIDENTLY_WORKSPACE_ERROR])
    assert error.startswith(f"Evidently workspace {folder} not updated: ") and EVIDENTLY_PROJECT_URL not in meta
    [run] = platform.instance.get_runs(limit=1)
    warnings = [e.user_message for e in platform.instance.all_logs(run.run_id) if e.level == logging.WARNING]
    assert any(error in message for message in warnings), warnings
    live = _score(platform, SERVED)
    assert str(live[EVIDENTLY_WORKSPACE_ERROR]).startswith(f"Evidently workspace {folder} not updated: ") and "precision" in live

    monkeypatch.delenv("MLPLATFORM_EVIDENTLY_WORKSPACE_DIR")  # the workspace is back: the next report is added
    meta = _report(platform)
    assert EVIDENTLY_WORKSPACE_ERROR not in meta
    workspace = Workspace(str(platform.settings.evidently_workspace_dir))
    [project] = workspace.search_project("adult")
    newest = workspace.get_run(project.id, str(meta[EVIDENTLY_SNAPSHOT_URL]).rsplit("/", 1)[1])
    assert newest is not None and newest.name == html_path(Path(str(meta[REPORT_PATH]))).stem


def test_a_report_gone_from_the_reports_folder_is_not_added_and_says_why(reported: Reported) -> None:
    platform = reported.platform
    meta = _report(platform)
    Path(str(meta[REPORT_PATH])).unlink()  # pruned, or removed by hand, before drift_dashboard ran again
    platform.materialize("drift_dashboard")
    again = latest_metadata(platform.instance, DRIFT_DASHBOARD) or {}
    assert "FileNotFoundError" in str(again[EVIDENTLY_WORKSPACE_ERROR]) and EVIDENTLY_SNAPSHOT_URL not in again, again


def test_projects_created_while_the_ui_runs_all_show_in_it(tmp_path: Path) -> None:
    """The soak probe: `evidently ui`'s watcher read a project's metadata.json mid-write, its thread died, and projects
    created after that never showed (5 of 16 listed; the drift reports' project links answered 404) until a restart."""
    settings = Settings(state_dir=tmp_path / "state", evidently_ui_url=f"http://127.0.0.1:{free_port()}")
    with running(settings, log_dir=tmp_path / "logs", timeout_seconds=120, grace_seconds=5, servers=[evidently_server(settings)]):
        folder = settings.evidently_workspace_dir
        assert folder is not None
        first = str(Workspace(str(folder)).create_project("model-first").id)
        # A project file as the watcher may read it while Evidently writes it: empty at first, whole a moment later.
        written = "0190c1a0-0000-7000-8000-000000000001"
        (folder / written).mkdir()
        (folder / written / "metadata.json").touch()
        time.sleep(0.5)
        (folder / written / "metadata.json").write_text((folder / first / "metadata.json").read_text(encoding="utf-8").replace(first, written), encoding="utf-8")
        workspace = Workspace(str(folder))
        created = {first, written, *(str(workspace.create_project(f"model-{i}").id) for i in range(15))}
        deadline = time.monotonic() + 60
        while not created <= (listed := {p["id"] for p in httpx.get(f"{settings.evidently_ui_url}/api/projects", timeout=30).json()}):
            assert time.monotonic() < deadline, f"{len(created - listed)} of {len(created)} projects never showed"
            time.sleep(0.5)


def test_a_value_series_first_seen_after_its_panel_was_drawn_is_added_to_it(tmp_path: Path) -> None:
    """The estimation probe: the estimate panel was drawn from the first snapshots, before any labels came back, so it
    had no realized series, and the realized values of later snapshots were never plotted."""
    folder = tmp_path / "workspace"
    early = [ValuePoint("chunk 1", 1_000_000, {"estimated_roc_auc": 0.9, "roc_auc_floor": 0.6})]
    later = [ValuePoint("chunk 2", 2_000_000, {"estimated_roc_auc": 0.88, "realized_roc_auc": 0.86, "roc_auc_floor": 0.6})]
    live = add_value_snapshots(folder, "m", LIVE_QUALITY_KIND, 1, [ValuePoint("live 1", 1_000_000, {"live_precision": 0.8})], "Live quality vs floor", 10)
    for points in (early, later):
        assert add_value_snapshots(folder, "m", ESTIMATED_KIND, 1, points, "Estimated performance vs floor", 10).snapshot_id is not None
    workspace = Workspace(str(folder))
    panels = {p.title: sorted(v.legend for v in p.values) for p in workspace.get_dashboard(live.project_id).panels}
    assert panels["Estimated performance vs floor"] == ["estimated_roc_auc", "realized_roc_auc", "roc_auc_floor"]
    assert panels["Live quality vs floor"] == ["live_precision"], "the other panels are kept as they were"


def test_an_estimated_chunk_read_again_once_its_labels_came_back_replaces_its_snapshot(tmp_path: Path) -> None:
    """The estimation probe: a chunk estimated before its labels landed kept that snapshot; read again with its realized
    value, it was skipped as not newer, and the late labels never reached the dashboard."""
    folder, chunk = tmp_path / "workspace", 1_000_000

    def add(champion: int, values: dict[str, float]) -> str | None:
        return add_value_snapshots(folder, "m", ESTIMATED_KIND, champion, [ValuePoint("chunk", chunk, values)], "Estimated performance vs floor", 10).snapshot_id

    first = add(1, {"estimated_roc_auc": 0.9})
    labelled = add(1, {"estimated_roc_auc": 0.9, "realized_roc_auc": 0.86})
    assert first is not None and labelled is not None and add(1, {"estimated_roc_auc": 0.9, "realized_roc_auc": 0.86}) is None, "the same reading again adds nothing"
    assert add(2, {"estimated_roc_auc": 0.8, "realized_roc_auc": 0.86, "accuracy_floor": 0.5}) is None, "another champion's reading of older data is not added"
    workspace = Workspace(str(folder))
    [project] = workspace.search_project("m")
    assert [str(r) for r in workspace.list_runs(project.id)] == [labelled]
    assert workspace.get_run(project.id, labelled).tags.count("series:realized_roc_auc") == 1  # type: ignore[union-attr]
    more = add(1, {"estimated_roc_auc": 0.9, "realized_roc_auc": 0.84})  # realized again on more of its labels: same series, new value
    assert more is not None and add(1, {"estimated_roc_auc": 0.9, "realized_roc_auc": 0.8400000001}) is None, "read again the same: kept"
    workspace = Workspace(str(folder))
    assert [str(r) for r in workspace.list_runs(project.id)] == [more], "the realized value on fewer labels was left in the dashboard"
    twins = [ValuePoint("older chunk", 2_000_000, {"estimated_roc_auc": 0.7}), ValuePoint("newer chunk", 2_000_000, {"estimated_roc_auc": 0.8})]
    first_twin = add_value_snapshots(folder, "m", ESTIMATED_KIND, 1, twins, "Estimated performance vs floor", 10).snapshot_id
    assert first_twin is not None and add_value_snapshots(folder, "m", ESTIMATED_KIND, 1, twins, "Estimated performance vs floor", 10).snapshot_id is None, \
        "two chunks whose newest events share a time replaced each other at every reading (the review): the newer one stands for both"
    # Kept by data time (the review: a replaced older chunk counted as the newest, and a newer one was pruned).
    for at in (3_000_000, 4_000_000):
        add_value_snapshots(folder, "m", ESTIMATED_KIND, 1, [ValuePoint("chunk", at, {"estimated_roc_auc": 0.9})], "Estimated performance vs floor", 2)
    add_value_snapshots(folder, "m", ESTIMATED_KIND, 1, [ValuePoint("chunk", 3_000_000, {"estimated_roc_auc": 0.9, "realized_roc_auc": 0.8})],
                        "Estimated performance vs floor", 2)
    workspace = Workspace(str(folder))
    assert sorted(workspace.get_run(project.id, r).timestamp for r in workspace.list_runs(project.id)) == [  # type: ignore[union-attr]
        datetime(1970, 1, 1, 0, 0, 3), datetime(1970, 1, 1, 0, 0, 4)]
