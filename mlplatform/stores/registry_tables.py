"""What `mlplatform status` reads of a model's registry, straight from the embedded MLflow store's SQLite tables.

Importing MLflow's client and opening its store (SQLAlchemy, Alembic) takes longer than the 2 s a status may take,
for three small reads. With the embedded store (`sqlite:///...`) these reads go to its tables with the standard
library instead, answering exactly as `Registry` does (test_registry_tables checks both against the same real MLflow
store); with an MLflow server they go through `Registry`.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Protocol

from mlplatform.domain.spec import DatasetSpec
from mlplatform.stores.registry import CHAMPION, ChampionChange, ChampionRecord, VersionInfo, _timeline, read_champion, read_versions

SQLITE = "sqlite:///"
WORKSPACE = "default"  # MLflow's DEFAULT_WORKSPACE_NAME: every row of a store used without workspaces
DELETED = "Deleted_Internal"  # MLflow's STAGE_DELETED_INTERNAL: a deleted version whose row is still there
LOCK_WAIT_SECONDS = 15.0  # a write MLflow holds the store for (a version logged, an alias moved) is waited out; sqlite3 waits 5 s


class RegistryReads(Protocol):
    """The reads of one model's registry that status makes: `Registry` (through MLflow) or `RegistryTables`."""

    name: str

    def champion_record(self) -> ChampionRecord | None: ...

    def timeline(self) -> list[ChampionChange]: ...

    def versions(self, limit: int | None = None) -> list[VersionInfo]: ...


class RegistryTables:
    """One model's champion, timeline and versions from the tables of an embedded MLflow store, opened read-only."""

    def __init__(self, database: Path, spec: DatasetSpec) -> None:
        self.database = database
        self.name = spec.model_name

    @classmethod
    def of(cls, tracking_uri: str, spec: DatasetSpec) -> RegistryTables | None:
        """For a plain `sqlite:///path` store; None for any other (a server, a URI with options): read those through MLflow."""
        if not tracking_uri.startswith(SQLITE) or "?" in tracking_uri:
            return None
        return cls(Path(tracking_uri.removeprefix(SQLITE)), spec)

    def _rows(self, sql: str, *params: object) -> list[tuple]:
        """The query's rows; none while MLflow has not created the store (a fresh state folder: Registry would find no model)."""
        if not self.database.is_file():
            return []
        try:
            with closing(sqlite3.connect(f"{self.database.resolve().as_uri()}?mode=ro", uri=True, timeout=LOCK_WAIT_SECONDS)) as db:
                return db.execute(sql, (WORKSPACE, self.name, *params)).fetchall()
        except sqlite3.OperationalError as exc:
            if str(exc).startswith("no such table"):  # the file exists but MLflow is still creating its tables
                return []
            raise

    def _model_tags(self) -> dict[str, str]:
        return dict(self._rows("SELECT key, value FROM registered_model_tags WHERE workspace = ? AND name = ?"))

    def _aliases(self) -> dict[str, int]:
        return dict(self._rows("SELECT alias, version FROM registered_model_aliases WHERE workspace = ? AND name = ?"))

    def champion_record(self) -> ChampionRecord | None:
        version = self._aliases().get(CHAMPION)
        if version is None:
            return None
        tags = self._rows("SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?", version)
        created = self._rows("SELECT creation_time FROM model_versions WHERE workspace = ? AND name = ? AND version = ?", version)
        return read_champion(int(version), self._model_tags(), dict(tags), (created[0][0] or 0) / 1000 if created else 0.0)

    def timeline(self) -> list[ChampionChange]:
        return _timeline(self._model_tags())

    def versions(self, limit: int | None = None) -> list[VersionInfo]:
        found = self._rows("SELECT version, run_id FROM model_versions WHERE workspace = ? AND name = ? AND current_stage != ?", DELETED)
        tags: dict[int, dict[str, str]] = {version: {} for version, _ in found}
        for version, key, value in self._rows("SELECT version, key, value FROM model_version_tags WHERE workspace = ? AND name = ?"):
            if version in tags:
                tags[version][key] = value
        return read_versions([(int(version), run_id, tags[version]) for version, run_id in found], self._aliases(), limit)
