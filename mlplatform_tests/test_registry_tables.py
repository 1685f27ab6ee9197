"""RegistryTables (what `mlplatform status` reads from the embedded MLflow store's tables, without MLflow) answers as
Registry (through MLflow's client) does, on the same real MLflow store, through every kind of champion move."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlplatform.domain.keys import WINDOW_CUTOFF
from mlplatform.root import platform
from mlplatform.settings import REPO_ROOT, Settings
from mlplatform.stores.registry import Registry
from mlplatform.stores.registry_tables import RegistryTables


def _add_version(registry: Registry, cutoff: int) -> int:
    """A registered version with a run and a window cut-off, as a training logs one (without training a model)."""
    run = registry.client.create_run(registry.experiment_id)
    source = f"{run.info.artifact_uri}/model"
    return int(registry.client.create_model_version(registry.name, source, run.info.run_id, tags={WINDOW_CUTOFF: str(cutoff)}).version)


def _same_answers(tables: RegistryTables, registry: Registry) -> None:
    assert tables.name == registry.name
    assert tables.champion_record() == registry.champion_record()
    record = registry.champion_record()
    assert record is None or 0 < record.registered_at <= time.time(), "when its version was registered: the rollback rule reads it"
    assert tables.timeline() == registry.timeline()
    assert tables.versions() == registry.versions()
    assert tables.versions(limit=2) == registry.versions(limit=2)


def test_the_tables_answer_as_the_mlflow_client_does(state: Settings) -> None:
    model = platform().model("adult")
    tables = RegistryTables.of(model.settings.tracking_uri, model.spec)
    assert tables is not None
    assert tables.champion_record() is None and tables.versions() == [] and tables.timeline() == []  # before MLflow made its store
    registry = model.registry
    _same_answers(tables, registry)  # a store without the model
    registry.client.create_registered_model(registry.name)
    first, second, third = (_add_version(registry, cutoff) for cutoff in (100, 250, 400))
    registry.tag_version(second, {"mlplatform.decision": "promoted"})
    _same_answers(tables, registry)  # versions, no champion
    registry.client.set_registered_model_alias(registry.name, "challenger", str(third))
    registry.promote(first)
    registry.promote(second, reason="beats v1")
    _same_answers(tables, registry)
    assert tables.champion_record().label_seq_cutoff == 250  # type: ignore[union-attr]
    registry.set_champion(first, reason="v2 misbehaves", by="someone", pin=True)
    _same_answers(tables, registry)
    assert tables.champion_record().pinned  # type: ignore[union-attr]
    registry.unpin("fixed", by="someone")
    registry.client.set_registered_model_alias(registry.name, "champion", str(third))  # moved outside the platform
    _same_answers(tables, registry)
    assert not tables.champion_record().recorded  # type: ignore[union-attr]
    registry.client.delete_model_version(registry.name, str(third))
    _same_answers(tables, registry)
    assert [v.version for v in tables.versions()] == [second, first] and tables.champion_record() is None


def test_only_a_plain_sqlite_store_is_read_from_its_tables(state: Settings) -> None:
    spec = platform().model("adult").spec
    assert RegistryTables.of("http://127.0.0.1:5000", spec) is None
    assert RegistryTables.of("postgresql://u@localhost/mlflow", spec) is None
    assert RegistryTables.of("sqlite:////tmp/mlflow.db?timeout=5", spec) is None
    assert RegistryTables.of("sqlite:////tmp/x/mlflow.db", spec).database == Path("/tmp/x/mlflow.db")  # type: ignore[union-attr]


def test_a_store_whose_tables_mlflow_has_not_created_yet_holds_no_model(tmp_path: Path, state: Settings) -> None:
    database = tmp_path / "mlflow.db"
    sqlite3.connect(database).close()  # the empty file a starting MLflow store has made, before its tables
    tables = RegistryTables.of(f"sqlite:///{database}", platform().model("adult").spec)
    assert tables is not None and database.is_file()
    assert tables.champion_record() is None and tables.versions() == [] and tables.timeline() == []


def test_a_store_that_is_not_mlflows_is_an_error_not_an_empty_registry(tmp_path: Path, state: Settings) -> None:
    database = tmp_path / "other.db"
    database.write_bytes(b"not a database, not even SQLite")
    tables = RegistryTables.of(f"sqlite:///{database}", platform().model("adult").spec)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        tables.versions()  # type: ignore[union-attr]


def test_status_after_a_champion_move_imports_no_mlflow(state: Settings) -> None:
    registry = platform().model("adult").registry
    registry.client.create_registered_model(registry.name)
    registry.promote(_add_version(registry, 100))
    probe = ("import sys; from mlplatform.cli import main; main(['status', '--model', 'adult']); "
             "print(sorted(m for m in ('mlflow', 'sqlalchemy', 'dagster', 'sklearn', 'lightgbm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ)).stdout
    assert "champion: v1" in out, out
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("mark", "recorded"),
    [
        ("3:3:{now}", True),  # moving to v3, its entry (3) not written yet: the platform's own move in progress
        ("3:2:{now}", False),  # its entry number is already v2's: a mark left by a move that died, not this one
        ("3:3:{old}", False),  # older than MOVE_MARK_SECONDS: the move died after the alias, an outside move to note
        ("2:3:{now}", False),  # the move in progress goes elsewhere
        ("3", False),  # not a mark the platform writes
        ("", False),
    ],
)
def test_a_move_mark_vouches_only_for_the_move_in_progress(mark: str, recorded: bool) -> None:
    """A mark left by a move that died hid later hand moves to its version from the timeline (review, stop 32)."""
    import json
    import time

    from mlplatform.domain.keys import CHAMPION_CHANGE, CHAMPION_MOVING
    from mlplatform.stores.registry import MOVE_MARK_SECONDS, read_champion

    now = time.time()
    timeline = {f"{CHAMPION_CHANGE}{seq:06d}": json.dumps({"version": version, "at": now - 100, "by": "t", "reason": "r", "pinned": False})
                for seq, version in ((1, 1), (2, 2))}
    tags = {**timeline, CHAMPION_MOVING: mark.format(now=now, old=now - 2 * MOVE_MARK_SECONDS)}
    assert read_champion(3, tags, {WINDOW_CUTOFF: "10"}).recorded is recorded
