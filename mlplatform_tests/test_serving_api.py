"""The prediction service over real HTTP: predictions, late labels, limits, bad input, metrics, OpenAPI fuzzing."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlplatform.stores.eventlog import EventLog
from mlplatform.stores.registry import Registry
from mlplatform.pipeline.landing import ingest_file
from mlplatform.pipeline.replay import json_records
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform_tests.conftest import ADULT_SPEC
from mlplatform_tests.serving_support import TOKEN, Server, auth, client, fuzz, metric, race_for_one_id, register_versions, running_server, state_settings

MAX_BODY = 65_536
MAX_ROWS = 50


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return state_settings(tmp_path_factory.mktemp("serving-api") / "state", ADULT_SPEC)


@pytest.fixture(scope="module")
def version(settings: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> int:
    return register_versions(settings, adult_spec, adult_rows, 1)[0]


@pytest.fixture(scope="module")
def server(settings: Settings, version: int) -> Iterator[Server]:
    with running_server(settings, MLPLATFORM_SERVE_MAX_BODY_BYTES=str(MAX_BODY), MLPLATFORM_SERVE_MAX_BATCH_ROWS=str(MAX_ROWS)) as srv:
        yield srv


@pytest.fixture(scope="module")
def records(adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> list[dict[str, Any]]:
    return json_records(adult_rows.iloc[20_000:20_040], adult_spec)


def post_raw(client: httpx.Client, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(path, content=content, headers={"Content-Type": "application/json", **(headers or {})})


def test_single_and_batch_predictions_are_logged_events(client: httpx.Client, settings: Settings, adult_spec: DatasetSpec,
                                                        version: int, records: list[dict[str, Any]]) -> None:
    one = client.post("/predict", json=records[0])
    assert one.status_code == 200, one.text
    body = one.json()
    assert set(body) == {"event_id", "model_version", "prediction", "probability"}
    assert body["model_version"] == version and body["prediction"] in adult_spec.classes and 0 <= body["probability"] <= 1
    batch = client.post("/predict", json={"records": records[1:21]})
    assert batch.status_code == 200, batch.text
    answers = batch.json()["predictions"]
    assert len(answers) == 20 and all(a["model_version"] == version for a in answers)
    ids = [body["event_id"], *(a["event_id"] for a in answers)]
    assert len(set(ids)) == len(ids)

    expected = Registry(settings.tracking_uri, settings.artifact_root, adult_spec).load_predictor(version).predict(pd.DataFrame(records[:21]))
    served = [body["probability"], *(a["probability"] for a in answers)]
    assert served == pytest.approx(expected["probability"].tolist(), rel=1e-12)

    log = EventLog.for_dataset(settings.events_dir, adult_spec)
    try:
        stored = log.get(ids).set_index("event_id").loc[ids]
    finally:
        log.close()
    assert (stored["source"] == "serving").all() and (stored["model_version"] == str(version)).all()
    assert stored["prediction"].tolist() == [body["prediction"], *(a["prediction"] for a in answers)]
    assert stored["probability"].tolist() == pytest.approx(served)
    assert stored["age"].tolist() == [r["age"] for r in records[:21]]
    assert stored["label"].isna().all()


def test_duplicated_records_in_a_batch_are_separate_predictions(client: httpx.Client, records: list[dict[str, Any]]) -> None:
    answers = client.post("/predict", json={"records": [records[0], records[0]]}).json()["predictions"]
    assert answers[0]["probability"] == answers[1]["probability"] and answers[0]["event_id"] != answers[1]["event_id"]


def test_unknown_category_is_served_and_counted(client: httpx.Client, records: list[dict[str, Any]]) -> None:
    before = metric(client, "mlplatform_unseen_categories_total", feature="native-country")
    response = client.post("/predict", json={"records": [{**records[0], "native-country": "Atlantis"}] * 3})
    assert response.status_code == 200
    assert metric(client, "mlplatform_unseen_categories_total", feature="native-country") == before + 3


@pytest.mark.parametrize(
    "content",
    [b"{", b"not json", b"", b'{"age": NaN}', b'{"age": Infinity}', b'{"age": -Infinity}', b"\xff\xfe\x00",
     b"[" * 30_000 + b"]" * 30_000, b'{"age": 1, "age": 2}'],
    ids=["truncated", "text", "empty", "nan", "inf", "-inf", "binary", "deep-nesting", "duplicated-key"],
)
def test_malformed_json_is_400(client: httpx.Client, content: bytes) -> None:
    response = post_raw(client, "/predict", content)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("body is not valid JSON")


def test_an_integer_too_long_to_read_is_named_not_pythons_words(client: httpx.Client) -> None:
    response = post_raw(client, "/predict", b'{"records": [{"age": ' + b"9" * 5000 + b"}]}")
    assert response.status_code == 400
    assert response.json()["detail"] == f"body is not valid JSON: an integer of more than {sys.get_int_max_str_digits()} digits"


def test_duplicated_key_is_named(client: httpx.Client, records: list[dict[str, Any]]) -> None:
    text = json.dumps(records[0])[:-1] + ', "age": 50}'
    assert "duplicated key 'age'" in post_raw(client, "/predict", text.encode()).json()["detail"]


def _field_errors(response: httpx.Response) -> dict[tuple[str | int, ...], str]:
    assert response.status_code == 422, response.text
    return {tuple(e["loc"]): e["msg"] for e in response.json()["detail"]}


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        ({"age": "39"}, ("body", "age"), "expected a number or null, got str"),
        ({"age": True}, ("body", "age"), "expected a number or null, got bool"),
        ({"age": [39]}, ("body", "age"), "expected a number or null, got list"),
        ({"workclass": {"a": 1}}, ("body", "workclass"), "expected a string, a number, a boolean or null, got dict"),
        ({"age": 10**400}, ("body", "age"), "is not a finite number"),
        ({"capital-gain": 1e999}, ("body", "capital-gain"), "is not a finite number"),
        ({"occupation": "x" * 257}, ("body", "occupation"), "longer than 256 characters"),
        ({"shoe-size": 42}, ("body", "shoe-size"), "extra field not permitted"),
        ({"income": ">50K"}, ("body", "income"), "extra field not permitted"),
    ],
    ids=["numeric-string", "bool", "list", "object-category", "huge-int", "float-overflow", "long-text", "extra", "label-in-request"],
)
def test_invalid_record_is_422_with_field_message(client: httpx.Client, records: list[dict[str, Any]], change: dict[str, Any],
                                                  loc: tuple[str, ...], message: str) -> None:
    content = json.dumps({**records[0], **change}).replace("Infinity", "1e999")
    errors = _field_errors(post_raw(client, "/predict", content.encode()))
    assert list(errors) == [loc] and message in errors[loc]


def test_missing_fields_are_each_reported(client: httpx.Client, records: list[dict[str, Any]]) -> None:
    record = {k: v for k, v in records[0].items() if k not in ("age", "sex")}
    errors = _field_errors(client.post("/predict", json={"records": [records[1], record]}))
    assert errors == {("body", "records", 1, "age"): "field required", ("body", "records", 1, "sex"): "field required"}


@pytest.mark.parametrize(
    ("payload", "loc"),
    [([1, 2], ("body",)), ("record", ("body",)), (None, ("body",)), ({"records": {}}, ("body", "records")),
     ({"records": []}, ("body", "records")), ({"records": [1]}, ("body", "records", 0)), ({"records": [{}], "extra": 1}, ("body", "extra"))],
    ids=["list", "string", "null", "records-object", "records-empty", "records-of-numbers", "extra-next-to-records"],
)
def test_wrong_shapes_are_422(client: httpx.Client, payload: Any, loc: tuple[str, ...]) -> None:
    assert loc in _field_errors(post_raw(client, "/predict", json.dumps(payload).encode()))


def test_oversized_body_is_413_with_the_limit(client: httpx.Client, records: list[dict[str, Any]]) -> None:
    big = json.dumps({**records[0], "workclass": "x" * MAX_BODY}).encode()
    response = post_raw(client, "/predict", big)
    assert response.status_code == 413 and str(MAX_BODY) in response.json()["detail"]
    chunked = client.post("/predict", content=iter([big[:40_000], big[40_000:]]), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and str(MAX_BODY) in chunked.json()["detail"]
    assert "Content-Length" not in chunked.request.headers
    feedback = post_raw(client, "/feedback", big, auth())
    assert feedback.status_code == 413


def test_oversized_batch_is_413_with_the_limit(client: httpx.Client, records: list[dict[str, Any]]) -> None:
    response = client.post("/predict", json={"records": [records[0]] * (MAX_ROWS + 1)})
    assert response.status_code == 413
    assert f"limit of {MAX_ROWS} records" in response.json()["detail"]
    assert client.post("/predict", json={"records": [records[0]] * MAX_ROWS}).status_code == 200


def test_feedback_is_idempotent_and_refuses_conflicts(client: httpx.Client, settings: Settings, adult_spec: DatasetSpec,
                                                      records: list[dict[str, Any]]) -> None:
    event_id = client.post("/predict", json=records[2]).json()["event_id"]
    first = client.post("/feedback", json={"event_id": event_id, "label": ">50K."}, headers=auth())
    assert first.status_code == 200 and first.json() == {"event_id": event_id, "label": ">50K", "status": "applied"}
    again = client.post("/feedback", json={"event_id": event_id, "label": ">50K"}, headers=auth())
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    conflict = client.post("/feedback", json={"event_id": event_id, "label": "<=50K"}, headers=auth())
    assert conflict.status_code == 409 and "already has a different label" in conflict.json()["detail"]
    unknown = client.post("/feedback", json={"event_id": "no-such-event", "label": ">50K"}, headers=auth())
    assert unknown.status_code == 404 and "no-such-event" in unknown.json()["detail"]
    log = EventLog.for_dataset(settings.events_dir, adult_spec)
    try:
        assert log.get([event_id])["label"].tolist() == [">50K"]
    finally:
        log.close()
    assert metric(client, "mlplatform_feedback_total", outcome="conflict") >= 1


def test_a_caller_keys_its_events_with_its_own_ids_and_an_id_names_one_event(
        client: httpx.Client, settings: Settings, adult_spec: DatasetSpec, records: list[dict[str, Any]], tmp_path: Path) -> None:
    """A record may carry its event id (here `event_id`: Adult's spec has no id_column): the event is logged under it, so
    /feedback and a label file keyed by that id both reach the prediction. An id names one event: given again, or twice
    in one request, the request is a 409 and nothing of it is logged; a record without one gets an id made up."""
    one = client.post("/predict", json={**records[3], "event_id": " caller-1 "})
    assert one.status_code == 200 and one.json()["event_id"] == "caller-1", one.text
    batch = client.post("/predict", json={"records": [{**records[4], "event_id": 42}, {**records[5], "event_id": 7.0}, records[6],
                                                      {**records[7], "event_id": None}]})
    assert batch.status_code == 200, batch.text
    ids = [a["event_id"] for a in batch.json()["predictions"]]
    assert ids[:2] == ["42", "7"] and ids[2] != ids[3] and not {ids[2], ids[3]} & {"42", "7", "caller-1"}, "absent or null: made up"
    assert client.post("/feedback", json={"event_id": 42, "label": ">50K"}, headers=auth()).json()["status"] == "applied"

    log = EventLog.for_dataset(settings.events_dir, adult_spec)
    try:
        before = log.counts().total
        again = client.post("/predict", json={"records": [{**records[8], "event_id": "caller-new"}, {**records[9], "event_id": "caller-1"}]})
        assert again.status_code == 409 and "'caller-1' is already the id of an event" in again.json()["detail"], again.text
        twice = client.post("/predict", json={"records": [{**records[8], "event_id": "caller-2"}, {**records[9], "event_id": "caller-2"}]})
        assert twice.status_code == 409 and "given to more than one record" in twice.json()["detail"], twice.text
        assert log.counts().total == before and log.get(["caller-new", "caller-2"]).empty, "a refused request logs nothing"
        landing = tmp_path / "landing"
        landing.mkdir()
        (landing / "labels.csv").write_text("event_id,income\ncaller-1,<=50K\n", encoding="utf-8")
        outcome = ingest_file(landing / "labels.csv", adult_spec, log)
        assert outcome.labels_applied == 1 and log.get(["caller-1"])["label"].tolist() == ["<=50K"]
    finally:
        log.close()
    assert metric(client, "mlplatform_errors_total", kind="event_conflict") >= 2


def test_concurrent_requests_with_one_new_id_log_it_once(client: httpx.Client, records: list[dict[str, Any]]) -> None:
    """Eight requests at once giving the same new id, over connections opened beforehand and released together: one is
    answered, seven are 409s; none is a 5xx (without the claim on the event loop they all passed the log look-up and
    their group commit failed)."""
    statuses = sorted(status for _, status in race_for_one_id(str(client.base_url), dict(client.headers), records[10], "caller-raced"))
    assert statuses == [200] + [409] * 7


def test_an_id_of_the_form_the_service_makes_up_is_refused_so_no_request_of_another_is_made_a_conflict(
        client: httpx.Client, records: list[dict[str, Any]]) -> None:
    """The serving probe: a client that sent the next five made-up ids of a response's prefix had the next five
    requests of everyone else refused as 409s, for ids they never gave."""
    made = client.post("/predict", json=records[13]).json()["event_id"]
    prefix, number = made.rsplit("-", 1)
    taken = client.post("/predict", json={"records": [{**records[14], "event_id": f"{prefix}-{int(number) + k}"} for k in (1, 2)]})
    errors = _field_errors(taken)
    assert list(errors) == [("body", "records", 0, "event_id"), ("body", "records", 1, "event_id")], taken.text
    assert "has the form of the ids the service makes up (20 hex digits, '-', a number)" in errors[("body", "records", 0, "event_id")]
    assert [client.post("/predict", json=records[15]).status_code for _ in range(3)] == [200] * 3
    assert client.post("/predict", json={**records[16], "event_id": f"{prefix}-x"}).status_code == 200, "another form of id is the caller's"


@pytest.mark.parametrize(("value", "message"), [
    (True, "expected a string or an integer, got bool"), ([1], "expected a string or an integer, got list"), ("  ", "expected a non-empty string"),
    (1.5, "expected a string or an integer, got float"), (2**53, "must lie within"), ("x" * 129, "not an event id"),
])
def test_an_id_that_is_not_one_is_422(client: httpx.Client, records: list[dict[str, Any]], value: Any, message: str) -> None:
    errors = _field_errors(client.post("/predict", json={"records": [records[11], {**records[12], "event_id": value}]}))
    assert list(errors) == [("body", "records", 1, "event_id")] and message in errors[("body", "records", 1, "event_id")]


@pytest.mark.parametrize(
    ("payload", "loc"),
    [({"event_id": "x"}, ("body", "label")), ({"label": ">50K"}, ("body", "event_id")),
     ({"event_id": "x", "label": ">50K", "extra": 1}, ("body", "extra")), ({"event_id": 5.5, "label": ">50K"}, ("body", "event_id")),
     ({"event_id": True, "label": ">50K"}, ("body", "event_id")), ({"event_id": 2**53, "label": ">50K"}, ("body", "event_id")),
     ({"event_id": "   ", "label": ">50K"}, ("body", "event_id")),
     ({"event_id": "", "label": ">50K"}, ("body", "event_id")), ({"event_id": "x" * 129, "label": ">50K"}, ("body", "event_id")),
     ({"event_id": "x", "label": "maybe"}, ("body", "label")), ({"event_id": "x", "label": None}, ("body", "label")),
     ({"event_id": "x", "label": [">50K"]}, ("body", "label")), (["x", ">50K"], ("body",))],
    ids=["no-label", "no-id", "extra", "id-float", "id-bool", "id-over-2**53", "id-blank", "id-empty", "id-too-long", "unknown-class", "null-label", "list-label", "not-object"],
)
def test_bad_feedback_is_422(client: httpx.Client, payload: Any, loc: tuple[str, ...]) -> None:
    assert loc in _field_errors(post_raw(client, "/feedback", json.dumps(payload).encode(), auth()))


def test_an_unknown_class_in_feedback_names_the_classes_and_the_label_map(client: httpx.Client) -> None:
    [error] = post_raw(client, "/feedback", json.dumps({"event_id": "x", "label": "maybe"}).encode(), auth()).json()["detail"]
    assert error["msg"] == "label: 'maybe' is not one of ['<=50K', '>50K'] (or a label_map name: ['<=50K.', '>50K.'])"


def test_feedback_malformed_json_is_400(client: httpx.Client) -> None:
    assert post_raw(client, "/feedback", b'{"event_id": ', auth()).status_code == 400


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
                         ids=["none", "wrong", "basic", "no-scheme"])
def test_feedback_and_admin_need_the_token(server: Server, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as anonymous:
        for path, payload in (("/feedback", {"event_id": "x", "label": ">50K"}), ("/admin/reload", None)):
            response = anonymous.post(path, json=payload)
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer", path


def test_health_readiness_reload_and_metrics(client: httpx.Client, server: Server, version: int) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = {"ready": True, "model_version": version, "online_correction": {"enabled": False, "updates": 0}}
    assert client.get("/models/adult/readyz").json() == ready
    assert client.get("/readyz").json() == {**ready, "models": {"adult": ready}, "process": server.process.pid}
    reload = client.post("/admin/reload", headers=auth())
    assert reload.status_code == 200 and reload.json() == {"model_version": version, "changed": False, "error": None}
    assert metric(client, "mlplatform_served_model_version") == version
    text = client.get("/metrics").text
    for name in ("mlplatform_request_seconds_bucket", "mlplatform_predictions_total", "mlplatform_errors_total", "mlplatform_model_reloads_total",
                 "mlplatform_model_reload_failures_total", "mlplatform_prediction_log_lag_seconds_bucket", "mlplatform_prediction_log_pending_rows",
                 "mlplatform_unseen_categories_total", "mlplatform_feedback_total"):
        assert name in text, name
    refused = {kind: metric(client, "mlplatform_errors_total", kind=kind) for kind in ("validation", "body_too_large", "malformed_json")}
    client.post("/predict", json={"age": "old"})
    post_raw(client, "/predict", b"x" * (MAX_BODY + 1))
    post_raw(client, "/predict", b"{")
    assert {kind: metric(client, "mlplatform_errors_total", kind=kind) for kind in refused} == {kind: n + 1 for kind, n in refused.items()}


def test_openapi_describes_the_record_from_the_spec(client: httpx.Client, adult_spec: DatasetSpec) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record, batch = body["oneOf"]
    assert record["required"] == list(adult_spec.features) and record["additionalProperties"] is False
    assert batch["properties"]["records"]["maxItems"] == MAX_ROWS
    assert schema["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer", "description": "MLPLATFORM_SERVE_TOKEN"}}
    assert schema["paths"]["/predict"]["post"]["security"] == [{"bearer": []}] and "security" not in schema["paths"]["/healthz"]["get"]


def test_fuzzing_from_the_openapi_schema_finds_no_server_error(server: Server, tmp_path: Path) -> None:
    """Schemathesis runs every check on every operation (the per-model ones and the short paths), with the token set."""
    fuzz(server, tmp_path, operations=10)
