"""`mlplatform serve --workers 2` on the PostgreSQL event log, real processes on loopback: both processes answer and log
every acknowledged prediction, both follow a champion change, and a PostgreSQL outage gives 503 with the reason and
/readyz false in each process, then 200 again once the server is back, with no acknowledged prediction lost. On the
SQLite log, several processes are refused, saying why, and so is a port taken."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
import pytest

from mlplatform.cli import main
from mlplatform.cli.postgres import PostgresCluster
from mlplatform.domain.spec import DatasetSpec
from mlplatform.pipeline.replay import json_records
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import SERVING_SOURCE
from mlplatform.stores.eventlog_postgres import PostgresEventLog
from mlplatform.stores.registry import Registry
from mlplatform_tests.conftest import ADULT_SPEC
from mlplatform_tests.support.processes import wait_until
from mlplatform_tests.serving_support import Server, auth, race_for_one_id, register_versions, running_server, state_settings

WORKERS = 2
BURST = 120  # bounded: single-record requests, each on its own connection so the kernel spreads them over the processes
DEADLINE_S = 60.0
POLL_S = 0.05
RACE_ROUNDS = 6


@dataclass
class Cluster:
    """The served settings and versions, and every acknowledged (200) prediction's event id."""

    settings: Settings
    url: str
    versions: list[int]
    server: Server
    acknowledged: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster, adult_spec: DatasetSpec,
           adult_rows: pd.DataFrame) -> Iterator[Cluster]:
    settings = state_settings(tmp_path_factory.mktemp("serve-workers") / "state", ADULT_SPEC)
    url = postgres_cluster.create_database()
    versions = register_versions(settings, adult_spec, adult_rows, 2)
    try:
        with running_server(settings, workers=WORKERS, MLPLATFORM_EVENT_LOG_URL=url) as server:
            # The server is up once one process answers; the tests need every process accepting.
            wait_until("every serving process ready", readiness_by_process(server.url, lambda body: body["ready"] is True), DEADLINE_S, POLL_S)
            yield Cluster(settings, url, versions, server)
    finally:
        postgres_cluster.drop_database(url)


@pytest.fixture(scope="module")
def records(adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> list[dict[str, Any]]:
    return json_records(adult_rows.iloc[30_000:30_000 + BURST], adult_spec)


def predict(url: str, record: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=record, headers=auth(), timeout=30)


def predict_or_none(url: str, record: dict[str, Any]) -> httpx.Response | None:
    """None when the connection broke (its process was killed): not acknowledged, so not expected in the log."""
    try:
        return predict(url, record)
    except httpx.TransportError:
        return None


def burst(url: str, records: list[dict[str, Any]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda record: predict(url, record), records))


def process_of(event_id: str) -> str:
    """The serving process that answered: each process prefixes its event ids with its own random part."""
    return event_id.rsplit("-", 1)[0]


def logged(cluster: Cluster, spec: DatasetSpec, event_ids: list[str]) -> pd.DataFrame:
    log = PostgresEventLog(cluster.url, spec)
    try:
        return log.get(event_ids)
    finally:
        log.close()


def readiness_by_process(url: str, wanted: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
    """A condition: every serving process has answered /readyz (each call a new connection) with a body `wanted` accepts."""
    seen: dict[int, dict[str, Any]] = {}

    def check() -> bool:
        body = httpx.get(f"{url}/readyz", timeout=30).json()
        seen[body["process"]] = body
        return len(seen) == WORKERS and all(wanted(b) for b in seen.values())

    return check


def test_both_processes_answer_and_log_every_acknowledged_prediction(served: Cluster, records: list[dict[str, Any]], adult_spec: DatasetSpec) -> None:
    responses = burst(served.server.url, records)
    assert [r.status_code for r in responses] == [200] * len(records)
    answers = [r.json() for r in responses]
    assert {a["model_version"] for a in answers} == {served.versions[0]}
    ids = [a["event_id"] for a in answers]
    served.acknowledged += ids
    assert len({process_of(i) for i in ids}) == WORKERS, "the kernel gave every connection to one process"
    events = logged(served, adult_spec, ids)
    assert sorted(events["event_id"]) == sorted(ids) and set(events["source"]) == {SERVING_SOURCE}


def test_a_caller_id_raced_for_by_both_processes_is_logged_once_and_the_losers_get_409(served: Cluster, records: list[dict[str, Any]],
                                                                                       adult_spec: DatasetSpec) -> None:
    """Each round: eight requests giving one new id, over connections opened beforehand (the kernel spreads them over the
    processes) and released together. Each process lets one of its own through; the process committing second finds the
    id taken at its commit, which is a 409 too, never a 503 (before, its whole group commit failed)."""
    spread = 0
    for n in range(RACE_ROUNDS):
        outcomes = race_for_one_id(served.server.url, auth(), records[n], f"raced-{n}")
        assert sorted(status for _, status in outcomes) == [200] + [409] * 7, outcomes
        spread += len({process for process, _ in outcomes}) == WORKERS
    assert spread, "no round had connections on both processes"
    raced = [f"raced-{n}" for n in range(RACE_ROUNDS)]
    served.acknowledged += raced
    assert sorted(logged(served, adult_spec, raced)["event_id"]) == raced


def test_a_champion_change_reaches_every_process(served: Cluster, adult_spec: DatasetSpec) -> None:
    wait_until("every process serves the first champion", readiness_by_process(served.server.url, lambda body: body["model_version"] == served.versions[0]),
               DEADLINE_S, POLL_S)
    Registry(served.settings.tracking_uri, served.settings.artifact_root, adult_spec).promote(served.versions[1])
    wait_until("every process serves the new champion", readiness_by_process(served.server.url, lambda body: body["model_version"] == served.versions[1]),
               DEADLINE_S, POLL_S)


def test_a_killed_process_loses_no_acknowledged_prediction_and_is_replaced(served: Cluster, records: list[dict[str, Any]],
                                                                           adult_spec: DatasetSpec) -> None:
    url = served.server.url
    victim = httpx.get(f"{url}/readyz", timeout=30).json()["process"]
    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(predict_or_none, url, record) for record in records]
        os.kill(victim, signal.SIGKILL)
        responses = [future.result() for future in pending]
    acknowledged = [r.json()["event_id"] for r in responses if r is not None and r.status_code == 200]
    assert acknowledged, "no prediction answered around the kill"
    served.acknowledged += acknowledged
    assert sorted(logged(served, adult_spec, acknowledged)["event_id"]) == sorted(acknowledged)
    wait_until("uvicorn replaces the killed process and both processes are ready",
               readiness_by_process(url, lambda body: body["ready"] is True and body["process"] != victim), DEADLINE_S, POLL_S)


def test_a_postgres_outage_gives_503_and_not_ready_then_serving_resumes_losing_nothing(
        served: Cluster, records: list[dict[str, Any]], adult_spec: DatasetSpec, postgres_cluster: PostgresCluster) -> None:
    url = served.server.url
    # With the token set /readyz is open to anyone: it says what, not the event log's address (the production probe).
    not_ready = readiness_by_process(url, lambda body: body["ready"] is False and body["detail"] == (
        "the prediction log cannot write to the event log (why: in the server's log, and in a 503 of /predict)"))
    refusals: list[str] = []

    def refused_everywhere() -> bool:
        """One prediction (refused: its process then knows the log is down) and one /readyz, until every process said not ready."""
        response = predict(url, records[0])
        assert response.status_code == 503, response.text
        refusals.append(response.json()["detail"])
        return not_ready()

    postgres_cluster.pause()
    try:
        wait_until("every process refuses predictions and reports not ready", refused_everywhere, DEADLINE_S, POLL_S)
    finally:
        postgres_cluster.resume()
    assert all(detail.startswith("the prediction log could not record the predictions") for detail in refusals), refusals
    wait_until("every process ready again", readiness_by_process(url, lambda body: body["ready"] is True), DEADLINE_S, POLL_S)
    responses = burst(url, records[:40])
    assert [r.status_code for r in responses] == [200] * 40
    served.acknowledged += [r.json()["event_id"] for r in responses]
    assert sorted(logged(served, adult_spec, served.acknowledged)["event_id"]) == sorted(served.acknowledged)


@pytest.mark.parametrize(("arguments", "setting"), [(["--workers", "2"], None), ([], "2"), (["--workers", "3"], "1")],
                         ids=["option", "setting", "option-over-setting"])
def test_several_processes_on_the_sqlite_log_are_refused_saying_why(state: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                                    arguments: list[str], setting: str | None) -> None:
    if setting is not None:
        monkeypatch.setenv("MLPLATFORM_SERVE_WORKERS", setting)
    assert main(["serve", *arguments, "--model", "adult"]) == 2
    error = capsys.readouterr().err
    workers = arguments[1] if arguments else setting
    assert (f"mlplatform serve: {workers} serving processes (--workers, MLPLATFORM_SERVE_WORKERS) need the PostgreSQL event log "
            "(MLPLATFORM_EVENT_LOG_URL): adult would log to SQLite, which takes one writer at a time") in error


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_a_bad_workers_setting_is_refused_naming_it(state: Settings, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLPLATFORM_SERVE_WORKERS", value)
    assert main(["serve", "--model", "adult"]) == 2
    assert f"mlplatform serve: MLPLATFORM_SERVE_WORKERS={value!r}: Input should be" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--workers", "0", "expected 1 to 64, got 0"), ("--workers", "-3", "expected 1 to 64, got -3"), ("--workers", "65", "expected 1 to 64, got 65"),
    ("--workers", "two", "expected a whole number, got 'two'"), ("--workers", "1.5", "expected a whole number, got '1.5'"),
    ("--port", "70000", "expected 0 to 65535, got 70000"), ("--port", "-5", "expected 0 to 65535, got -5")])  # the port: a traceback from bind()
def test_a_bad_workers_count_or_port_is_a_usage_error(option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", option, value])
    assert exited.value.code == 2 and f"argument {option}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["password", "database"])
def test_serve_with_a_wrong_event_log_url_fails_at_start_naming_the_setting(state: Settings, postgres_cluster: PostgresCluster, problem: str,
                                                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres_cluster.url(password="wrong-secret") if problem == "password" else postgres_cluster.url("no_such_database")
    monkeypatch.setenv("MLPLATFORM_EVENT_LOG_URL", url)
    assert main(["serve", "--model", "adult"]) == 2
    error = capsys.readouterr().err
    assert "mlplatform serve: MLPLATFORM_EVENT_LOG_URL (postgresql://postgres:***@127.0.0.1:" in error and "cannot connect" in error
    assert "wrong-secret" not in error and postgres_cluster.password not in error


@pytest.mark.parametrize("given", ["option", "setting"])
def test_a_port_taken_is_refused_before_the_models_warm_up_naming_it(state: Settings, given: str, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn found a port taken only after the app's start-up (every model loaded and its history warmed), and said so
    in one log line among its own, exiting 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if given == "setting":
            monkeypatch.setenv("MLPLATFORM_SERVE_PORT", str(port))
        assert main(["serve", "--model", "adult", *(["--port", str(port)] if given == "option" else [])]) == 2
    assert (f"mlplatform serve: port {port} on 127.0.0.1 (MLPLATFORM_SERVE_PORT or --port) cannot be bound: Address already in use; "
            "stop what listens there or choose another port") in capsys.readouterr().err
