"""Shared fixtures: a real state folder per test (Dagster home, MLflow SQLite store, event log)."""

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.pipeline.replay import read_source
from mlplatform.stores.eventlog import EventLog
from mlplatform.root import platform
from mlplatform.settings import REPO_ROOT, Settings
from mlplatform.domain.spec import DatasetSpec, load_spec

pytest_plugins = ["mlplatform_tests.support.postgres"]  # postgres_cluster (session) and postgres_url (per test)

ADULT_SPEC = REPO_ROOT / "data" / "adult.yaml"
BIKE_SPEC = REPO_ROOT / "data" / "bike_sharing.yaml"
os.environ.pop("MLPLATFORM_CODE_SERVER_PORT", None)  # a developer's own stack's port: the tests' stacks take free ports
DEFAULT_STATE = Settings.model_fields["state_dir"].default  # the clone's own state folder, which `make demo` uses
_DEFAULT_STATE_BEFORE = pytest.StashKey[bool]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_DEFAULT_STATE_BEFORE] = DEFAULT_STATE.exists()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test that used the default state folder instead of its own left state in the clone that `make demo` then
    refused (a test of the last stop did): the run fails, saying so. Checked where the run started (xdist's controller)."""
    if hasattr(session.config, "workerinput") or session.config.stash.get(_DEFAULT_STATE_BEFORE, True) or not DEFAULT_STATE.exists():
        return
    session.config.get_terminal_writer().line(f"\nthe tests left {DEFAULT_STATE}: a test used the default state folder, not its own "
                                              "(`state` fixture or MLPLATFORM_STATE_DIR)", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

FAST_TRAINING = {
    "MLPLATFORM_TUNING_TRIALS": "2",
    "MLPLATFORM_TUNING_SECONDS": "20",
    "MLPLATFORM_MIN_TRAINING_ROWS": "100",
    "MLPLATFORM_RETRAIN_EVERY_N": "1000",
    "MLPLATFORM_MIN_NEW_LABELLED_FOR_DRIFT": "200",
    "MLPLATFORM_RETRAIN_COOLDOWN_SECONDS": "0",
    "MLPLATFORM_LANDING_QUIET_SECONDS": "0.2",  # tests write whole files and ingest at once (test_landing_hardening sets its own)
}


@pytest.fixture(scope="session")
def adult_spec() -> DatasetSpec:
    return load_spec(ADULT_SPEC)


@pytest.fixture(scope="session")
def adult_rows(adult_spec: DatasetSpec) -> pd.DataFrame:
    """All Adult rows in stream order, with event_id and event_time (as `replay` writes them)."""
    return read_source(adult_spec)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A fresh state folder with fast training settings; DAGSTER_HOME points inside it. Yields the adult model's
    settings (its landing folder, its spec) as the composition root builds them."""
    state_dir = tmp_path / "state"
    monkeypatch.setenv("MLPLATFORM_STATE_DIR", str(state_dir))
    for key, value in FAST_TRAINING.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(state_dir / "dagster"))
    settings = Settings()
    prepare_dagster_home(settings)
    yield platform(settings).model("adult").settings
    os.environ.pop("DAGSTER_HOME", None)


@pytest.fixture
def instance(state: Settings) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.get() as inst:
        yield inst


ADULT_COLUMNS = ["event_id", "event_time", "age", "workclass", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income"]


@pytest.fixture
def log(tmp_path: Path, adult_spec: DatasetSpec) -> Iterator[EventLog]:
    """A fresh SQLite event log for Adult (landing and validation tests)."""
    event_log = EventLog(tmp_path / "events.sqlite", adult_spec)
    yield event_log
    event_log.close()


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    """An empty landing folder."""
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder
