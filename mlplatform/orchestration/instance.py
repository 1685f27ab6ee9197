"""The Dagster instance in the state folder: SQLite storage, telemetry off, run retries and a queue."""

import os

import yaml

from mlplatform.domain.keys import MODEL_TAG, PRIORITY_TAG, RETRAIN_TAG
from mlplatform.settings import Settings


def retrain_run_tags(model: str) -> dict[str, str]:
    """Every retraining run of `model`: the queue runs one per model at a time, before drift reports (a retraining
    waiting behind them delays a better model in service)."""
    return {RETRAIN_TAG: model, PRIORITY_TAG: "10", MODEL_TAG: model}


# A loaded machine is slow, not broken: a launch the code server does not answer in time (gRPC DEADLINE_EXCEEDED)
# goes back into the queue and is tried again after a pause, instead of failing the run.
LAUNCH_RETRIES = 6
LAUNCH_RETRY_DELAY_SECONDS = 10
# Time for a code server to load the definitions, and for a launched run to start, on a busy box (Dagster: 180 s each).
CODE_SERVER_STARTUP_SECONDS = 360
RUN_START_TIMEOUT_SECONDS = 600


def instance_config() -> dict[str, object]:
    return {
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            # Dequeue every second (Dagster's default: 5 s): the queue is part of the time from trigger to new champion.
            "config": {"max_concurrent_runs": 4, "tag_concurrency_limits": [{"key": RETRAIN_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}],
                       "dequeue_interval_seconds": 1, "max_user_code_failure_retries": LAUNCH_RETRIES,
                       "user_code_failure_retry_delay": LAUNCH_RETRY_DELAY_SECONDS},
        },
        "code_servers": {"local_startup_timeout": CODE_SERVER_STARTUP_SECONDS, "reload_timeout": CODE_SERVER_STARTUP_SECONDS},
        "run_retries": {"enabled": True, "max_retries": 1},
        "run_monitoring": {"enabled": True, "max_runtime_seconds": 3600, "poll_interval_seconds": 30, "start_timeout_seconds": RUN_START_TIMEOUT_SECONDS},
    }


def prepare_dagster_home(settings: Settings) -> str:
    """Create the Dagster home with its dagster.yaml and point DAGSTER_HOME at it."""
    settings.ensure_dirs()
    config_path = settings.dagster_home / "dagster.yaml"
    if not config_path.exists():
        config_path.write_text(yaml.safe_dump(instance_config(), sort_keys=False), encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    return str(settings.dagster_home)
