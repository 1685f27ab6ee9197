"""Runs the prediction service on uvicorn with its fastest loop and HTTP parser (uvloop, httptools)."""

from __future__ import annotations

import logging

import uvicorn

from mlplatform.serving.app import create_app
from mlplatform.settings import Settings


def serve(settings: Settings) -> None:
    """Serve until interrupted; access logs are off because /metrics counts every request."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.serve_host,
        port=settings.serve_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
