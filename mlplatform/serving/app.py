"""The prediction service's ASGI app: one `ModelService` per model, their routes, metrics and lifecycle, composed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.routes import Endpoint, Guard, RouteTable, add_routes
from mlplatform.serving.service import ModelParts, ModelService
from mlplatform.settings import Settings, SettingsError


def create_app(settings: Settings, models: Sequence[ModelParts]) -> FastAPI:
    """The ASGI app serving `models` (each with its own settings); `settings` gives the process-wide limits and token."""
    names = [parts.name for parts in models]
    if not names or len(set(names)) != len(names):
        raise SettingsError(f"serving needs at least one model and unique model names, got {names}")
    metrics = ServingMetrics()
    services = {parts.name: ModelService(parts, metrics) for parts in models}
    table = RouteTable(services)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started: list[ModelService] = []
        try:
            for service in services.values():
                await run_in_threadpool(service.start)
                started.append(service)
            yield
        finally:
            for service in started:
                await run_in_threadpool(service.stop)

    app = FastAPI(
        title=f"mlplatform prediction service ({', '.join(names)})",
        description="Serves each model's registry @champion, logs every prediction as an event, takes late labels.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN, which loopback machines cannot reach
        redoc_url=None,
        # FastAPI's native OpenTelemetry, which /metrics replaces: left on, it asks the OpenTelemetry providers on every
        # request whether one is configured (a few µs of a one-row prediction's CPU) even though none ever is
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    token = settings.serve_token.get_secret_value() if settings.serve_token else None
    direct: dict[str, Endpoint] = {}
    app.add_middleware(Guard, metrics=metrics, table=table, token=token, direct=direct)  # no CORS middleware: no cross-origin access is granted
    add_routes(app, settings, metrics, table, direct)
    return app
