"""Freshness and the run queue: trained_model, drift_report and live_quality carry the freshness policy their model's
settings give, and Dagster's own freshness daemon turns a model stale after them (what the UI shows); a bad window is
refused naming its field; the instance's run limits live in Dagster's `concurrency:` section and load in a real
DagsterInstance."""

import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from mlplatform.domain.keys import RETRAIN_TAG
from mlplatform.domain.spec import DatasetSpec
from mlplatform.orchestration.component import model_definitions
from mlplatform.orchestration.instance import LAUNCH_RETRIES, MAX_CONCURRENT_RUNS
from mlplatform.orchestration.launch import DEFINITIONS_MODULE
from mlplatform.orchestration.names import ALL_ASSETS, DRIFT_REPORT, ESTIMATED_PERFORMANCE, LIVE_QUALITY, TRAINED_MODEL, ModelNames
from mlplatform.root import Platform, PlatformError
from mlplatform.pipeline.replay import write_batches
from mlplatform.settings import REPO_ROOT, Settings
from mlplatform_tests.support.loop import LOOP, materialize

DEFS = "type: mlplatform.RetrainingLoop\nattributes:\n  spec: {spec}\n  loop: {loop}\n"


def _platform(tmp_path: Path, loop: str) -> Platform:
    folder = tmp_path / "defs" / "adult"
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(DEFS.format(spec=REPO_ROOT / "data" / "adult.yaml", loop=loop), encoding="utf-8")
    return Platform.discover(Settings(state_dir=tmp_path / "state"), tmp_path / "defs")


def _policies(settings: Settings) -> dict[str, dg.FreshnessPolicy | None]:
    names = ModelNames("adult")
    specs = {spec.key: spec for assets in model_definitions(names, settings).assets or [] for spec in assets.specs}  # type: ignore[union-attr]
    return {asset: specs[names.asset(asset)].freshness_policy for asset in ALL_ASSETS}


def _window(hours: float) -> dg.FreshnessPolicy:
    return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=hours), warn_window=timedelta(hours=hours / 2))


def test_the_monitored_assets_carry_the_default_freshness_windows_and_the_others_none(tmp_path: Path) -> None:
    policies = _policies(_platform(tmp_path, "{}").model("adult").settings)
    assert policies == {"raw_events": None, "features": None, TRAINED_MODEL: _window(168), "evaluation_report": None,
                        DRIFT_REPORT: _window(6), "retraining_trigger": None, "drift_dashboard": None, ESTIMATED_PERFORMANCE: _window(6),
                        LIVE_QUALITY: _window(0.5)}


def test_a_models_own_freshness_windows_reach_its_assets(tmp_path: Path) -> None:
    settings = _platform(tmp_path, "{freshness_model_hours: 24, freshness_drift_hours: 1, freshness_live_quality_hours: 0.25}").model("adult").settings
    policies = _policies(settings)
    assert (policies[TRAINED_MODEL], policies[DRIFT_REPORT], policies[ESTIMATED_PERFORMANCE], policies[LIVE_QUALITY]) == (
        _window(24), _window(1), _window(1), _window(0.25))


@pytest.mark.parametrize(
    ("loop", "message"),
    [
        ("{freshness_model_hours: 0.01}", "attributes.loop.freshness_model_hours: Input should be greater than or equal to 0.05"),
        ("{freshness_drift_hours: soon}", "attributes.loop.freshness_drift_hours"),
        ("{freshness_live_quality_hours: -1}", "attributes.loop.freshness_live_quality_hours: Input should be greater than or equal to 0.05"),
        ("{freshness_hours: 3}", "attributes.loop.freshness_hours: Extra inputs are not permitted"),
    ],
)
def test_a_bad_freshness_window_is_refused_naming_its_field(tmp_path: Path, loop: str, message: str) -> None:
    with pytest.raises(PlatformError) as refused:
        _platform(tmp_path, loop)
    assert message in str(refused.value), str(refused.value)


def test_a_bad_freshness_window_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLPLATFORM_FRESHNESS_DRIFT_HOURS", "0")
    with pytest.raises(ValueError, match="freshness_drift_hours"):
        Settings(state_dir=tmp_path)


def test_the_run_limits_are_in_the_concurrency_section_and_load_in_a_real_instance(state: Settings, instance: dg.DagsterInstance) -> None:
    written = yaml.safe_load((state.dagster_home / "dagster.yaml").read_text(encoding="utf-8"))
    assert "run_coordinator" not in written and set(written["concurrency"]) == {"runs"}
    assert "max_concurrent_runs" not in written["run_queue"] and "tag_concurrency_limits" not in written["run_queue"]
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None and queue.max_concurrent_runs == MAX_CONCURRENT_RUNS
    assert queue.max_user_code_failure_retries == LAUNCH_RETRIES
    assert [(limit["key"], limit["value"], limit["limit"]) for limit in queue.tag_concurrency_limits] == [(RETRAIN_TAG, {"applyLimitPerUniqueValue": True}, 1)]
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator) and coordinator.dequeue_interval_seconds == 1


def _freshness(instance: dg.DagsterInstance, at: float) -> dict[str, str]:
    """One iteration of Dagster's own freshness daemon over the code location, at time `at`: each monitored asset's state."""
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name=DEFINITIONS_MODULE, working_directory=str(REPO_ROOT)), location_name="mlplatform")
    with freeze_time(at), create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:
        list(FreshnessDaemon().run_iteration(workspace))
    names = ModelNames("adult")
    records = instance.get_freshness_state_records([names.asset(a) for a in (TRAINED_MODEL, DRIFT_REPORT, LIVE_QUALITY)])
    return {key.path[-1]: record.freshness_state.value for key, record in records.items()}


def test_dagsters_freshness_daemon_turns_a_model_stale_after_its_windows(
    state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame
) -> None:
    write_batches(adult_rows.iloc[:1200], adult_spec, state.landing_dir, 1200)
    assert materialize(instance, LOOP).success
    now = time.time()
    assert _freshness(instance, now) == {TRAINED_MODEL: "PASS", DRIFT_REPORT: "UNKNOWN", LIVE_QUALITY: "UNKNOWN"}
    assert _freshness(instance, now + 100 * 3600)[TRAINED_MODEL] == "WARN", "past half of its 168 h"
    assert _freshness(instance, now + 200 * 3600)[TRAINED_MODEL] == "FAIL", "past its 168 h"
