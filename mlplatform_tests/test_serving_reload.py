"""Hot reload over real HTTP: not ready without a champion, 10 promotions under load, a broken version never served."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd
import pytest

from mlplatform.stores.registry import Registry
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform_tests.serving_support import (Server, auth, authorised_client, break_artifacts, client, frame, metric, readiness, records, register_versions,
                                              registry, running_server, settings, wait_for_version)

PROMOTIONS = 10


@pytest.fixture(scope="module")
def versions(settings: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> list[int]:
    """Three versions, none champion yet: two good ones to alternate, and one to break."""
    return register_versions(settings, adult_spec, adult_rows, 3, promote_first=False)


@pytest.fixture(scope="module")
def server(settings: Settings, versions: list[int]) -> Iterator[Server]:
    with running_server(settings, wait_ready=False) as srv:
        yield srv


def test_not_ready_until_a_champion_exists(server: Server, client: httpx.Client, registry: Registry, versions: list[int], records: list[dict[str, Any]]) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    refused = client.post("/predict", json=records[0])
    assert refused.status_code == 503 and "no champion" in refused.json()["detail"]
    reload = client.post("/admin/reload", headers=auth())
    assert reload.status_code == 503 and "no champion" in reload.json()["error"]
    registry.promote(versions[0])
    reload = client.post("/admin/reload", headers=auth()).json()
    # The watcher (every 0.2 s here) may have switched first; either way exactly one load happened, and it is v1.
    assert reload["model_version"] == versions[0] and reload["error"] is None, reload
    assert metric(client, "mlplatform_model_reloads_total") == 1
    assert client.post("/admin/reload", headers=auth()).json() == {"model_version": versions[0], "changed": False, "error": None}
    assert client.post("/predict", json=records[0]).json()["model_version"] == versions[0]
    # The soak probe: with two models, "serving model version 5 (was 3)" twice in the log, saying neither which.
    assert f"adult: serving model version {versions[0]} (was None)" in server.log_text()


@dataclass
class Answer:
    sent: float
    received: float
    record: int
    status: int
    version: int | None
    probability: float | None


def _load(url: str, records: list[dict[str, Any]], stop: threading.Event, answers: list[Answer], worker: int) -> None:
    with authorised_client(url) as client:
        i = worker
        while not stop.is_set():
            index = i % len(records)
            sent = time.monotonic()
            try:
                response = client.post("/predict", json=records[index])
                body = response.json() if response.status_code == 200 else {}
                answers.append(Answer(sent, time.monotonic(), index, response.status_code, body.get("model_version"), body.get("probability")))
            except httpx.HTTPError:
                answers.append(Answer(sent, time.monotonic(), index, 0, None, None))
            i += 4


def test_ten_promotions_under_load_fail_no_request(server: Server, client: httpx.Client, registry: Registry, versions: list[int],
                                                    records: list[dict[str, Any]]) -> None:
    """Every response comes from a version that was champion while its request was in flight, and is exactly that version's answer."""
    good = versions[:2]
    registry.promote(good[0])
    timeline = [(good[0], time.monotonic(), wait_for_version(client, good[0]))]  # (version, promoted at, served from)
    stop = threading.Event()
    answers: list[Answer] = []
    workers = [threading.Thread(target=_load, args=(server.url, records, stop, answers, w)) for w in range(4)]
    for w in workers:
        w.start()
    try:
        for i in range(1, PROMOTIONS + 1):
            time.sleep(0.3)
            version = good[i % len(good)]
            promoted = time.monotonic()
            registry.promote(version)
            timeline.append((version, promoted, wait_for_version(client, version)))
        time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join()

    assert [a for a in answers if a.status != 200] == []
    assert len(answers) > 50
    # Version i may serve from its promotion until the server has switched to version i+1.
    periods = [(v, promoted, timeline[i + 1][2] if i + 1 < len(timeline) else float("inf")) for i, (v, promoted, _) in enumerate(timeline)]
    for a in answers:
        assert any(v == a.version and a.sent <= until and a.received >= start for v, start, until in periods), a
    assert {a.version for a in answers} == set(good)

    sent = pd.DataFrame(records)
    expected = {v: registry.load_predictor(v).predict(sent)["probability"].to_numpy() for v in good}
    assert len({round(float(expected[v][0]), 12) for v in good}) == len(good), "the versions must disagree for this check to mean anything"
    for a in answers:
        assert a.probability == pytest.approx(float(expected[a.version][a.record]), rel=1e-12), a
    assert metric(client, "mlplatform_model_reloads_total") >= PROMOTIONS + 1


def test_a_version_that_fails_to_load_is_never_served(client: httpx.Client, registry: Registry, versions: list[int],
                                                      records: list[dict[str, Any]]) -> None:
    good, broken = versions[0], versions[2]
    registry.promote(good)
    wait_for_version(client, good)
    failures = metric(client, "mlplatform_model_reload_failures_total")
    break_artifacts(registry, broken)
    registry.promote(broken)
    deadline = time.monotonic() + 120
    while metric(client, "mlplatform_model_reload_failures_total") == failures and time.monotonic() < deadline:
        assert client.post("/predict", json=records[1]).json()["model_version"] == good
    assert metric(client, "mlplatform_model_reload_failures_total") == failures + 1
    assert readiness(client)["model_version"] == good
    assert client.post("/predict", json=records[1]).json()["model_version"] == good
    forced = client.post("/admin/reload", headers=auth())
    assert forced.status_code == 503
    assert forced.json()["model_version"] == good and f"cannot load version {broken}" in forced.json()["error"]
    assert metric(client, "mlplatform_served_model_version") == good
