"""The prediction service's HTTP routes, and the hand-written body parsing they share.

Bodies are read by hand rather than by FastAPI's model binding: the size limit must hold before a byte is
parsed, and a single-row prediction is cheaper than pydantic's per-request validation. The request schemas
are still in the OpenAPI document (schemas.py), so clients and fuzzers see them.

Per model: /models/{name}/predict, /models/{name}/feedback, /models/{name}/readyz and /admin/models/{name}/reload;
with exactly one model also the short /predict, /feedback and /admin/reload. Global: /healthz, /readyz, /metrics.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from mlplatform.serving.metrics import NO_MODEL, ServingMetrics
from mlplatform.serving.schemas import (
    JSON, FeedbackResult, Health, Prediction, PredictionBatch, Readiness, ReloadResult, ServiceReadiness,
    feedback_body_schema, json_body, predict_body_schema, problems,
)
from mlplatform.serving.service import ApiError, ModelService
from mlplatform.settings import Settings

PREDICT, FEEDBACK, READYZ, RELOAD = "/predict", "/feedback", "/readyz", "/reload"
GLOBAL_ENDPOINTS = ("/healthz", READYZ, "/metrics")
MODELS_PREFIX, ADMIN_PREFIX = "/models", "/admin"


def model_prefix(name: str) -> str:
    return f"{MODELS_PREFIX}/{name}"


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


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False, allow_nan=False), status_code=status, media_type=JSON, headers=headers)


class RouteTable:
    """Which model and endpoint label a request path has: one table for latency, error counting and the routes."""

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

    def model_of(self, path: str) -> str:
        return self.paths.get(path, (NO_MODEL, ""))[0]


class Timing:
    """Pure ASGI middleware: every request's latency, by model and endpoint, refused ones included."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, table: RouteTable) -> None:
        self.app = app
        self.children = {path: metrics.latency.labels(model=model, endpoint=endpoint) for path, (model, endpoint) in table.paths.items()}
        self.other = metrics.latency.labels(model=NO_MODEL, endpoint="other")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.children.get(scope["path"], self.other).observe(time.perf_counter() - started)


def add_routes(app: FastAPI, settings: Settings, metrics: ServingMetrics, table: RouteTable) -> None:
    """Every route of the service: each model's under /models/{name} (and the short paths for a single model), then the global ones."""
    limit = settings.serve_max_body_bytes
    token = settings.serve_token.get_secret_value().encode() if settings.serve_token else None
    bearer = HTTPBearer(auto_error=False, description="Required by the feedback and admin endpoints when MLPLATFORM_SERVE_TOKEN is set.")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token):
            raise ApiError(401, "missing or wrong bearer token", "unauthorized", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> Response:
        metrics.errors.labels(model=table.model_of(request.url.path), kind=exc.kind).inc()
        return json_response({"detail": exc.detail}, exc.status, exc.headers)

    def model_routes(service: ModelService, prefix: str) -> None:
        name = service.name
        s = service.settings

        @app.post(prefix + PREDICT, summary=f"Predict one {name} record or a batch with its champion", tags=[name],
                  openapi_extra=json_body(predict_body_schema(service.spec, s.serve_max_batch_rows)),
                  responses={200: {"model": Prediction | PredictionBatch}, **problems(400, 413, 422, 503)})
        async def predict(request: Request) -> Response:
            return json_response(await service.predict(await read_json(request, limit)))

        @app.post(prefix + FEEDBACK, summary=f"Record the label of a served {name} event (idempotent)", tags=[name],
                  dependencies=[Depends(authorised)], openapi_extra=json_body(feedback_body_schema(service.spec)),
                  responses={200: {"model": FeedbackResult}, **problems(400, 401, 404, 409, 413, 422)})
        async def feedback(request: Request) -> Response:
            return json_response(await service.feedback(await read_json(request, limit)))

        reload_path = ADMIN_PREFIX + (model_prefix(name) if prefix else "") + RELOAD

        @app.post(reload_path, summary=f"Check {name}'s champion alias now and switch if it moved", tags=[name],
                  dependencies=[Depends(authorised)], responses={200: {"model": ReloadResult}, **problems(401), 503: {"model": ReloadResult}})
        async def reload() -> Response:
            status, body = await service.reload()
            return json_response(body, status)

        if prefix:

            @app.get(prefix + READYZ, summary=f"{name} has a champion loaded and can serve it", tags=[name],
                     responses={200: {"model": Readiness}, 503: {"model": Readiness}})
            async def model_readyz() -> Response:
                ready, body = service.readiness()
                return json_response(body, 200 if ready else 503)

    for service in table.services.values():
        model_routes(service, model_prefix(service.name))
    known = sorted(table.services)
    if table.single is not None:
        model_routes(table.single, "")
    else:

        @app.api_route(PREDICT, methods=["POST"], include_in_schema=False)
        @app.api_route(FEEDBACK, methods=["POST"], include_in_schema=False)
        async def ambiguous(request: Request) -> Response:
            raise ApiError(404, f"this service serves several models, {known}: use {MODELS_PREFIX}/{{name}}{request.url.path}", "unknown_model")

    @app.api_route(MODELS_PREFIX + "/{name}/{endpoint:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    @app.api_route(ADMIN_PREFIX + MODELS_PREFIX + "/{name}/{endpoint:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown_model(name: str, endpoint: str) -> Response:
        if name in table.services:
            raise ApiError(404, f"model {name!r} has no endpoint {endpoint[:64]!r} for this method", "not_found")
        raise ApiError(404, f"unknown model {name[:64]!r}; this service serves {known}", "unknown_model")

    @app.get("/healthz", summary="The process is up", response_model=Health)
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get(READYZ, summary="Every model has a champion loaded and can serve it",
             responses={200: {"model": ServiceReadiness}, 503: {"model": ServiceReadiness}})
    async def readyz() -> Response:
        states = {name: service.readiness() for name, service in table.services.items()}
        ready = all(ok for ok, _ in states.values())
        return json_response({"ready": ready, "models": {name: body for name, (_, body) in states.items()}}, 200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics_text() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
