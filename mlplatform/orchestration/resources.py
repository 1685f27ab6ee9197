"""The one Dagster resource: the platform's settings and the core objects built from them."""

import threading
from pathlib import Path

import dagster as dg

from mlplatform.stores.eventlog import EventLog
from mlplatform.stores.registry import Registry
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec, load_spec

_lock = threading.Lock()
_event_logs: dict[Path, tuple[EventLog, tuple[int, int] | None]] = {}


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


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
        """One open event log per process and file: opening creates the schema, which takes a write lock.

        Reopened when the file was replaced or removed (restored from a backup, a volume remounted), so a
        long-lived code server never keeps reading a stale file, and an unavailable log fails the run.
        """
        settings = self.get_settings()
        spec = load_spec(settings.dataset_spec)  # not get_spec(): settings are read once (sensor ticks call this)
        path = settings.events_dir / f"{spec.name}.sqlite"
        with _lock:
            cached = _event_logs.get(path)
            if cached is None or cached[0].spec != spec or cached[1] != _file_identity(path):
                log = EventLog(path, spec)
                cached = _event_logs[path] = (log, _file_identity(path))
            return cached[0]

    def get_registry(self) -> Registry:
        settings = self.get_settings()
        return Registry(settings.tracking_uri, settings.artifact_root, self.get_spec())
