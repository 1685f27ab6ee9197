"""Runs the prediction service on uvicorn with its fastest loop and HTTP parser (uvloop, httptools)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import uvicorn

from mlplatform.serving.app import create_app
from mlplatform.serving.service import ModelParts, check_supported
from mlplatform.settings import Settings


def serve(settings: Settings, models: Sequence[ModelParts]) -> None:
    """Serve `models` (the composition root's, `mlplatform serve`) until interrupted; access logs are off because /metrics
    counts every request. A model that cannot be served with its settings is refused before any store is opened."""
    for model in models:
        check_supported(model.settings, model.spec)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings, models),
        host=settings.serve_host,
        port=settings.serve_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
