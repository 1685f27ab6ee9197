"""The prediction service's HTTP surface: /predict, /feedback, /healthz, /readyz, /admin/reload, /metrics.

Bodies are read by hand rather than by FastAPI's model binding: the size limit must hold before a byte is
parsed, and a single-row prediction is cheaper than pydantic's per-request validation. The request
schemas are still in the OpenAPI document (built from the dataset spec), so clients and fuzzers see them.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from mlplatform.stores.eventlog import EventLog, now_us
from mlplatform.stores.registry import Registry
from mlplatform.serving.champion import ChampionWatcher, ServedModel
from mlplatform.serving.live import LiveQualityGauges
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.predictionlog import PredictionLog, PredictionLogError
from mlplatform.serving.records import FieldError, check_number, utf8_problem
from mlplatform.settings import Settings, SettingsError
from mlplatform.domain.spec import DatasetSpec, Task, load_spec
from mlplatform.domain.validation import MAX_ID_LENGTH, MAX_TEXT_LENGTH

log = logging.getLogger(__name__)
ENDPOINTS = ("/predict", "/feedback", "/healthz", "/readyz", "/admin/reload", "/metrics")
JSON = "application/json"


class ApiError(Exception):
    """A refused request: status, what is wrong (text or field-level list) and the error kind for metrics."""

    def __init__(self, status: int, detail: str | list[dict[str, Any]], kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.kind, self.headers = status, detail, kind, headers


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    detail: str | list[FieldProblem]


class Prediction(BaseModel):
    event_id: str
    model_version: int
    prediction: str | float
    probability: float | None = None
    probabilities: dict[str, float] | None = None


class PredictionBatch(BaseModel):
    predictions: list[Prediction]


class FeedbackResult(BaseModel):
    event_id: str
    label: str | float
    status: str


class Health(BaseModel):
    status: str


class OnlineCorrection(BaseModel):
    enabled: bool
    updates: int


class Readiness(BaseModel):
    ready: bool
    model_version: int | None = None
    detail: str | None = None
    online_correction: OnlineCorrection | None = None


class ReloadResult(BaseModel):
    model_version: int | None
    changed: bool
    error: str | None = None


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": Problem} for status in statuses}


def record_schema(spec: DatasetSpec) -> dict[str, Any]:
    """JSON schema of one record: every feature present, null for missing, nothing else."""
    number = {"anyOf": [{"type": "number"}, {"type": "null"}]}
    text = {"anyOf": [{"type": "string", "maxLength": MAX_TEXT_LENGTH}, {"type": "number"}, {"type": "null"}]}
    return {
        "type": "object",
        "properties": {name: number if name in spec.numeric_features else text for name in spec.features},
        "required": list(spec.features),
        "additionalProperties": False,
    }


def predict_body_schema(spec: DatasetSpec, max_rows: int) -> dict[str, Any]:
    record = record_schema(spec)
    batch = {
        "type": "object",
        "properties": {"records": {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows}},
        "required": ["records"],
        "additionalProperties": False,
    }
    return {"oneOf": [record, batch]}


def feedback_body_schema(spec: DatasetSpec) -> dict[str, Any]:
    label = {"type": "string", "enum": [*(spec.classes or []), *spec.label_map]} if spec.is_classification else {"type": "number"}
    return {
        "type": "object",
        "properties": {"event_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}, "label": label},
        "required": ["event_id", "label"],
        "additionalProperties": False,
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicated key {key[:64]!r}")
            seen.add(key)
    return obj


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than `limit` bytes before reading them, NaN/Infinity and duplicated keys."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes", "body_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", "body_too_large")
    try:
        return json.loads(body, parse_constant=_reject_constant, object_pairs_hook=_object)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON: {str(exc)[:200]}", "malformed_json") from None


def _invalid(loc: tuple[str | int, ...], msg: str, kind: str = "value_error") -> ApiError:
    return ApiError(422, [FieldError(loc, msg, kind).as_dict()], "validation")


def _records(body: Any, spec: DatasetSpec, max_rows: int) -> tuple[list[Any], tuple[str | int, ...], bool]:
    """(records, error-location prefix, is a batch) from one record or {"records": [...]}."""
    if not isinstance(body, dict):
        raise _invalid(("body",), 'expected a JSON object: one record, or {"records": [record, ...]}', "type_error")
    if "records" not in body or "records" in spec.features:
        return [body], ("body",), False
    extra = [key for key in body if key != "records"]
    if extra:
        raise _invalid(("body", extra[0][:64]), "extra field not permitted next to 'records'", "extra_forbidden")
    records = body["records"]
    if not isinstance(records, list):
        raise _invalid(("body", "records"), "expected a list of records", "type_error")
    if not records:
        raise _invalid(("body", "records"), "expected at least one record")
    if len(records) > max_rows:
        raise ApiError(413, f"batch of {len(records)} records exceeds the limit of {max_rows} records per request", "batch_too_large")
    return records, ("body", "records"), True


def _label(value: Any, spec: DatasetSpec) -> str | float:
    """A late label by the ingestion rules: classification labels through label_map into the classes, else a finite number."""
    if not spec.is_classification:
        number, problem, kind = check_number(value)
        if problem or number is None:
            raise _invalid(("body", "label"), f"label: {problem or 'expected a number'}", kind or "missing")
        return number
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _invalid(("body", "label"), f"label: expected one of {spec.classes}, got {type(value).__name__}", "type_error")
    text = str(value).strip()
    text = spec.label_map.get(text, text)
    if text not in (spec.classes or []):
        raise _invalid(("body", "label"), f"label: {text[:40]!r} is not one of {spec.classes}")
    return text


def _feedback_fields(body: Any, spec: DatasetSpec) -> tuple[str, str | float]:
    if not isinstance(body, dict):
        raise _invalid(("body",), 'expected a JSON object {"event_id": ..., "label": ...}', "type_error")
    errors = [FieldError(("body", name), "field required", "missing") for name in ("event_id", "label") if name not in body]
    errors += [FieldError(("body", str(key)[:64]), "extra field not permitted", "extra_forbidden") for key in body if key not in ("event_id", "label")]
    if errors:
        raise ApiError(422, [e.as_dict() for e in errors], "validation")
    event_id = body["event_id"]
    if not isinstance(event_id, str) or not event_id.strip():
        raise _invalid(("body", "event_id"), "event_id: expected a non-empty string", "type_error")
    if len(event_id) > MAX_ID_LENGTH or utf8_problem(event_id):
        raise _invalid(("body", "event_id"), f"event_id: not an id this service hands out (valid UTF-8, at most {MAX_ID_LENGTH} characters)")
    return event_id.strip(), _label(body["label"], spec)


class _Timing:
    """Pure ASGI middleware: every request's latency, by endpoint, refused ones included."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.children = {path: metrics.latency.labels(endpoint=path) for path in ENDPOINTS}
        self.other = metrics.latency.labels(endpoint="other")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.children.get(scope["path"], self.other).observe(time.perf_counter() - started)


class Service:
    """What the routes share: spec, settings, metrics, the event log, the champion watcher and the prediction log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = load_spec(settings.dataset_spec)
        if settings.serve_online_correction and self.spec.task is Task.multiclass:
            raise SettingsError(
                f"MLPLATFORM_SERVE_ONLINE_CORRECTION is on, but dataset {self.spec.name!r} is multiclass: "
                "the online correction supports binary and regression tasks; unset it to serve this dataset"
            )
        self.metrics = ServingMetrics()
        self.events: EventLog | None = None
        self.watcher: ChampionWatcher | None = None
        self.log: PredictionLog | None = None
        self.live: LiveQualityGauges | None = None
        self._by_class: dict[str, Any] = {}
        self._id_prefix = uuid.uuid4().hex[:20]  # random per process: ids stay unique across restarts and replicas
        self._id_counter = itertools.count()

    def start(self) -> None:
        s = self.settings
        s.events_dir.mkdir(parents=True, exist_ok=True)
        s.mlflow_dir.mkdir(parents=True, exist_ok=True)
        self.events = EventLog.for_dataset(s.events_dir, self.spec)
        self.log = PredictionLog(self.events, self.metrics, s.serve_log_interval_ms / 1000, s.serve_log_max_rows)
        self.log.start()
        registry = Registry(s.tracking_uri, s.artifact_root, self.spec)
        self.watcher = ChampionWatcher(registry, self.spec, s.serve_reload_seconds, self.metrics, s, self.events)
        self.watcher.check()
        self.watcher.start()
        watcher = self.watcher
        self.live = LiveQualityGauges(s, self.spec, self.events, self.metrics, lambda: watcher.current.version if watcher.current else None)
        self.live.start()

    def stop(self) -> None:
        if self.live:
            self.live.stop()
        if self.watcher:
            self.watcher.stop()
        if self.log:
            self.log.close()
        if self.events:
            self.events.close()

    def model(self) -> ServedModel:
        model = self.watcher.current if self.watcher else None
        if model is None:
            raise ApiError(503, "no champion model is loaded yet", "not_ready")
        return model

    def count_predictions(self, predictions: list[Any]) -> None:
        """Predictions by class (the labelled child is cached: looking it up costs more than the increment), or their values."""
        if not self.spec.is_classification:
            for value in predictions:
                self.metrics.prediction_values.observe(float(value))
            return
        for cls, n in Counter(predictions).items():
            child = self._by_class.get(cls)
            if child is None:
                child = self._by_class[cls] = self.metrics.predictions.labels(prediction=str(cls))
            child.inc(n)

    async def predict(self, body: Any) -> Any:
        """Validate, predict with one version, commit the events, then answer."""
        model = self.model()
        records, loc, batch = _records(body, self.spec, self.settings.serve_max_batch_rows)
        clean, errors = model.codec.check(records, loc)
        if errors:
            raise ApiError(422, [e.as_dict() for e in errors[:100]], "validation")
        (predictions, probabilities, matrix), unseen = model.predict(clean)
        at = now_us()
        version = model.version
        served_version = str(version)
        labels = predictions.tolist()
        classes = model.predictor.classes or []
        answers, rows = [], []
        for i, row in enumerate(clean):
            event_id = f"{self._id_prefix}-{next(self._id_counter)}"
            answer: dict[str, Any] = {"event_id": event_id, "model_version": version, "prediction": labels[i]}
            probability = None if probabilities is None else float(probabilities[i])
            if probability is not None:
                answer["probability"] = probability
            if matrix is not None:
                answer["probabilities"] = dict(zip(classes, matrix[i].tolist()))
            answers.append(answer)
            rows.append((event_id, at, served_version, labels[i], probability, *row.values()))
        assert self.log is not None
        try:
            await self.log.write(rows)
        except PredictionLogError as exc:
            raise ApiError(503, str(exc), "prediction_log") from None
        self.metrics.batch_rows.observe(len(clean))
        self.count_predictions(labels)
        for feature, n in unseen.items():
            self.metrics.unseen.labels(feature=feature).inc(n)
        return {"predictions": answers} if batch else answers[0]

    async def feedback(self, body: Any) -> dict[str, Any]:
        event_id, label = _feedback_fields(body, self.spec)
        assert self.events is not None
        result = await run_in_threadpool(self.events.add_labels, [event_id], [label])
        if result.unknown:
            self.metrics.feedback.labels(outcome="unknown").inc()
            raise ApiError(404, f"unknown event_id {event_id[:64]!r}: no prediction or event has that id", "unknown_event")
        if result.conflicts:
            self.metrics.feedback.labels(outcome="conflict").inc()
            raise ApiError(409, f"event {event_id[:64]!r} already has a different label; labels are never overwritten", "label_conflict")
        status = "applied" if result.applied else "unchanged"
        self.metrics.feedback.labels(outcome=status).inc()
        if result.applied and self.settings.serve_online_correction:
            await run_in_threadpool(self.learn, event_id)
        return {"event_id": event_id, "label": label, "status": status}

    def learn(self, event_id: str) -> None:
        """The online correction learns from a label just applied; the label is recorded whatever happens here."""
        assert self.watcher is not None
        try:
            self.watcher.learn(event_id)
        except Exception:
            self.metrics.errors.labels(kind="online_correction").inc()
            log.exception("online correction could not learn from the label of event %s", event_id[:64])


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False, allow_nan=False), status_code=status, media_type=JSON, headers=headers)


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app for `settings`: the registry, event log and limits it names, nothing else."""
    service = Service(settings)
    limit = settings.serve_max_body_bytes
    token = settings.serve_token.get_secret_value().encode() if settings.serve_token else None
    bearer = HTTPBearer(auto_error=False, description="Required by /feedback and /admin/* when MLPLATFORM_SERVE_TOKEN is set.")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token):
            raise ApiError(401, "missing or wrong bearer token", "unauthorized", {"WWW-Authenticate": "Bearer"})

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title=f"mlplatform prediction service ({service.spec.name})",
        description="Serves the registry's @champion, logs every prediction as an event, takes late labels.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN, which loopback machines cannot reach
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(_Timing, metrics=service.metrics)

    @app.exception_handler(ApiError)
    async def refused(_: Request, exc: ApiError) -> Response:
        service.metrics.errors.labels(kind=exc.kind).inc()
        return _json({"detail": exc.detail}, exc.status, exc.headers)

    @app.post("/predict", summary="Predict one record or a batch with the champion",
              openapi_extra=_json_body(predict_body_schema(service.spec, settings.serve_max_batch_rows)),
              responses={200: {"model": Prediction | PredictionBatch}, **_problems(400, 413, 422, 503)})
    async def predict(request: Request) -> Response:
        return _json(await service.predict(await read_json(request, limit)))

    @app.post("/feedback", summary="Record the label of a served event (idempotent)", dependencies=[Depends(authorised)],
              openapi_extra=_json_body(feedback_body_schema(service.spec)),
              responses={200: {"model": FeedbackResult}, **_problems(400, 401, 404, 409, 413, 422)})
    async def feedback(request: Request) -> Response:
        return _json(await service.feedback(await read_json(request, limit)))

    @app.get("/healthz", summary="The process is up", response_model=Health)
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", summary="A model is loaded and predictions can be served", responses={200: {"model": Readiness}, 503: {"model": Readiness}})
    async def readyz() -> Response:
        model = service.watcher.current if service.watcher else None
        if model is None:
            return _json({"ready": False, "detail": "no champion model is loaded yet"}, 503)
        corrector = model.corrector
        correction = {"enabled": corrector is not None, "updates": corrector.updates if corrector else 0}
        return _json({"ready": True, "model_version": model.version, "online_correction": correction})

    @app.post("/admin/reload", summary="Check the champion alias now and switch if it moved", dependencies=[Depends(authorised)],
              responses={200: {"model": ReloadResult}, **_problems(401), 503: {"model": ReloadResult}})
    async def reload() -> Response:
        assert service.watcher is not None
        outcome = await run_in_threadpool(service.watcher.check, True)
        body = {"model_version": outcome.version, "changed": outcome.changed, "error": outcome.error}
        return _json(body, 503 if outcome.error else 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
