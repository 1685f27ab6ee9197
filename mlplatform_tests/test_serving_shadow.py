"""The shadow challenger over real HTTP: @challenger scores every served event off the response path and its predictions
are logged with its version; a challenger that fails to load or whose shadow path raises leaves every champion answer
200 and unchanged under load; a full queue drops and counts; bad settings are refused."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from pydantic import ValidationError

from mlplatform.domain.spec import DatasetSpec
from mlplatform.pipeline.replay import canonical_labels
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.shadow import ShadowScorer
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventLog
from mlplatform.stores.registry import CHALLENGER, Registry
from mlplatform_tests.support.processes import wait_until
from mlplatform_tests.serving_support import (Server, authorised_client, break_artifacts, client, frame, metric, records, register_versions, registry,
                                              running_server, settings)

LOAD_THREADS = 4
SHADOW_WAIT_S = 120.0
LOAD_REQUESTS = 400  # per thread at most: the load loop is bounded


@pytest.fixture(scope="module")
def versions(settings: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> list[int]:
    """v1 champion, v2 the challenger (trained on another slice, so they disagree on some events), v3 to break."""
    versions = register_versions(settings, adult_spec, adult_rows, 3)
    Registry(settings.tracking_uri, settings.artifact_root, adult_spec).client.set_registered_model_alias(adult_spec.model_name, CHALLENGER, str(versions[1]))
    return versions


@pytest.fixture(scope="module")
def server(settings: Settings, versions: list[int]) -> Iterator[Server]:
    with running_server(settings, MLPLATFORM_SERVE_SHADOW_CHALLENGER="true") as srv:
        yield srv


@pytest.fixture(scope="module")
def expected(registry: Registry, versions: list[int], frame: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Each version's predictions of the records, computed offline by the registered model."""
    return {v: registry.load_predictor(v).predict(frame) for v in versions[:2]}


def _shadow_version(client: httpx.Client) -> float:
    return metric(client, "mlplatform_shadow_model_version")


def _agreement_said(client: httpx.Client) -> bool:
    """Whether /metrics has an agreement sample: none before the challenger scored events (a 0 would read as no agreement)."""
    return any(line.startswith("mlplatform_shadow_agreement{") for line in client.get("/metrics").text.splitlines())


def test_the_challenger_scores_every_served_event_in_shadow_with_its_version(
        client: httpx.Client, settings: Settings, adult_spec: DatasetSpec, versions: list[int], records: list[dict[str, Any]],
        frame: pd.DataFrame, expected: dict[int, pd.DataFrame]) -> None:
    champion, challenger = versions[:2]
    wait_until("the challenger to load in shadow", lambda: _shadow_version(client) == challenger, SHADOW_WAIT_S, 0.1)
    assert not _agreement_said(client), "nothing scored yet"
    single = [client.post("/predict", json=record).json() for record in records[:16]]
    batch = client.post("/predict", json={"records": records[16:]}).json()["predictions"]
    answers = single + batch
    assert {a["model_version"] for a in answers} == {champion}
    assert [a["prediction"] for a in answers] == expected[champion]["prediction"].tolist()  # the champion's answers, unchanged
    wait_until("the shadow to score every event", lambda: metric(client, "mlplatform_shadow_scored_total") >= len(records), SHADOW_WAIT_S, 0.1)
    assert metric(client, "mlplatform_shadow_dropped_total") == 0 and metric(client, "mlplatform_shadow_failures_total") == 0

    labels = canonical_labels(frame, adult_spec).tolist()
    for answer, label in zip(answers, labels):
        assert client.post("/feedback", json={"event_id": answer["event_id"], "label": label}).json()["status"] == "applied"
    log = EventLog.for_dataset(settings.events_dir, adult_spec)
    try:
        assert log.shadow_labelled(challenger, champion) == len(records)
        window = log.shadow_window(1000, challenger, champion).set_index("event_id").loc[[a["event_id"] for a in answers]]
    finally:
        log.close()
    assert window["shadow_prediction"].tolist() == expected[challenger]["prediction"].tolist()
    assert window["shadow_probability"].tolist() == pytest.approx(expected[challenger]["probability"].tolist(), rel=1e-9)
    assert window["prediction"].tolist() == expected[champion]["prediction"].tolist() and window["label"].tolist() == labels
    agree = (expected[champion]["prediction"] == expected[challenger]["prediction"]).mean()
    assert 0 < agree < 1, "the versions must disagree on some events for the agreement to mean anything"
    assert metric(client, "mlplatform_shadow_agreement") == pytest.approx(agree)


def _under_load(url: str, records: list[dict[str, Any]], stop: threading.Event, answers: list[tuple[int, int, Any]]) -> None:
    with authorised_client(url) as c:
        for n in range(LOAD_REQUESTS):
            if stop.is_set():
                return
            i = n % len(records)
            response = c.post("/predict", json=records[i])
            answers.append((i, response.status_code, response.json().get("prediction")))


def _load_while(server: Server, records: list[dict[str, Any]], fault: Any) -> list[tuple[int, int, Any]]:
    """Requests from LOAD_THREADS clients while `fault()` runs; every answer (record index, status, prediction)."""
    stop, answers = threading.Event(), []  # type: ignore[var-annotated]
    threads = [threading.Thread(target=_under_load, args=(server.url, records, stop, answers)) for _ in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    try:
        fault()
    finally:
        stop.set()
        for t in threads:
            t.join()
    return answers


def _all_answered_by_the_champion(answers: list[tuple[int, int, Any]], expected: pd.DataFrame) -> None:
    assert len(answers) > 20
    assert [a for a in answers if a[1] != 200] == []
    assert all(prediction == expected["prediction"].iloc[i] for i, _, prediction in answers)


def test_a_shadow_that_cannot_log_raises_off_the_response_path_and_recovers(
        server: Server, client: httpx.Client, settings: Settings, adult_spec: DatasetSpec, versions: list[int], records: list[dict[str, Any]],
        expected: dict[int, pd.DataFrame]) -> None:
    """Every write of the shadow's predictions raises (a trigger in the real SQLite file): failures are counted per event,
    every champion answer stays 200 and the same; once the fault is gone the shadow scores again."""
    path = settings.events_dir / f"{adult_spec.name}.sqlite"
    failures = metric(client, "mlplatform_shadow_failures_total", kind="log")

    def fault() -> None:
        with sqlite3.connect(path, timeout=30) as db:
            db.execute("CREATE TRIGGER refuse_shadow BEFORE INSERT ON shadow_predictions BEGIN SELECT RAISE(ABORT, 'injected shadow fault'); END")
        wait_until("shadow log failures", lambda: metric(client, "mlplatform_shadow_failures_total", kind="log") > failures + 50, SHADOW_WAIT_S, 0.1)
        with sqlite3.connect(path, timeout=30) as db:
            db.execute("DROP TRIGGER refuse_shadow")

    answers = _load_while(server, records, fault)
    _all_answered_by_the_champion(answers, expected[versions[0]])
    scored = metric(client, "mlplatform_shadow_scored_total")
    client.post("/predict", json=records[0])
    wait_until("the shadow to score again", lambda: metric(client, "mlplatform_shadow_scored_total") > scored, SHADOW_WAIT_S, 0.1)
    assert "injected shadow fault" in server.log_text() and server.log_text().count("injected shadow fault") < 10  # logged once per failing spell


def test_a_challenger_that_fails_to_load_leaves_the_champion_serving(
        server: Server, client: httpx.Client, registry: Registry, versions: list[int], records: list[dict[str, Any]],
        expected: dict[int, pd.DataFrame]) -> None:
    broken = versions[2]
    break_artifacts(registry, broken)
    failures = metric(client, "mlplatform_shadow_failures_total", kind="load")

    def fault() -> None:
        registry.client.set_registered_model_alias(registry.name, CHALLENGER, str(broken))
        wait_until("the shadow load failure", lambda: metric(client, "mlplatform_shadow_failures_total", kind="load") == failures + 1, SHADOW_WAIT_S, 0.1)
        time.sleep(1.0)  # a few more reload rounds: the broken version is not retried every round

    answers = _load_while(server, records, fault)
    _all_answered_by_the_champion(answers, expected[versions[0]])
    assert metric(client, "mlplatform_shadow_failures_total", kind="load") == failures + 1
    assert _shadow_version(client) == 0 and not _agreement_said(client), "no challenger loaded: no agreement said"
    scored = metric(client, "mlplatform_shadow_scored_total")
    client.post("/predict", json=records[0])
    time.sleep(0.5)
    assert metric(client, "mlplatform_shadow_scored_total") == scored  # no shadow without a loaded challenger
    registry.client.set_registered_model_alias(registry.name, CHALLENGER, str(versions[1]))
    wait_until("the good challenger to load again", lambda: _shadow_version(client) == versions[1], SHADOW_WAIT_S, 0.1)


def test_a_full_queue_drops_and_counts_and_no_shadow_beside_itself(settings: Settings, adult_spec: DatasetSpec, registry: Registry, versions: list[int],
                                                                    records: list[dict[str, Any]]) -> None:
    """The scorer itself, its thread not started: what does not fit the queue is dropped and counted, never waited for;
    a challenger that is the champion is not shadowed."""
    metrics = ServingMetrics().model(adult_spec.name)

    def dropped() -> float | None:
        return metrics.registry.get_sample_value("mlplatform_shadow_dropped_total", {"model": adult_spec.name})

    log = EventLog.for_dataset(settings.events_dir, adult_spec)
    try:
        scorer = ShadowScorer(registry, adult_spec, settings.model_copy(update={"serve_shadow_queue": 2}), log, metrics)
        scorer.check()
        assert scorer.current is not None and scorer.current.version == versions[1]
        rows = [{k: v for k, v in r.items() if k in adult_spec.features} for r in records[:3]]
        for i in range(5):
            scorer.offer([f"x{i}-a", f"x{i}-b", f"x{i}-c"], rows, ["<=50K"] * 3)
        assert dropped() == 9  # 3 of 5 requests did not fit, 3 events each
        registry.client.set_registered_model_alias(registry.name, CHALLENGER, str(versions[0]))  # the champion itself
        scorer.check()
        assert scorer.current is None
        scorer.offer(["y"], rows[:1], ["<=50K"])
        assert dropped() == 9
    finally:
        registry.client.set_registered_model_alias(registry.name, CHALLENGER, str(versions[1]))
        log.close()


@pytest.mark.parametrize("field, value", [("serve_shadow_queue", 0), ("serve_shadow_queue", "many"), ("shadow_min_events", 5),
                                          ("promotion_requires_shadow_win", "perhaps"), ("serve_shadow_challenger", [1]),
                                          ("shadow_max_wait_seconds", 0), ("shadow_max_wait_seconds", -5), ("shadow_max_wait_seconds", "soon")])
def test_bad_shadow_settings_are_refused_naming_the_setting(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})
