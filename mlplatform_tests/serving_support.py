"""Helpers for the serving tests: tiny real models in a real MLflow store, and a real server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlplatform.stores.eventlog import SERVING_SOURCE, EventLog
from mlplatform.stores.registry import Registry
from mlplatform.pipeline.replay import canonical_labels, json_records, read_source
from mlplatform.domain.spec import load_spec
from mlplatform.root import platform
from mlplatform.serving import ModelParts
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.training import TrainingConfig, train
from mlplatform.domain.validation import validate_frame
from mlplatform.ports import free_port
from mlplatform_tests.conftest import ADULT_SPEC

TOKEN = "test-token"
TINY = TrainingConfig(trials=1, seconds=10, num_boost_round=40, early_stopping_rounds=10, min_rows=100)
STARTUP_TIMEOUT_S = 180.0


def state_settings(folder: Path, spec_path: Path) -> Settings:
    settings = Settings(state_dir=folder, dataset_spec=spec_path)
    settings.ensure_dirs()
    return settings


def canonical(rows: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    return validate_frame(rows, spec, generated_id_prefix="t", generated_time_start_us=0).events


def register_versions(settings: Settings, spec: DatasetSpec, rows: pd.DataFrame, count: int, promote_first: bool = True) -> list[int]:
    """`count` registered versions, each trained on a different slice so that their predictions differ."""
    registry = Registry(settings.tracking_uri, settings.artifact_root, spec)
    events = canonical(rows, spec)
    versions = []
    for i in range(count):
        window = events.iloc[i * 700 : i * 700 + 1500].reset_index(drop=True)
        result = train(window, spec, TINY)
        versions.append(int(registry.log_model(result, window, {}, {}).version))
    if promote_first:
        registry.promote(versions[0])
    return versions


def break_artifacts(registry: Registry, version: int) -> None:
    """Overwrite the version's booster in the artifact store, so that loading it fails as a corrupt artifact would."""
    location = Path(urlparse(registry.client.get_model_version_download_uri(registry.name, str(version))).path)
    boosters = list(location.rglob("booster.txt"))
    assert boosters, location
    for path in boosters:
        path.write_text("not a LightGBM model", encoding="utf-8")



@dataclass
class Server:
    """A real `mlplatform serve` process on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """kill -9: no shutdown hook runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLATFORM_")}
    env.update(
        MLPLATFORM_STATE_DIR=str(settings.state_dir),
        MLPLATFORM_SERVE_TOKEN=TOKEN,
        MLPLATFORM_SERVE_RELOAD_SECONDS="0.2",
        **extra,
    )
    return env


def model_parts(settings: Settings) -> ModelParts:
    """The model of `settings.dataset_spec` as the composition root builds it: the one place tests compose serving."""
    return platform(settings).model(load_spec(settings.dataset_spec).name)


@contextmanager
def running_server(settings: Settings, wait_ready: bool = True, every_model: bool = False, workers: int = 1, port: int | None = None,
                   **extra_env: str) -> Iterator[Server]:
    """Start `mlplatform serve --model <the settings' model>` (or, with `every_model`, for every model of the code location)
    in `workers` processes on `port` (a free one by default), wait until it answers (and every model has a champion, with
    `wait_ready`), stop it after."""
    port = free_port() if port is None else port
    log_path = settings.state_dir / f"serve-{port}.log"
    selected = [] if every_model else ["--model", load_spec(settings.dataset_spec).name]
    command = ["-m", "mlplatform.cli", "serve", "--port", str(port), "--workers", str(workers), *selected]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *command],
            env=server_env(settings, **extra_env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until_up(server, "/readyz" if wait_ready else "/healthz")
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_up(server: Server, path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not up on {path} after {STARTUP_TIMEOUT_S}s:\n{server.log_text()[-3000:]}")


def readiness(client: httpx.Client, model: str | None = None) -> dict[str, Any]:
    """/readyz of `model` (default: the only model served)."""
    models = client.get("/readyz").json()["models"]
    return models[model] if model is not None else models[only(models)]


def only(models: dict[str, Any]) -> str:
    assert len(models) == 1, f"name the model: this server serves {sorted(models)}"
    return next(iter(models))


def wait_for_version(client: httpx.Client, version: int, model: str | None = None, timeout_s: float = 120.0) -> float:
    """Poll /readyz until `model` (default: the only one) is served at `version`; returns when it was."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if readiness(client, model).get("model_version") == version:
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"server did not switch to version {version} within {timeout_s}s")


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The sum of the samples from /metrics with that name and those labels, whatever their other labels (0 when absent)."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(float(sample.value) for family in families for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def authorised_client(url: str) -> httpx.Client:
    """A client sending the bearer token, which the test servers require on everything but the health endpoints."""
    return httpx.Client(base_url=url, timeout=30, headers=auth())


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    """An authorised HTTP client on the importing test module's `server` fixture."""
    with authorised_client(server.url) as c:
        yield c


@pytest.fixture(scope="module")
def settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A fresh Adult state folder for the importing test module, named after it."""
    return state_settings(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "state", ADULT_SPEC)


@pytest.fixture(scope="module")
def registry(settings: Settings, adult_spec: DatasetSpec, versions: list[int]) -> Registry:
    """The registry of `settings`, once the importing module's `versions` fixture has registered its versions."""
    return Registry(settings.tracking_uri, settings.artifact_root, adult_spec)


@pytest.fixture(scope="module")
def frame(adult_rows: pd.DataFrame) -> pd.DataFrame:
    """The events the tests send: Adult rows beyond every version's training slice."""
    return adult_rows.iloc[30_000:30_064].reset_index(drop=True)


@pytest.fixture(scope="module")
def records(adult_spec: DatasetSpec, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """`frame` as `POST /predict` bodies."""
    return json_records(frame, adult_spec)


# An over-long batch is refused with 413 (the limit is in the message), which schemathesis does not count as a rejection by default.
SCHEMATHESIS_CONFIG = """[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
"""


def fuzz(server: Server, folder: Path, operations: int) -> None:
    """Schemathesis with every check (no server error; statuses, content types and bodies as documented; invalid data
    refused and valid data accepted; the token not ignored) on every operation of the server's OpenAPI document, with the token."""
    (folder / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG, encoding="utf-8")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", "schemathesis.toml", "run", f"{server.url}/openapi.json",
         "--checks", "all", "--max-examples", "15", "--seed", "7", "--header", f"Authorization: Bearer {TOKEN}", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=folder,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert f"Tested: {operations}" in result.stdout and "Failures:" not in result.stdout, result.stdout[-3000:]


def served_regression_log(settings: Settings, spec: DatasetSpec) -> EventLog:
    """60 served Bike Sharing predictions, each 4.0 off its label: 40 by version 3, 20 by version 2; the first 50
    get their labels late, by event id (so version 3 has 40 labelled, version 2 has 10)."""
    raw = read_source(spec).iloc[:60]
    events = validate_frame(raw.drop(columns=[spec.label]), spec, generated_id_prefix="served", generated_time_start_us=0).events
    truth = canonical_labels(raw, spec).to_numpy()
    log = EventLog.for_dataset(settings.events_dir, spec)
    log.append(events.assign(label=None, model_version=["3"] * 40 + ["2"] * 20, prediction=truth + 4.0, probability=None), SERVING_SOURCE)
    log.add_labels(events["event_id"].iloc[:50].tolist(), truth[:50].tolist())
    return log



def race_for_one_id(url: str, headers: dict[str, str], record: dict[str, Any], event_id: str, requests: int = 8) -> list[tuple[int, int]]:
    """`requests` predictions of `record` giving one new `event_id`, over connections opened beforehand and released
    together: the serving process that answered each (its /readyz, asked on the same connection first) and its status."""
    clients = [httpx.Client(base_url=url, headers=headers, timeout=30) for _ in range(requests)]
    start = threading.Barrier(requests)

    def send(own: httpx.Client) -> tuple[int, int]:
        process = own.get("/readyz").json()["process"]  # the connection is open, and its process known, before the race
        start.wait()
        return process, own.post("/predict", json={**record, "event_id": event_id}).status_code

    try:
        with ThreadPoolExecutor(requests) as pool:
            return list(pool.map(send, clients))
    finally:
        for own in clients:
            own.close()
