"""The prediction service's HTTP routes, and the hand-written body parsing they share.

Bodies are read by hand rather than by FastAPI's model binding: the size limit must hold before a byte is
parsed, and a single-row prediction is cheaper than pydantic's per-request validation. The request schemas
are still in the OpenAPI document (schemas.py), so clients and fuzzers see them.

Per model: /models/{name}/predict, /models/{name}/feedback, /models/{name}/readyz and /admin/models/{name}/reload;
with exactly one model also the short /predict, /feedback and /admin/reload. Global: /healthz, /readyz, /metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlplatform.domain.spec import dagster_name
from mlplatform.domain.validation import one_value_per_key
from mlplatform.serving.metrics import NO_MODEL, ServingMetrics
from mlplatform.serving.records import printable
from mlplatform.serving.schemas import (
    JSON, FeedbackResult, Health, Prediction, PredictionBatch, Readiness, ReloadResult, ServiceReadiness,
    feedback_body_schema, json_body, predict_body_schema, problems,
)
from mlplatform.serving.service import ApiError, ModelService
from mlplatform.settings import Settings

log = logging.getLogger(__name__)
PREDICT, FEEDBACK, READYZ, RELOAD, HEALTHZ, METRICS = "/predict", "/feedback", "/readyz", "/reload", "/healthz", "/metrics"
GLOBAL_ENDPOINTS = (HEALTHZ, READYZ, METRICS)
MODELS_PREFIX, ADMIN_PREFIX = "/models", "/admin"
BEARER = "bearer"  # the security scheme's name in the OpenAPI document


def model_prefix(name: str) -> str:
    return f"{MODELS_PREFIX}/{name}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


# Built once: `json.loads`/`json.dumps` with options build a new decoder/encoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=one_value_per_key)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


async def read_json(request: Request, limit: int, timeout_s: float) -> Any:
    """The body as JSON: declared as JSON (so no browser "simple" cross-origin request gets here), at most `limit` bytes
    (refused before they are read), received within `timeout_s` (a stalled body must not hold a connection), without
    NaN/Infinity or duplicated keys."""
    if media_type(request.headers.get("content-type")) != JSON:
        raise ApiError(415, f"send the body as Content-Type: {JSON}", "unsupported_media_type")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":  # a gzip body was refused as undecodable UTF-8, and a plain one under the header taken as is (the serving probe)
        raise ApiError(415, f"Content-Encoding {encoding[:40]!r} is not taken: send the JSON uncompressed", "unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes", "body_too_large")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise ApiError(413, f"request body exceeds the limit of {limit} bytes", "body_too_large")
    except TimeoutError:
        log.warning("request body not received within %g s from %s (%d of %s bytes): 408, connection closed", timeout_s, _peer(request), len(body), declared)
        raise ApiError(408, f"request body not received within {timeout_s:g} s", "body_timeout", {"Connection": "close"}) from None
    except ClientDisconnect:
        log.warning("client %s hung up before sending its whole body (%d of %s bytes)", _peer(request), len(body), declared)
        raise ApiError(400, "the client disconnected before sending its whole body", "client_disconnect") from None
    try:
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))  # as json.loads decodes bytes
    except (ValueError, RecursionError) as exc:
        why = f"an integer of more than {sys.get_int_max_str_digits()} digits" if "integer string conversion" in str(exc) else str(exc)[:200]
        raise ApiError(400, f"body is not valid JSON: {why}", "malformed_json") from None


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_ENCODER.encode(payload), status_code=status, media_type=JSON, headers=headers)


async def _send_json(send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    head = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class RouteTable:
    """Which model and endpoint label a request path has, and which paths are open without the token: one table for
    the guard, latency, error counting and the routes."""

    def __init__(self, services: Mapping[str, ModelService]) -> None:
        self.services = services
        self.single = next(iter(services.values())) if len(services) == 1 else None
        self.paths: dict[str, tuple[str, str]] = {path: (NO_MODEL, path) for path in GLOBAL_ENDPOINTS}
        for name in services:
            for endpoint in (PREDICT, FEEDBACK, READYZ):
                self.paths[model_prefix(name) + endpoint] = (name, endpoint)
            self.paths[ADMIN_PREFIX + model_prefix(name) + RELOAD] = (name, ADMIN_PREFIX + RELOAD)
        if self.single is not None:
            for endpoint in (PREDICT, FEEDBACK):
                self.paths[endpoint] = (self.single.name, endpoint)
            self.paths[ADMIN_PREFIX + RELOAD] = (self.single.name, ADMIN_PREFIX + RELOAD)
        self.open_paths = frozenset(path for path, (_, endpoint) in self.paths.items() if endpoint in (HEALTHZ, READYZ))

    def model_of(self, path: str) -> str:
        return self.paths.get(path, (NO_MODEL, ""))[0]

    def unknown_model(self, path: str) -> str | None:
        """Why a path found no route, when it is about models: a name not served, or a short path while several are."""
        known = sorted(self.services)
        if self.single is None and path in (PREDICT, FEEDBACK, ADMIN_PREFIX + RELOAD):
            admin = ADMIN_PREFIX if path.startswith(ADMIN_PREFIX + "/") else ""
            return f"this service serves several models, {known}: use {admin}{MODELS_PREFIX}/{{name}}{path.removeprefix(admin)}"
        for prefix in (MODELS_PREFIX + "/", ADMIN_PREFIX + MODELS_PREFIX + "/"):
            name = path.removeprefix(prefix).split("/", 1)[0] if path.startswith(prefix) else None
            if name is not None and name not in self.services:
                # The CLI takes a model's Dagster name too (bike_sharing): its path here is its spec's name (bike-sharing).
                twin = next((k for k in known if dagster_name(k) == dagster_name(name)), None)
                meant = f"; its path is {printable(path.replace(f'{prefix}{name}', f'{prefix}{twin}', 1)[:200])}" if twin else ""
                return f"unknown model {printable(name[:64])!r}; this service serves {known}{meant}"
        return None


Endpoint = Callable[[Request], Awaitable[Response]]
Probe = Callable[[], Awaitable[Response]]


def refusal(metrics: ServingMetrics, table: RouteTable, path: str, exc: ApiError) -> Response:
    """The JSON answer to a refused request, counted by model and kind."""
    metrics.errors.labels(model=table.model_of(path), kind=exc.kind).inc()
    return json_response({"detail": exc.detail}, exc.status, exc.headers)


class Guard:
    """Pure ASGI middleware around everything: the bearer token (when set, on every path but the health ones, OpenAPI and
    /metrics included), every request's latency by model and endpoint, and a logged, counted JSON 500 for anything
    unforeseen, sent as a normal response so the keep-alive connection survives it.

    It also calls the POST endpoints in `direct` (the predict routes, filled by `add_routes`) itself, skipping FastAPI's
    routing, dependency solving and middleware layers, about a sixth of a one-row prediction's CPU; the route stays
    declared for the OpenAPI document, with the same endpoint function, and its refusals are answered the same way."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, table: RouteTable, token: str | None, direct: Mapping[str, Endpoint]) -> None:
        self.app = app
        self.metrics = metrics
        self.table = table
        self.direct = direct
        self.expected = f"bearer {token}".encode() if token else None
        self.children = {path: metrics.latency.labels(model=model, endpoint=endpoint) for path, (model, endpoint) in table.paths.items()}
        self.other = metrics.latency.labels(model=NO_MODEL, endpoint="other")

    def authorised(self, scope: Scope) -> bool:
        given = next((value for key, value in scope["headers"] if key == b"authorization"), b"")
        scheme, _, credentials = given.partition(b" ")
        assert self.expected is not None
        return hmac.compare_digest(scheme.lower() + b" " + credentials.strip(), self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        responded = False

        async def sending(message: Message) -> None:
            nonlocal responded
            responded = True
            await send(message)

        try:
            if self.expected is not None and path not in self.table.open_paths and not self.authorised(scope):
                self.metrics.errors.labels(model=self.table.model_of(path), kind="unauthorized").inc()
                await _send_json(send, 401, {"detail": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")])
                return
            endpoint = self.direct.get(path) if scope["method"] == "POST" else None
            if endpoint is None:
                await self.app(scope, receive, sending)
                return
            try:
                response = await endpoint(Request(scope, receive))
            except ApiError as exc:
                response = refusal(self.metrics, self.table, path, exc)
            await response(scope, receive, sending)
        except Exception:
            if responded:
                raise
            log.exception("unexpected error on %s %s", scope["method"], path[:200])
            self.metrics.errors.labels(model=self.table.model_of(path), kind="internal").inc()
            await _send_json(send, 500, {"detail": "internal error (logged and counted)"})
        finally:
            self.children.get(path, self.other).observe(time.perf_counter() - started)


def probe(app: FastAPI, path: str, **documented: Any) -> Callable[[Probe], Probe]:
    """A health endpoint answers GET, as documented, and HEAD, which load balancers and uptime checks send (the same
    status, no body; undocumented, as HEAD is implied by GET): a HEAD was a 405, and a health check reading it failed."""

    def register(endpoint: Probe) -> Probe:
        app.get(path, **documented)(endpoint)
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
        return endpoint

    return register


def add_routes(app: FastAPI, settings: Settings, metrics: ServingMetrics, table: RouteTable, direct: dict[str, Endpoint]) -> None:
    """Every route of the service: each model's under /models/{name} (and the short paths for a single model), then the global
    ones; the predict endpoints also go into `direct`, for the Guard to call."""
    limit, timeout_s = settings.serve_max_body_bytes, settings.serve_body_timeout_seconds

    async def body(request: Request) -> Any:
        return await read_json(request, limit, timeout_s)

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> Response:
        return refusal(metrics, table, request.url.path, exc)

    @app.exception_handler(HTTPException)
    async def no_route(request: Request, exc: HTTPException) -> Response:
        """Starlette's own refusals (no such path, wrong method) are errors too, and counted; a path naming a model this
        service does not serve, or a short path while several models are served, says which models there are."""
        path = request.url.path
        detail = table.unknown_model(path) if exc.status_code == 404 else None
        metrics.errors.labels(model=table.model_of(path), kind="unknown_model" if detail else f"http_{exc.status_code}").inc()
        return json_response({"detail": detail or exc.detail}, exc.status_code, exc.headers)

    def model_routes(service: ModelService, prefix: str) -> None:
        name = service.name
        s = service.settings

        @app.post(prefix + PREDICT, summary=f"Predict one {name} record or a batch with its champion", tags=[name],
                  openapi_extra=json_body(predict_body_schema(service.spec, s.serve_max_batch_rows, s.serve_unknown_fields == "ignore")),
                  responses={200: {"model": Prediction | PredictionBatch}, **problems(400, 401, 408, 409, 413, 415, 422, 503)})
        async def predict(request: Request) -> Response:
            return json_response(await service.predict(await body(request)))

        direct[prefix + PREDICT] = predict

        @app.post(prefix + FEEDBACK, summary=f"Record the label of a served {name} event (idempotent)", tags=[name],
                  openapi_extra=json_body(feedback_body_schema(service.spec)),
                  responses={200: {"model": FeedbackResult}, **problems(400, 401, 404, 408, 409, 413, 415, 422)})
        async def feedback(request: Request) -> Response:
            return json_response(await service.feedback(await body(request)))

        reload_path = ADMIN_PREFIX + (model_prefix(name) if prefix else "") + RELOAD

        @app.post(reload_path, summary=f"Check {name}'s champion alias now and switch if it moved", tags=[name],
                  responses={200: {"model": ReloadResult}, **problems(401), 503: {"model": ReloadResult}})
        async def reload() -> Response:
            status, body = await service.reload()
            return json_response(body, status)

        if prefix:

            @probe(app, prefix + READYZ, summary=f"{name} has a champion loaded and can serve it", tags=[name],
                   responses={200: {"model": Readiness}, 503: {"model": Readiness}})
            async def model_readyz() -> Response:
                ready, state = await service.readiness()
                return json_response(state, 200 if ready else 503)

    for service in table.services.values():
        model_routes(service, model_prefix(service.name))
    if table.single is not None:
        model_routes(table.single, "")

    @probe(app, HEALTHZ, summary="The process is up", response_model=Health)
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @probe(app, READYZ, summary="Every model has a champion loaded and can serve it",
           responses={200: {"model": ServiceReadiness}, 503: {"model": ServiceReadiness}})
    async def readyz() -> Response:
        states = {name: await service.readiness() for name, service in table.services.items()}
        ready = all(ok for ok, _ in states.values())
        summary = {"ready": ready, "models": {name: state for name, (_, state) in states.items()}, "process": os.getpid()}
        if table.single is not None:
            summary = {**states[table.single.name][1], **summary}
        return json_response(summary, 200 if ready else 503)

    @app.get(METRICS, summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **problems(401)})
    async def metrics_text() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.serve_token is not None:
        document_token(app, table)


def document_token(app: FastAPI, table: RouteTable) -> None:
    """The OpenAPI document says which operations need the bearer token (every one but the health endpoints)."""
    build = app.openapi

    def secured() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # builds and caches app.openapi_schema, which is completed here once
            schema.setdefault("components", {})["securitySchemes"] = {
                BEARER: {"type": "http", "scheme": "bearer", "description": "MLPLATFORM_SERVE_TOKEN"}}
            for path, operations in schema["paths"].items():
                if path not in table.open_paths:
                    for operation in operations.values():
                        operation["security"] = [{BEARER: []}]
        return app.openapi_schema

    app.openapi = secured  # type: ignore[method-assign]
