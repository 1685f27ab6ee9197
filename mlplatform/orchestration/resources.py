"""The one Dagster resource: the platform's settings and the core objects built from them."""


import threading
from pathlib import Path

import dagster as dg

from mlplatform.eventlog import EventLog
from mlplatform.registry import Registry
from mlplatform.settings import Settings
from mlplatform.spec import DatasetSpec, load_spec

_lock = threading.Lock()
_event_logs: dict[Path, EventLog] = {}


class PlatformResource(dg.ConfigurableResource):
    """Settings come from `MLPLATFORM_*` variables; these fields override them per deployment or run."""

    state_dir: str | None = None
    dataset_spec: str | None = None
    retrain_every_n: int | None = None

    def get_settings(self) -> Settings:
        overrides = {k: v for k, v in {"state_dir": self.state_dir, "dataset_spec": self.dataset_spec, "retrain_every_n": self.retrain_every_n}.items() if v is not None}
        settings = Settings(**overrides)
        settings.ensure_dirs()
        return settings

    def get_spec(self) -> DatasetSpec:
        return load_spec(self.get_settings().dataset_spec)

    def get_event_log(self) -> EventLog:
        """One open event log per process and file: opening creates the schema, which takes a write lock."""
        settings, spec = self.get_settings(), self.get_spec()
        path = settings.events_dir / f"{spec.name}.sqlite"
        with _lock:
            log = _event_logs.get(path)
            if log is None or log.spec != spec:
                log = _event_logs[path] = EventLog(path, spec)
            return log

    def get_registry(self) -> Registry:
        settings = self.get_settings()
        return Registry(settings.tracking_uri, settings.artifact_root, self.get_spec())
