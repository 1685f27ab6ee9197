"""Runs the prediction service on uvicorn with its fastest loop and HTTP parser (uvloop, httptools)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import uvicorn

from mlplatform.domain.spec import DatasetSpec, load_spec
from mlplatform.serving.app import create_app
from mlplatform.serving.service import ModelParts, check_supported
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventLog
from mlplatform.stores.registry import Registry


@dataclass(frozen=True)
class SettingsModel:
    """The one model `MLPLATFORM_DATASET_SPEC` names, as `ModelParts`: what `mlplatform serve` serves until the composition root
    (mlplatform/root.py) hands serving every model of the code location instead."""

    name: str
    settings: Settings
    spec: DatasetSpec
    event_log: EventLog
    registry: Registry

    @classmethod
    def from_settings(cls, settings: Settings) -> "SettingsModel":
        spec = load_spec(settings.dataset_spec)
        check_supported(settings, spec)
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
        return cls(spec.name, settings, spec, EventLog.for_dataset(settings.events_dir, spec), Registry(settings.tracking_uri, settings.artifact_root, spec))


def serve(settings: Settings, models: Sequence[ModelParts] | None = None) -> None:
    """Serve `models` (default: the one model of `settings`) until interrupted; access logs are off because /metrics counts every request."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings, models if models is not None else [SettingsModel.from_settings(settings)]),
        host=settings.serve_host,
        port=settings.serve_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
