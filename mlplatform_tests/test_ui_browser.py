"""The operator's path in a real browser (Debian's Chromium driven by Playwright) and through Dagster's GraphQL API.

One stack per module: `mlplatform dev`'s servers (Dagster webserver + daemon, MLflow UI, reports route, Evidently UI) on
free loopback ports, over a temporary state where a champion was trained on a small slice of Adult and drifted batches
arrived since. Starting the servers is the slow part, so every test here shares them. A failing step leaves a
screenshot in mlplatform_tests/artifacts/ui/; MLPLATFORM_DOCS_SCREENSHOTS=1 refreshes the README's screenshots.
"""

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect, sync_playwright

from mlplatform.domain.keys import EVIDENTLY_PROJECT_URL, LAUNCHED_BY_TAG
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.names import ModelNames
from mlplatform.cli.dev import running
from mlplatform.ports import free_port
from mlplatform.stores.registry import CHAMPION
from mlplatform.domain.validation import validate_frame
from mlplatform.pipeline.drift import compare, most_drifted
from mlplatform.stores.reports import load_snapshot
from mlplatform.pipeline.replay import DriftScenario, inject_drift, write_batches
from mlplatform.stores.evidently_workspace import TOP_COLUMNS, add_drift_snapshot, snapshot_tags
from mlplatform.settings import DOCS_SCREENSHOTS_ENV, REPO_ROOT
from mlplatform.domain.spec import DatasetSpec
from mlplatform_tests.monitoring_support import CHAMPION_ROWS, Platform, shuffled_stream, trained_platform


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).parent / "artifacts" / "ui"
DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
ADULT = ModelNames("adult")
SENSOR_NAME = ADULT.retraining_sensor
DRIFT_REPORT, DRIFT_DASHBOARD, EVALUATION_REPORT, RAW_EVENTS = ADULT.assets("drift_report", "drift_dashboard", "evaluation_report", "raw_events")
GROUPS = ("adult", "bike_sharing")  # one group per model, each holding the same nine assets
ASSETS = ("raw_events", "features", "trained_model", "evaluation_report", "drift_report", "retraining_trigger", "drift_dashboard", "live_quality",
          "estimated_performance")
DRIFT = DriftScenario(shift_numeric={"age": 2.0, "hours-per-week": 2.0}, category_mix={"workclass": "Self-emp-inc"}, seed=5)
DRIFTED_ROWS = 1000
MORE_DRIFT = (DriftScenario(shift_numeric={"age": 1.0}, seed=6),  # milder and stronger than DRIFT: the share moves over time
              DriftScenario(shift_numeric={"age": 2.0, "hours-per-week": 2.0, "capital-gain": 2.0}, category_mix={"workclass": "Self-emp-inc", "education": "Doctorate"}, seed=7))
SLOW = 240_000  # ms: each run starts a fresh process that imports the code location, on a machine busy with other tests

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (`make system-deps` installs it)")


@dataclass
class Stack:
    platform: Platform
    dagster: str
    mlflow: str
    evidently: str
    log_dir: Path


def _more_drift_snapshots(platform: Platform, folder: Path) -> None:
    """Two more drift reports of the champion in its Evidently project, made by Evidently from the stream (as the
    drift_report asset makes them) and added through the workspace store, without two more Dagster runs."""
    spec, settings = platform.spec, platform.settings
    champion = platform.model.registry.champion()
    assert champion is not None and settings.evidently_workspace_dir is not None
    stream = platform.rows.iloc[:CHAMPION_ROWS]
    events = lambda rows: validate_frame(rows, spec, generated_id_prefix="more-drift", generated_time_start_us=0).events  # noqa: E731
    for i, scenario in enumerate(MORE_DRIFT):
        current = events(inject_drift(platform.next_rows(DRIFTED_ROWS), spec, scenario, reference=stream))
        path = folder / f"more-drift-{i}.json.xz"
        columns, *_ = compare(spec, events(stream), current, settings.drift_share_threshold, path, snapshot_tags(spec.name, int(champion.version)))
        entry = add_drift_snapshot(settings.evidently_workspace_dir, spec.name, load_snapshot(path), f"more-drift-{i}",
                                   [c.column for c in most_drifted(columns)[:TOP_COLUMNS]], settings.drift_reports_keep)
        assert entry.error is None, entry.error



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> Iterator[Stack]:
    """Two model versions (one `@champion`), a drifted batch and its drift report in a fresh state, two more drift
    reports in the Evidently workspace, then `mlplatform dev`'s servers.

    Automatic retraining, drift and landing runs are switched off, so the daemon only ticks the sensors: the runs the
    tests launch are the only ones competing for the CPU.
    """
    root = tmp_path_factory.mktemp("ui")
    env = {f"MLPLATFORM_{key}": f"http://127.0.0.1:{free_port()}" for key in ("DAGSTER_UI_URL", "MLFLOW_UI_URL", "REPORTS_URL", "EVIDENTLY_UI_URL")}
    env |= {"MLPLATFORM_RETRAIN_EVERY_N": "1000000", "MLPLATFORM_MIN_NEW_LABELLED_FOR_DRIFT": "1000000", "MLPLATFORM_DRIFT_EVERY_N_EVENTS": "1000000",
            "MLPLATFORM_LANDING_SENSOR": "false"}  # the test materializes raw_events from the UI itself
    with trained_platform(root / "state", adult_spec, shuffled_stream(adult_rows, seed=5), **env) as platform:
        platform.replay(inject_drift(platform.next_rows(DRIFTED_ROWS), adult_spec, DRIFT, reference=platform.rows.iloc[:CHAMPION_ROWS]))
        platform.materialize("drift_report", "drift_dashboard")
        platform.materialize("features", "trained_model", "evaluation_report")
        _more_drift_snapshots(platform, root)
        with running(platform.settings, log_dir=root / "logs"):
            yield Stack(platform, env["MLPLATFORM_DAGSTER_UI_URL"], env["MLPLATFORM_MLFLOW_UI_URL"], env["MLPLATFORM_EVIDENTLY_UI_URL"], root / "logs")


def _loopback_only(route: Route) -> None:
    """The machines have no internet and the UIs must not need it: anything but loopback is refused."""
    if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800})
        context.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # pages poll their data; a busy CI machine answers slowly
        context.route("**/*", _loopback_only)
        yield context
        context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    yield page
    page.close()


@contextmanager
def step(page: Page, name: str) -> Iterator[None]:
    """One step of a browser test: on failure its screenshot is saved next to the other test artifacts."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        raise


def _docs_screenshot(page: Page, name: str) -> None:
    if os.environ.get(DOCS_SCREENSHOTS_ENV):
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOTS / f"{name}.png"))


def _enclosing_group(asset: dict[str, float], headers: dict[str, dict[str, float]]) -> str | None:
    """The expanded group whose header spans the asset's node and sits nearest above it."""
    x, y = asset["x"] + asset["width"] / 2, asset["y"]
    above = [name for name, h in headers.items() if h["x"] <= x <= h["x"] + h["width"] and h["y"] < y]
    return max(above, key=lambda name: headers[name]["y"], default=None)


def _open_metadata_link(browser: BrowserContext, page: Page, url: str) -> Page:
    """Click the metadata link with this URL as an operator would; Dagster opens it in a new tab."""
    link = page.locator(f"a[href='{url}']").first
    expect(link).to_be_visible()
    with browser.expect_page() as opened:
        link.click()
    report = opened.value
    report.wait_for_load_state()
    return report


def _shown(asset: str) -> re.Pattern[str]:
    """An asset's name as the zoomed-out graph shows it: whole, or cut in the middle past 18 characters (Dagster's minimal node)."""
    return re.compile(f"^{re.escape(asset)}$" if len(asset) <= 18 else f"^{re.escape(asset[:4])}.*{re.escape(asset[-4:])}$")


def test_asset_graph_shows_the_assets_in_their_groups(stack: Stack, page: Page) -> None:
    graph = page.locator("foreignObject")
    with step(page, "graph-groups"):
        page.goto(f"{stack.dagster}/asset-groups")
        for group in GROUPS:
            expect(graph.get_by_text(group, exact=True).first).to_be_visible()
        expect(page.get_by_role("dialog")).to_have_count(0)  # nux.enabled: false, so no first-visit dialog
    with step(page, "graph-expanded"):
        page.keyboard.press("Alt+e")  # the graph's "Expand all groups"
        for asset in ASSETS:
            expect(graph.get_by_text(_shown(asset))).to_have_count(len(GROUPS))
        page.wait_for_timeout(500)  # the layout animates into place
        headers = {group: graph.get_by_text(group, exact=True).first.bounding_box() for group in GROUPS}
        placed = {asset: sorted(str(_enclosing_group(node.bounding_box(), headers)) for node in graph.get_by_text(_shown(asset)).all())  # type: ignore[arg-type]
                  for asset in ASSETS}
        assert placed == {asset: sorted(GROUPS) for asset in ASSETS}, "each model's assets sit in its own group"
        _docs_screenshot(page, "dagster-asset-graph")


def test_materializing_raw_events_from_the_ui_succeeds(stack: Stack, page: Page) -> None:
    platform = stack.platform
    write_batches(platform.next_rows(200), platform.spec, platform.settings.landing_dir, 200, prefix="from-ui")
    with step(page, "materialize-click"):
        page.goto(f"{stack.dagster}/assets/adult/raw_events")
        button = page.locator("button").filter(has_text=re.compile(r"^\s*Materialize\s*$")).first
        with page.expect_response(lambda r: "/graphql" in r.url and "LaunchPipelineExecution" in (r.request.post_data or "")) as launched:
            button.click()
        run_id = launched.value.json()["data"]["launchPipelineExecution"]["run"]["id"]
    with step(page, "materialize-run-page"):
        page.goto(f"{stack.dagster}/runs/{run_id}")
        expect(page.get_by_text(re.compile(r"\badult(/|__)raw_events\b")).first).to_be_visible()
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=SLOW)
    deadline = time.monotonic() + SLOW / 1000  # the page shows the step's success a moment before the run record ends
    while (run := platform.instance.get_run_by_id(run_id)) is not None and not run.is_finished and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert (latest_metadata(platform.instance, RAW_EVENTS) or {})["ingested"] == 200


def test_automation_page_lists_the_retraining_sensor_running_with_its_ticks(stack: Stack, page: Page) -> None:
    with step(page, "automation-list"):
        page.goto(f"{stack.dagster}/automation")
        link = page.locator(f"a[href$='/sensors/{SENSOR_NAME}']")
        expect(link).to_be_visible()
        row = link.locator("xpath=ancestor::div[count(.//input[@type='checkbox']) = 2][1]")  # selection box, then the on/off switch
        expect(row.locator("input[type=checkbox]").last).to_be_checked()
    with step(page, "sensor-page"):
        link.click()
        expect(page).to_have_url(re.compile(f"/sensors/{SENSOR_NAME}"))
        expect(page.get_by_text("Running", exact=True).first).to_be_visible()
        ticks = page.get_by_role("row").filter(has_text=re.compile(r"\d+:\d\d:\d\d"))  # tick rows have a duration; "Latest tick" has none
        tick_row = ticks.filter(has_text=re.compile(r"\d+ runs? requested|Skipped|Success"))
        deadline = time.monotonic() + SLOW / 1000
        while time.monotonic() < deadline:  # until the daemon's first tick is listed; the rows render after the page
            try:
                expect(tick_row.first).to_be_visible(timeout=5000)
                break
            except AssertionError:
                page.reload()
        expect(tick_row.first).to_be_visible()
        expect(page.get_by_text("Loading ticks…")).to_have_count(0)
        _docs_screenshot(page, "dagster-retraining-sensor")


def _drifted(meta: dict[str, object]) -> list[str]:
    return [name.strip() for name in str(meta["drifted_column_names"]).split(",")]


def _drift_metadata(instance: dg.DagsterInstance, url: str) -> dict[str, object]:
    """The metadata of the drift report whose page is `url`, among the latest few."""
    records = instance.fetch_materializations(DRIFT_REPORT, limit=10).records
    found = [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records if r.asset_materialization is not None]
    return next(m for m in found if m.get("report_url") == url)


def test_drift_report_link_opens_the_rendered_report_naming_the_drifted_columns(stack: Stack, browser: BrowserContext, page: Page) -> None:
    meta = latest_metadata(stack.platform.instance, DRIFT_REPORT) or {}
    assert {"age", "hours-per-week", "workclass"} <= set(_drifted(meta)), meta
    with step(page, "drift-asset-page"):
        page.goto(f"{stack.dagster}/assets/adult/drift_report")
        # The daemon's drift sensor may have added a newer report (its first tick requests one): follow the link the page shows.
        link = page.locator(f"a[href^='{stack.platform.settings.reports_url}/drift/']").first
        expect(link).to_be_visible()
        url = str(link.get_attribute("href"))
        shown = _drift_metadata(stack.platform.instance, url)
        report = _open_metadata_link(browser, page, url)
    with step(report, "drift-report"):
        expect(report).to_have_url(url)
        for column in _drifted(shown):
            expect(report.get_by_text(column, exact=True).first).to_be_visible()
        report.close()


def test_evaluation_report_and_model_version_are_links(stack: Stack, browser: BrowserContext, page: Page) -> None:
    meta = latest_metadata(stack.platform.instance, EVALUATION_REPORT) or {}
    with step(page, "evaluation-asset-page"):
        page.goto(f"{stack.dagster}/assets/adult/evaluation_report")
        expect(page.locator(f"a[href='{meta['mlflow_model_version']}']").first).to_be_visible()
        expect(page.locator(f"a[href='{meta['champion_model_version']}']").first).to_be_visible()
        report = _open_metadata_link(browser, page, str(meta["report_url"]))
    with step(report, "evaluation-report"):
        expect(report.get_by_role("heading", name=f"{stack.platform.spec.name}: challenger v2 {meta['decision']}")).to_be_visible()
        expect(report.get_by_text(str(meta["reason"])).first).to_be_visible()
        report.close()


def test_launching_a_materialization_through_graphql_succeeds(stack: Stack) -> None:
    from dagster_graphql import DagsterGraphQLClient

    platform = stack.platform
    write_batches(platform.next_rows(100), platform.spec, platform.settings.landing_dir, 100, prefix="from-graphql")
    parts = urlsplit(stack.dagster)
    client = DagsterGraphQLClient(str(parts.hostname), port_number=parts.port, timeout=60)
    run_id = client.submit_job_execution("__ASSET_JOB", asset_selection=[RAW_EVENTS], tags={LAUNCHED_BY_TAG: "graphql-test"})
    deadline = time.monotonic() + SLOW / 1000
    status = client.get_run_status(run_id)
    while status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED) and time.monotonic() < deadline:
        time.sleep(2)
        status = client.get_run_status(run_id)
    assert status == dg.DagsterRunStatus.SUCCESS, f"run {run_id} ended {status}; server logs in {stack.log_dir}"
    assert (latest_metadata(platform.instance, RAW_EVENTS) or {})["ingested"] == 100


def test_mlflow_ui_shows_the_registered_model_its_versions_and_the_champion(stack: Stack, page: Page) -> None:
    spec = stack.platform.spec
    registry = stack.platform.model.registry
    versions = registry.versions()
    champion = registry.champion()
    assert versions and champion is not None
    with step(page, "mlflow-model"):
        page.goto(f"{stack.mlflow}/#/models/{spec.model_name}")
        expect(page.get_by_text(spec.model_name, exact=True).first).to_be_visible()
        for version in versions:
            expect(page.get_by_role("link", name=f"Version {version.version}", exact=True)).to_be_visible()
        champion_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {champion.version}", exact=True))
        expect(champion_row.get_by_text(re.compile(rf"^@\s*{CHAMPION}$"))).to_be_visible()


def test_evidently_ui_shows_the_models_project_with_drift_share_over_the_reports(stack: Stack, page: Page) -> None:
    meta = latest_metadata(stack.platform.instance, DRIFT_DASHBOARD) or {}  # the report's place in the workspace
    project_url = str(meta[EVIDENTLY_PROJECT_URL])
    assert project_url.startswith(f"{stack.evidently}/projects/"), meta
    with step(page, "evidently-projects"):
        page.goto(stack.evidently)
        expect(page.get_by_text(stack.platform.spec.name, exact=True).first).to_be_visible()
    with step(page, "evidently-dashboard"):
        page.goto(project_url)
        share = page.locator("div.MuiCard-root, div.MuiPaper-root").filter(has=page.get_by_text("Share of drifted columns", exact=True)).last
        expect(share).to_be_visible()
        points = share.locator("svg .MuiMarkElement-root")  # one mark per drift report's snapshot
        expect(points.nth(2)).to_be_visible()
        assert points.count() >= 3
        _docs_screenshot(page, "evidently-drift-dashboard")


def test_mlflow_run_page_shows_the_logged_datasets_and_the_evaluation_plots(stack: Stack, page: Page) -> None:
    spec = stack.platform.spec
    meta = latest_metadata(stack.platform.instance, EVALUATION_REPORT) or {}
    run_url = str(meta["mlflow_run"])
    with step(page, "mlflow-run-datasets"):
        page.goto(run_url)
        assistant = page.get_by_role("button", name="Close")  # MLflow's assistant panel opens beside the run by default
        expect(assistant).to_be_visible()
        assistant.click()
        train = page.get_by_text(f"{spec.name}-train").first
        expect(train).to_be_visible()  # the first input; the others behind the "+1" beside it (metric rows have "+1"s of their own)
        train.locator("xpath=ancestor::*[.//*[normalize-space(text())='+1']][1]").get_by_text("+1", exact=True).first.click()
        expect(page.get_by_text(f"{spec.name}-holdout").first).to_be_visible()
        _docs_screenshot(page, "mlflow-run-datasets")
    with step(page, "mlflow-run-artifacts"):
        page.goto(f"{run_url}/artifacts")
        for plot in ("roc_curve", "precision_recall_curve", "calibration_curve", "confusion_matrix"):
            expect(page.get_by_text(re.compile(rf"^{plot}.*\.png$")).first).to_be_visible()
        page.get_by_text(re.compile(r"^roc_curve.*\.png$")).first.click()
        expect(page.get_by_text(re.compile(r"^roc_curve.*\.png$")).nth(1)).to_be_visible()  # the preview's title beside the tree
        page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth >= 300)")  # the figure itself, 5 x 4 in at 72 dpi
        _docs_screenshot(page, "mlflow-run-evaluation-plots")


def test_dagster_asset_page_shows_freshness(stack: Stack, page: Page) -> None:
    with step(page, "dagster-freshness"):
        page.goto(f"{stack.dagster}/assets/adult/trained_model")
        status = page.locator("div").filter(has=page.get_by_text("Freshness policy", exact=True)).filter(has=page.get_by_text("Latest materialization")).last
        expect(status.get_by_text("Passing", exact=True)).to_be_visible()  # materialized well inside freshness_model_hours
        _docs_screenshot(page, "dagster-asset-freshness")
