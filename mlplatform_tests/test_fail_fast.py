"""An unreachable MLflow fails a retraining run, and alerts, within the settings' retry budget (not after MLflow's own
retries nested inside every Dagster attempt: 6 min 49 s before), with the champion unchanged."""

import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.policy import calculate_delay

from mlplatform.domain.retry_budget import RetryBudget
from mlplatform.orchestration.assets import external_retry_policy
from mlplatform.settings import Settings
from mlplatform.stores.alerting import NO_VERSION, AlertName
from mlplatform_tests.alerting_support import (Alertmanager, alertmanager, champion, first_rows, free_port, labels_of, platform,
                                              platform_instance, tick)
from mlplatform_tests.support.loop import names, retrain_job

__all__ = ["alertmanager", "first_rows", "platform", "platform_instance"]  # fixtures used by name

# Room for step start-up and the sensor tick on a loaded 2-core box: the bound proves "within the budget, not minutes";
# the precise time is for benchmarks.
SLACK_SECONDS = 30.0


@pytest.mark.parametrize("total", [10.0, 60.0, 120.0])
def test_the_budget_covers_every_attempt_and_every_delay_at_their_longest(total: float) -> None:
    budget = RetryBudget(total)
    policy = external_retry_policy(budget)
    assert policy.jitter is dg.Jitter.PLUS_MINUS  # at most ± delay on each wait
    delays = sum(calculate_delay(n, policy.backoff, None, policy.delay) + policy.delay for n in range(1, policy.max_retries + 1))
    assert policy.max_retries == budget.step_retries and delays == pytest.approx(budget.worst_delays_seconds)
    assert delays + (policy.max_retries + 1) * budget.mlflow_request_timeout_seconds <= total


def _closed_port(tmp_path: Path) -> tuple[str, str]:
    """A tracking server URL on a 127.0.0.1 port nothing listens on: every request is refused (URL, text of the cause)."""
    address = f"127.0.0.1:{free_port()}"
    return f"http://{address}", address


def _unopenable_sqlite(tmp_path: Path) -> tuple[str, str]:
    """A SQLite store whose database path is a folder: SQLite cannot open it (MLflow used to retry this for ~100 s)."""
    (tmp_path / "mlflow.db").mkdir()
    return f"sqlite:///{tmp_path / 'mlflow.db'}", "unable to open database file"


@pytest.mark.parametrize("outage", [_closed_port, _unopenable_sqlite], ids=["closed-port", "unopenable-sqlite"])
def test_unreachable_mlflow_fails_the_run_and_alerts_within_the_budget(
        platform: Settings, platform_instance: dg.DagsterInstance, alertmanager: Alertmanager, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, outage: Callable[[Path], tuple[str, str]]) -> None:
    instance = platform_instance
    failures = tick(instance, "run_failure_alerts", None)[0]
    before = champion(platform)
    uri, cause = outage(tmp_path)
    budget = platform.retry_budget

    with monkeypatch.context() as mp:
        mp.setenv("MLPLATFORM_MLFLOW_TRACKING_URI", uri)
        started = time.monotonic()
        failed = retrain_job().execute_in_process(instance=instance, raise_on_error=False)
        run_seconds = time.monotonic() - started
        tick(instance, "run_failure_alerts", failures)  # the sensor runs while MLflow is still unreachable
        alert_seconds = time.monotonic() - started
    print(f"{uri}: run failed after {run_seconds:.1f} s, alert sent after {alert_seconds:.1f} s (budget {budget.total_seconds:.0f} s)")

    assert not failed.success
    retries = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == budget.step_retries and {e.step_key for e in retries} == {f"{names().model}__trained_model"}
    assert alert_seconds < budget.total_seconds + SLACK_SECONDS
    [alert] = [a for a in alertmanager.alerts(AlertName.RUN_FAILED) if failed.run_id in a["annotations"]["dagster_run"]]
    assert labels_of(alert)["model_version"] == NO_VERSION  # MLflow could not say which version serves
    assert "trained_model" in alert["annotations"]["description"] and cause in alert["annotations"]["description"]
    assert champion(platform) == before
