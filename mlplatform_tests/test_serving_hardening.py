"""Serving hardening (issue 12), each defect through a real server on 127.0.0.1: no input gives a 5xx, dropped columns are
accepted, the token covers what writes or reveals data, bodies must be JSON, readiness follows the prediction log, and
stalled bodies time out."""

from __future__ import annotations

import http.client
import gzip
import json
import resource
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest

from mlplatform.domain.spec import DatasetSpec
from mlplatform.pipeline.replay import json_records
from mlplatform.settings import Settings
from mlplatform_tests.conftest import ADULT_SPEC
from mlplatform_tests.serving_support import Server, auth, authorised_client, client, metric, register_versions, running_server, state_settings

BODY_TIMEOUT_S = 1.0
STALLED = 50


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return state_settings(tmp_path_factory.mktemp("serving-hardening") / "state", ADULT_SPEC)


@pytest.fixture(scope="module")
def server(settings: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> Iterator[Server]:
    register_versions(settings, adult_spec, adult_rows, 1)
    with running_server(settings, MLPLATFORM_SERVE_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_S)) as srv:
        yield srv


@pytest.fixture(scope="module")
def records(adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> list[dict[str, Any]]:
    return json_records(adult_rows.iloc[22_000:22_010], adult_spec)


def _connection(server: Server) -> http.client.HTTPConnection:
    url = urlparse(server.url)
    return http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)


@pytest.mark.parametrize("path", ["/predict", "/feedback", "/models/adult/predict"])
def test_a_lone_surrogate_key_is_a_counted_422_on_a_kept_connection(server: Server, client: httpx.Client, path: str) -> None:
    """Item 3: the 422 message echoes the key; it must encode, be counted, and leave the keep-alive connection usable."""
    before = metric(client, "mlplatform_errors_total", kind="validation")
    connection = _connection(server)
    headers = {"Content-Type": "application/json", **auth()}
    for body in (b'{"\\ud800": 1}', b'{"records": [{"\\udfff": 1}]}'):
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        payload = json.loads(response.read())
        assert response.status == 422, payload
        sock = connection.sock
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() and connection.sock is sock, "the connection was closed after the 422"
    connection.close()
    assert metric(client, "mlplatform_errors_total", kind="validation") == before + 2


def test_a_record_as_it_appears_in_the_data_is_served(client: httpx.Client, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """Item 12: columns the spec drops (Adult's fnlwgt) are accepted and ignored; other unknown fields are refused by default."""
    rows = adult_rows.iloc[23_000:23_001]
    record = {**json_records(rows, adult_spec)[0], "fnlwgt": int(rows["fnlwgt"].iloc[0])}
    served = client.post("/predict", json=record)
    assert served.status_code == 200, served.text
    refused = client.post("/predict", json={**record, "shoe-size": 42})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "shoe-size"]


OPEN = ["/healthz", "/readyz", "/models/adult/readyz"]
GUARDED = [("POST", "/predict"), ("POST", "/models/adult/predict"), ("POST", "/feedback"), ("POST", "/models/adult/feedback"),
           ("POST", "/admin/reload"), ("POST", "/admin/models/adult/reload"), ("GET", "/metrics"), ("GET", "/openapi.json")]


def test_the_token_covers_every_endpoint_that_writes_or_reveals_data(server: Server, records: list[dict[str, Any]]) -> None:
    """Item 4: with MLPLATFORM_SERVE_TOKEN set only the health endpoints answer without it."""
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for path in OPEN:
            assert anonymous.get(path).status_code == 200, path
            head = anonymous.head(path)  # what load balancers and uptime checks send; it was a 405
            assert head.status_code == 200 and head.content == b"", (path, head.status_code)
        for method, path in GUARDED:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                response = anonymous.request(method, path, json=records[0], headers=headers)
                assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer", (method, path, response.text)
    with authorised_client(server.url) as authorised:
        assert authorised.get("/metrics").status_code == 200 and authorised.get("/openapi.json").status_code == 200
        assert metric(authorised, "mlplatform_errors_total", kind="unauthorized") >= 2 * len(GUARDED)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None, "application/jsonx"],
    ids=["text", "form", "multipart", "none", "lookalike"],
)
def test_bodies_must_be_declared_json(client: httpx.Client, records: list[dict[str, Any]], content_type: str | None) -> None:
    """Item 4: a browser's cross-origin "simple" request (text/plain, form, multipart) never reaches /predict or /feedback."""
    body = json.dumps(records[0]).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/predict", "/feedback"):
        response = client.post(path, content=body, headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert "application/json" in response.json()["detail"]
    assert client.post("/predict", content=body, headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


@pytest.mark.parametrize("compressed", [True, False], ids=["gzip-body", "plain-body"])
def test_a_compressed_body_is_refused_by_its_content_encoding(client: httpx.Client, records: list[dict[str, Any]], compressed: bool) -> None:
    """The serving probe: a gzip body read as "'utf-8' codec can't decode byte 0x8b", and a plain body sent under the
    header was taken as is."""
    body = json.dumps(records[0]).encode()
    response = client.post("/predict", content=gzip.compress(body) if compressed else body,
                           headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 415 and "Content-Encoding 'gzip' is not taken: send the JSON uncompressed" in response.json()["detail"], response.text
    assert client.post("/predict", content=body, headers={"Content-Type": "application/json", "Content-Encoding": "identity"}).status_code == 200


def test_no_cross_origin_access_is_granted(client: httpx.Client, records: list[dict[str, Any]]) -> None:
    origin = {"Origin": "http://evil.example"}
    preflight = client.options("/predict", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in client.post("/predict", json=records[0], headers=origin).headers


def test_readiness_says_whether_predictions_can_be_logged(server: Server, client: httpx.Client, records: list[dict[str, Any]]) -> None:
    """Item 11: when the event log cannot be written (here: the server may not grow any file, as on a full disk), every /predict
    is 503 and /readyz must say not ready; once it can again, both recover."""
    served = client.post("/predict", json=records[3]).json()["event_id"]
    pid = server.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
    try:
        label = client.post("/feedback", json={"event_id": served, "label": ">50K"})  # it was a 500 "internal error"
        assert label.status_code == 503 and "the label could not be recorded" in label.text, label.text
        assert client.get("/models/adult/readyz").status_code == 503, "a label the log could not record says it too"
        failed = client.post("/predict", json=records[1])
        assert failed.status_code == 503, failed.text
        for path in ("/readyz", "/models/adult/readyz"):
            ready = client.get(path)
            assert ready.status_code == 503 and ready.json()["ready"] is False, (path, ready.text)
        assert "prediction log" in client.get("/models/adult/readyz").json()["detail"]
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert client.get("/readyz").status_code == 200
    assert client.post("/predict", json=records[1]).status_code == 200


def _stalled(server: Server, path: str, declared: int, sent: bytes) -> socket.socket:
    url = urlparse(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth()['Authorization'].split()[1]}\r\n" \
           f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    sock.sendall(head.encode() + sent)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_stalled_bodies_time_out_with_a_408_and_one_log_line(server: Server, client: httpx.Client, records: list[dict[str, Any]]) -> None:
    """Item 5: connections holding a partial body are answered 408 and closed after the body timeout, normal requests stay fast
    meanwhile, and neither a timeout nor a client that hangs up mid-body logs a traceback."""
    timeouts = metric(client, "mlplatform_errors_total", kind="body_timeout")
    started = time.monotonic()
    stalled = [_stalled(server, "/predict", 100_000, b'{"age": ') for _ in range(STALLED)]
    fast = client.post("/predict", json=records[2])
    assert fast.status_code == 200 and fast.elapsed.total_seconds() < 2.0
    for sock in stalled:
        sock.settimeout(BODY_TIMEOUT_S + 20)
        answer = _read_all(sock)  # returns once the server closes the connection
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < BODY_TIMEOUT_S + 20
    for _ in range(5):
        _stalled(server, "/feedback", 100_000, b'{"event_id": ').close()  # hangs up mid-body
    time.sleep(0.5)
    assert metric(client, "mlplatform_errors_total", kind="body_timeout") == timeouts + STALLED
    log = server.log_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log
    assert sum("request body not received" in line for line in log.splitlines()) == STALLED
    assert sum("hung up before sending its whole body" in line for line in log.splitlines()) == 5
