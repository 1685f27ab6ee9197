"""Runs the prediction service on uvicorn with its fastest loop and HTTP parser (uvloop, httptools), in one process or
in several sharing the port (uvicorn's workers: the parent binds, each worker accepts on the same socket)."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from typing import Any

import uvicorn

from mlplatform.ports import bind_error
from mlplatform.serving.app import create_app
from mlplatform.serving.service import ModelParts, check_supported
from mlplatform.settings import SERVE_MODELS_ENV, Settings, SettingsError, env_name
from mlplatform.stores.postgres import check_reachable

WORKER_APP = "mlplatform.root:serving_app"


def freeze_startup_heap() -> None:
    """Move everything alive once the app is built (MLflow, pandas, FastAPI: hundreds of thousands of objects that live as long
    as the process) out of the cyclic collector's reach, so its full collections under load no longer walk them: those
    walks were a large part of the p99 (benchmarks/bench_serving_ceiling.py). Called by serving processes only, never in
    a process that goes on to make other garbage (tests), since frozen objects are never collected."""
    gc.collect()
    gc.freeze()


def check_workers(models: Sequence[ModelParts], workers: int) -> None:
    """Several processes need an event log they can all write with group commits of their own: PostgreSQL. SQLite's WAL
    would keep them correct, but it has one writer at a time, so N processes only queue on its lock, each prediction
    waiting for the others' commits: refused rather than slower."""
    on_sqlite = [model.name for model in models if model.settings.event_log_url is None]
    if workers > 1 and on_sqlite:
        raise SettingsError(f"{workers} serving processes (--workers, {env_name('serve_workers')}) need the PostgreSQL event log "
                            f"({env_name('event_log_url')}): {', '.join(on_sqlite)} would log to SQLite, which takes one writer at a time; "
                            "serve with 1")


def serve(settings: Settings, models: Sequence[ModelParts]) -> None:
    """Serve `models` (the composition root's, `mlplatform serve`) until interrupted, in `serve_workers` processes; access
    logs are off because /metrics counts every request. A model that cannot be served with its settings, a port taken, or an
    event log database that does not answer, is refused before any process starts (and before the models warm up)."""
    workers = settings.serve_workers
    check_workers(models, workers)
    if (error := bind_error(settings.serve_host, settings.serve_port)) is not None:
        raise SettingsError(f"port {settings.serve_port} on {settings.serve_host} ({env_name('serve_port')} or --port) cannot be bound: "
                            f"{error}; stop what listens there or choose another port")
    for model in models:
        check_supported(model.settings, model.spec)
        if model.settings.event_log_url is not None:
            check_reachable(model.settings.event_log_url.get_secret_value(), env_name("event_log_url"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options: dict[str, Any] = dict(host=settings.serve_host, port=settings.serve_port, loop="uvloop", http="httptools",
                                   access_log=False, log_level="info", timeout_graceful_shutdown=10)
    if workers == 1:
        app = create_app(settings, models)
        freeze_startup_heap()
        uvicorn.run(app, **options)
        return
    # Each worker is a fresh interpreter (spawned): it rebuilds the same settings and models from the environment.
    os.environ[env_name("state_dir")] = str(settings.state_dir)
    os.environ[SERVE_MODELS_ENV] = ",".join(model.name for model in models)
    uvicorn.run(WORKER_APP, factory=True, workers=workers, **options)
