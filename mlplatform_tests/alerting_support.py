"""For the alerting tests: a real Prometheus Alertmanager (Debian's binary on 127.0.0.1, temp config, storage and
port), a state folder with a first champion shared by a test module, and sensor ticks as the daemon runs them."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.root import platform as root_platform
from mlplatform_tests.support import loop
from mlplatform.pipeline.replay import read_source, write_batches
from mlplatform.settings import Settings
from mlplatform.domain.spec import load_spec
from mlplatform_tests.conftest import FAST_TRAINING
from mlplatform.ports import free_port

FIRST_ROWS = 500  # a small first window: v1 is weak, so a retrained v2 on more data beats it

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
CONFIG = """route:
  receiver: tests
  group_wait: 1s
receivers:
  - name: tests
"""


def require_binary() -> None:
    if not Path(BINARY).exists():
        pytest.skip("prometheus-alertmanager is not installed (`make system-deps` installs Debian's package)")



class Alertmanager:
    """Start, stop and restart on the same port and storage; read alerts back from API v2."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "alertmanager.yml").write_text(CONFIG, encoding="utf-8")

    def start(self) -> None:
        log = (self.folder / "alertmanager.log").open("ab")
        self.process = subprocess.Popen(
            [BINARY, f"--config.file={self.folder / 'alertmanager.yml'}", f"--storage.path={self.folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(self.folder / 'alertmanager.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("alertmanager did not become ready within 30 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def alerts(self, alertname: str) -> list[dict]:
        """Active alerts with this name (resolved ones, endsAt in the past, are not listed)."""
        response = httpx.get(f"{self.url}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}, timeout=5)
        response.raise_for_status()
        return list(response.json())


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    require_binary()
    am = Alertmanager(tmp_path_factory.mktemp("alertmanager"))
    am.start()
    yield am
    am.stop()


@pytest.fixture(scope="module")
def first_rows() -> int:
    """How many events v1 is trained on; a module overrides this fixture to change it."""
    return FIRST_ROWS


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, alertmanager: Alertmanager, first_rows: int) -> Iterator[Settings]:
    """One state folder per test module, alerting to the module's Alertmanager, with a first champion
    (v1, trained on the first `first_rows` events): training is the slow part, so a module shares it."""
    state_dir = tmp_path_factory.mktemp("platform") / "state"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**FAST_TRAINING, "MLPLATFORM_STATE_DIR": str(state_dir),
                           "DAGSTER_HOME": str(state_dir / "dagster"), "MLPLATFORM_ALERTMANAGER_URL": alertmanager.url,
                           "MLPLATFORM_ALERT_KEEP_FIRING_SECONDS": "0"}.items():  # the tests read a resolve at once
            mp.setenv(key, value)
        prepare_dagster_home(Settings())
        settings = root_platform().model(loop.ADULT).settings
        spec = load_spec(settings.dataset_spec)
        write_batches(read_source(spec).iloc[:first_rows], spec, settings.landing_dir, first_rows)
        with dg.DagsterInstance.get() as instance:
            materialize(instance, ["raw_events", "features", "trained_model", "evaluation_report"])
        yield settings


@pytest.fixture
def platform_instance(platform: Settings) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.get() as inst:
        yield inst


def materialize(instance: dg.DagsterInstance, assets: list[str], raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Materialize adult's `assets` (names) through the code location's definitions."""
    return loop.materialize(instance, assets, raise_on_error=raise_on_error)


def tick(instance: dg.DagsterInstance, sensor_name: str, cursor: str | None) -> tuple[str | None, str | None]:
    """One evaluation of a sensor, as the daemon would run it; returns (cursor, skip message)."""
    result = loop.tick(instance, sensor_name, cursor)
    return result.cursor, result.skip_message


def champion(settings: Settings) -> int:
    record = root_platform().model(loop.ADULT).registry.champion_record()
    assert record is not None
    return record.version


def labels_of(alert: dict) -> dict[str, str]:
    return dict(alert["labels"])
