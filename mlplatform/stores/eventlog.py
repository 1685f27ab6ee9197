"""The event log: every event, its label (possibly late) and, for served traffic, the prediction.

Embedded by default: one SQLite file per dataset in WAL mode, so the serving process can write while
Dagster runs read, in separate processes, without "database is locked" (writers take the lock up
front with BEGIN IMMEDIATE and wait for it). Labels get a dense sequence number (`label_seq`) when
they land; "new labelled events since a cut-off" is then a subtraction, not a scan.

`EventStore` is the interface callers use, with every rule that does not depend on the database;
`EventLog` below is the SQLite backend, `eventlog_postgres.PostgresEventLog` the PostgreSQL one (production
profile), and `eventlog_factory.open_event_log` picks one from the settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.domain.features import normalise_category
from mlplatform.domain.keys import SERVING_SOURCE
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.timeformat import iso_time
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL, reason_kind, same_number, same_values

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60.0
SERVING_COLUMNS = ["model_version", "prediction", "probability"]
CHANGED = "changed"  # AppendResult.changed: which feature of a known id came with another value
LOGGED = "logged:"  # prefix of a known id's recorded feature values while they are compared (no feature name holds a colon)
APPEND_ATTEMPTS = 3  # of an append whose new ids another writer served meanwhile
CONTENT_CHARS = 12  # of a landed file's SHA-256, naming one of the contents landed under one name
SHA256_PREFIX = re.compile(r"[0-9a-f]{1,64}")  # the start of a content's SHA-256, as `--content` names it
COUNTERS = ("events", "labelled", "quarantined", "label_seq")  # rows of `meta`, kept by the writing transactions
OLD_REFUSALS_ATTRIBUTED = "old_refusals_attributed"  # a row of `meta`: an earlier version's refusals got their contents (once)


PROBE_TIMEOUT_S = 2.0
CHECKPOINT_PAGES = 1000  # SQLite's default: the WAL is copied into the database once it holds this many pages (4 MiB)
BULK_CHECKPOINT_PAGES = 16384  # the same within a bulk load (64 MiB): a landing batch alone writes more than 4 MiB


class EventLogError(RuntimeError):
    """The event log cannot be opened or written."""


class EventIdsTaken(EventLogError):
    """Served rows whose ids another writer's events already hold (a caller's id, raced for by another process): nothing
    of the call was written."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__(f"{len(event_ids)} of the served events' ids are already the ids of events: {event_ids[0][:64]!r}")
        self.event_ids = event_ids


@dataclass(frozen=True)
class Arrival:
    """Events that arrived after the one numbered `seq` (the log's order of arrival), with an event time from `since_us`
    on: those a model trained up to that event never saw, whatever their time says (a file of old events landed late)."""

    seq: int
    since_us: int


@dataclass(frozen=True)
class AppendResult:
    inserted: int
    duplicates: int
    labels_applied: int
    conflicts: pd.DataFrame  # event_id, label, existing_label: a different label was already recorded
    changed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[EVENT_ID, CHANGED]))  # event_id, changed: ids
    # already in the log with other feature values (the first differing one, logged and given): written nowhere


@dataclass(frozen=True)
class LabelResult:
    applied: list[str]
    unchanged: list[str]
    unknown: list[str]
    conflicts: list[str]


@dataclass(frozen=True)
class FileCounts:
    """What became of a landing file's rows: one concept for a batch's counts, a file's running totals and its outcome.

    `rows` were read; each ended ingested, a duplicate, quarantined or (a file of late labels) a label applied.
    """

    rows: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    labels_applied: int = 0

    def __add__(self, other: "FileCounts") -> "FileCounts":
        return FileCounts(*(getattr(self, name) + getattr(other, name) for name in _COUNT_COLUMNS))


_COUNT_COLUMNS = tuple(f.name for f in fields(FileCounts))


@dataclass(frozen=True)
class FileProgress:
    """How far the ingestion of one landing file got: committed with each batch, so a re-run resumes after it.

    `position` is where the next batch starts in the file's (decompressed) content: a byte offset for text, a
    row offset for Parquet; `line` is the file line it starts on and `parsed` how many rows were read before
    it (generated ids are numbered by it); `counts` the file's running totals; `prefix_sha256` the SHA-256 of the
    file's first `position` bytes (text files: a file that grew after a reading was killed goes on from there).
    """

    position: int = 0
    line: int = 1
    parsed: int = 0
    counts: FileCounts = FileCounts()
    prefix_sha256: str = ""


_COUNTED_PROGRESS = ("position", "line", "parsed", *_COUNT_COLUMNS)
_PROGRESS_COLUMNS = (*_COUNTED_PROGRESS, "prefix_sha256")  # the columns of table file_progress
_ENDED_AT = ("position", "line", "parsed")  # of table files: where a plain text or Parquet file read to its end ended
ENDED_SHA256 = "ended_sha256"  # of table files: what a file going on from the content begins with, where not the content's own hash


def _storable(text: str) -> str:
    """Text as the log can keep it: a NUL (a malformed line's raw text may hold one; PostgreSQL's text cannot) spelt \\x00."""
    return text.replace("\x00", "\\x00")


def _progress(values: Sequence[Any]) -> FileProgress:
    """A FileProgress from the values of _PROGRESS_COLUMNS, in their order."""
    position, line, parsed, *counts = (int(v) for v in values[:-1])
    return FileProgress(position, line, parsed, FileCounts(*counts), str(values[-1] or ""))


@dataclass(frozen=True)
class Counts:
    total: int
    labelled: int
    quarantined: int
    label_watermark: int  # highest label_seq handed out so far


def now_us() -> int:
    return time.time_ns() // 1000


def _sql_values(values: pd.Series) -> list[object]:
    """One column as plain Python values for sqlite3, missing as None, converted by numpy in one go."""
    if pd.api.types.is_float_dtype(values):
        array = values.to_numpy(dtype="float64", na_value=np.nan)
        out = array.astype(object)
        out[np.isnan(array)] = None
        return out.tolist()
    if pd.api.types.is_integer_dtype(values) and not values.hasnans:
        return values.to_numpy(dtype="int64").tolist()
    return values.to_numpy(dtype=object, na_value=None).tolist()


def _col(feature: str) -> str:
    """Feature columns are prefixed so that no feature name can clash with a system column."""
    return '"f_' + feature.replace('"', '') + '"'


def _kept_text(feature: str) -> str:
    """The column beside a feature's while the spec declares it numeric: the text its events landed with before, which no
    number holds ('True', '007'), and which comes back if the spec declares it categorical again. Named by a digest: short
    whatever the feature's name (PostgreSQL cuts names at 63 bytes), and no feature's column (those start `f_`)."""
    return "k_" + hashlib.sha256(feature.encode()).hexdigest()[:20]


def frame_from_rows(columns: Sequence[str], rows: Sequence[Sequence[object]], spec: DatasetSpec) -> pd.DataFrame:
    """Rows read by either backend as a DataFrame, typed from the values and then by the spec.

    Both backends build their frames here from plain Python values, so the same events give the same
    dtypes, order and missing values whatever the store.
    """
    frame = pd.DataFrame.from_records(list(rows), columns=list(columns), coerce_float=True)
    for name in spec.numeric_features:
        if name in frame.columns:
            frame[name] = frame[name].astype("float64")
    if not spec.is_classification and LABEL in frame.columns:
        frame[LABEL] = frame[LABEL].astype("float64")
    elif LABEL in frame.columns:
        frame[LABEL] = _as_class_now(frame[LABEL], spec)
    return frame


def _as_class_now(labels: pd.Series, spec: DatasetSpec) -> pd.Series:
    """Labels stored before their class was renamed, read as the class the spec's label_map names now (a hash lookup per
    row; mapped only where an old name is found)."""
    old = labels.isin(list(spec.label_map)) if spec.label_map else None
    if old is None or not old.any():
        return labels
    labels = labels.copy()
    labels[old] = labels[old].map(spec.label_map)
    return labels


def _first_occurrences(events: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The first row of every event_id in `events`, and how many repeats were dropped."""
    first = ~events[EVENT_ID].duplicated().to_numpy()
    return events[first], int((~first).sum())


def _label_seqs(labelled: np.ndarray, base: int) -> list[int | None]:
    """Dense label sequence numbers after `base` for the labelled rows, None for the others."""
    seqs = np.where(labelled, base + np.cumsum(labelled), 0).astype(object)
    seqs[~labelled] = None
    return seqs.tolist()


class EventStore(ABC):
    """The event log's interface and everything in it that does not depend on the database.

    A backend supplies the connection (`_write`, `_query`), its DDL types and the bulk paths (`_insert_new`,
    `_insert_served`, `_recorded`); the rules (idempotent appends, dense label_seq, conflicts,
    counters in the writing transaction, point-in-time windows) live here once.
    """

    PARAM = "?"  # the DB-API placeholder of the driver
    LOCK_ROW = ""  # suffix of the counter read that must block concurrent labelling (Postgres: FOR UPDATE)
    TYPES = {"key": "INTEGER PRIMARY KEY", "int": "INTEGER", "real": "REAL", "text": "TEXT", "id": "TEXT"}

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self._lock = threading.RLock()

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the events are (file path or redacted URL and schema), for metadata and messages."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def probe_writable(self) -> str | None:
        """Commit one write transaction that changes nothing; None if it could, else why not. Readiness asks this:
        only a write shows whether served predictions can be logged."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """One write transaction; yields a DB-API handle with execute/executemany. Called inside another on the same
        thread, it joins that one (commits with it, rolls back with it)."""

    @abstractmethod
    def _query(self, sql: str, params: Sequence[object] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of one read statement."""

    @abstractmethod
    def _id_taken(self, exc: Exception) -> bool:
        """Whether a write failed because an event_id is in the log already (another writer's, committed meanwhile), by
        the driver's error code and the constraint, not by its message: a NOT NULL or label_seq violation is no race."""

    @abstractmethod
    def _existing_columns(self, db: Any, table: str) -> dict[str, str]:
        """The table's columns and their declared types (lower case)."""

    @abstractmethod
    def _retype_feature(self, db: Any, column: str, to_text: bool) -> None:
        """Change a feature column's type in place, keeping its values (as text; as numbers, the others missing)."""

    def _change_feature_type(self, db: Any, name: str, to_text: bool, existing: dict[str, str]) -> None:
        """Retype the feature's column, keeping what numbers cannot hold: to numbers, its text first goes into the
        `_kept_text` column (a value that is no number reads as missing while the feature is numeric, and is not lost:
        a user's spec edit, found by any command that opened the log, cleared 'True' and 'False' for good); back to
        text, the kept text of the events that had it returns, exactly as it landed ('007', not 7)."""
        column, kept = _col(name), f'"{_kept_text(name)}"'
        if not to_text:
            if _kept_text(name) not in existing:
                db.execute(f"ALTER TABLE events ADD COLUMN {kept} TEXT")
            db.execute(f"UPDATE events SET {kept} = {column}")
        self._retype_feature(db, column, to_text)
        if to_text and _kept_text(name) in existing:
            db.execute(f"UPDATE events SET {column} = {kept} WHERE {kept} IS NOT NULL")
            db.execute(f"UPDATE events SET {kept} = NULL")  # back in the feature's own column: no second copy
            return
        if not to_text:
            hidden = db.execute(f"SELECT count(*) FROM events WHERE {column} IS NULL AND {kept} IS NOT NULL").fetchone()[0]
            if hidden:
                log.warning("%s: feature %r is numeric now; %d of its stored values are no numbers and read as missing. They are kept "
                            "(column %s) and come back if the spec declares it categorical again", self.location, name, hidden, _kept_text(name))

    @abstractmethod
    def _insert_new(self, db: Any, new: pd.DataFrame, serving: list[str], label_seqs: list[int | None], source: str, at: int) -> None:
        """Insert rows whose event ids are not in the log yet."""

    @abstractmethod
    def _insert_served(self, db: Any, columns: list[str], rows: Sequence[Sequence[object]]) -> None: ...

    @abstractmethod
    def _recorded(self, db: Any, event_ids: list[str], columns: Sequence[str] = ()) -> list[tuple[Any, ...]]:
        """(event_id, recorded label, then `columns` as SQL expressions) of those ids that are already in the log."""

    def _create_schema(self) -> None:
        t = self.TYPES
        label_type = t["text"] if self.spec.is_classification else t["real"]

        def feature(name: str) -> str:
            return f"{_col(name)} {t['real'] if name in self.spec.numeric_features else t['text']}"

        with self._write() as db:
            db.execute(
                f"""CREATE TABLE IF NOT EXISTS events (
                    seq {t["key"]},
                    event_id {t["id"]} NOT NULL UNIQUE,
                    event_time {t["int"]} NOT NULL,
                    ingested_at {t["int"]} NOT NULL,
                    source TEXT NOT NULL,
                    label {label_type},
                    label_seq {t["int"]},
                    label_time {t["int"]},
                    model_version TEXT,
                    prediction TEXT,
                    probability {t["real"]},
                    {", ".join(feature(n) for n in self.spec.features)})"""
            )
            existing = self._existing_columns(db, "events")
            for name in self.spec.features:
                declared, to_text = existing.get(f"f_{name}"), name not in self.spec.numeric_features
                if declared is None:
                    db.execute(f"ALTER TABLE events ADD COLUMN {feature(name)}")
                elif ("text" in declared) != to_text:
                    # The spec changed the feature's type. A numeric column turned codes such as '007' into 7.0 as they
                    # landed; a text one held values that are no numbers, and every read of the log failed on them.
                    self._change_feature_type(db, name, to_text, existing)
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_label_seq ON events(label_seq) WHERE label_seq IS NOT NULL")
            db.execute("CREATE INDEX IF NOT EXISTS events_time ON events(event_time, seq)")
            db.execute(
                f"""CREATE TABLE IF NOT EXISTS quarantine (
                    id {t["key"]}, source TEXT NOT NULL, row_number {t["int"]},
                    reason TEXT NOT NULL, record TEXT, quarantined_at {t["int"]} NOT NULL, file_sha256 TEXT, kind TEXT)"""
            )
            db.execute(
                f"""CREATE TABLE IF NOT EXISTS files (
                    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, rows {t["int"]}, ingested {t["int"]},
                    duplicates {t["int"]}, quarantined {t["int"]}, at {t["int"]} NOT NULL)"""
            )
            for column in _ENDED_AT:  # a log from before appended files went on where their reading ended
                if column not in self._existing_columns(db, "files"):
                    db.execute(f"ALTER TABLE files ADD COLUMN {column} {t['int']}")
            if ENDED_SHA256 not in self._existing_columns(db, "files"):  # a log from before Parquet exports went on
                db.execute(f"ALTER TABLE files ADD COLUMN {ENDED_SHA256} TEXT")
            db.execute(f"CREATE TABLE IF NOT EXISTS file_lineage (sha256 TEXT PRIMARY KEY, began_position {t['int']} NOT NULL, "
                       f"began_line {t['int']} NOT NULL, began_parsed {t['int']} NOT NULL, id_prefix TEXT NOT NULL, grown_from TEXT)")
            if "grown_from" not in self._existing_columns(db, "file_lineage"):  # a log from before a grown file's refusals were one file's
                db.execute("ALTER TABLE file_lineage ADD COLUMN grown_from TEXT")
            quarantine_columns = self._existing_columns(db, "quarantine")
            if "file_sha256" not in quarantine_columns:  # a log from before files were read again
                db.execute("ALTER TABLE quarantine ADD COLUMN file_sha256 TEXT")
            if "kind" not in quarantine_columns:  # a log from before reasons were counted by kind: its rows by their reason
                db.execute("ALTER TABLE quarantine ADD COLUMN kind TEXT")
            db.execute(  # a person's release of a file's refusals (`mlplatform quarantine --release`): who, when, how many
                f"""CREATE TABLE IF NOT EXISTS quarantine_releases (
                    released_at {t["int"]} NOT NULL, source TEXT NOT NULL, file_sha256 TEXT, rows {t["int"]} NOT NULL,
                    released_by TEXT NOT NULL, reason TEXT NOT NULL)"""
            )
            db.execute("CREATE INDEX IF NOT EXISTS quarantine_file ON quarantine(file_sha256)")
            db.execute("CREATE INDEX IF NOT EXISTS quarantine_source ON quarantine(source, id)")  # `mlplatform quarantine --file`
            db.execute(
                f"""CREATE TABLE IF NOT EXISTS shadow_predictions (
                    model_version TEXT NOT NULL, event_id {t["id"]} NOT NULL, prediction TEXT, probability {t["real"]},
                    scored_at {t["int"]} NOT NULL, PRIMARY KEY (model_version, event_id))"""
            )
            db.execute(
                f"""CREATE TABLE IF NOT EXISTS file_progress (
                    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, {", ".join(f"{c} {t['int']} NOT NULL" for c in _COUNTED_PROGRESS)},
                    prefix_sha256 TEXT NOT NULL DEFAULT '')"""
            )
            if "prefix_sha256" not in self._existing_columns(db, "file_progress"):  # a log from before killed readings went on
                db.execute("ALTER TABLE file_progress ADD COLUMN prefix_sha256 TEXT NOT NULL DEFAULT ''")
            db.execute(f"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value {t['int']} NOT NULL)")
            db.executemany(f"INSERT INTO meta VALUES ({self.PARAM}, 0) ON CONFLICT (key) DO NOTHING", [(k,) for k in COUNTERS])
            self._attribute_old_refusals(db)

    def _attribute_old_refusals(self, db: Any) -> None:
        """Give the refusals an earlier version kept without their file's content hash the content they were read from,
        once per log (a `meta` row says it was done), where the files table tells it for sure. Before, a name landed as
        several contents kept no hash: a reading again of one of them counted its refusals twice, and no release could
        name it (the upgrade probe).

        An earlier version recorded a file (`files.at`) once it had quarantined its rows, so a row is the content of its
        name first recorded at or after it. That holds only where each content was read once: a content read again
        moved its `at` to the later reading (label files were read at every landing), and a reading killed before its
        file was recorded has no row in `files`. So a name's rows are attributed only when every one of them finds a
        content and each content gets exactly the rows its `files.quarantined` counts; otherwise all of the name's rows
        keep no hash (shown as content unknown, released by name), rather than be released with another content's."""
        p = self.PARAM
        if db.execute(f"SELECT 1 FROM meta WHERE key = {p}", (OLD_REFUSALS_ATTRIBUTED,)).fetchone() is not None:
            return
        by_name: dict[str, list[tuple[int, int]]] = {}
        for row_id, source, at in db.execute("SELECT id, source, quarantined_at FROM quarantine WHERE file_sha256 IS NULL").fetchall():
            by_name.setdefault(str(source), []).append((int(at), int(row_id)))
        contents: dict[str, list[tuple[int, str, int]]] = {}
        if by_name:
            for name, sha, at, quarantined in db.execute("SELECT name, sha256, at, quarantined FROM files WHERE quarantined > 0").fetchall():
                contents.setdefault(str(name), []).append((int(at), str(sha), int(quarantined)))
        updates = []
        for name, rows in by_name.items():
            recorded = sorted(contents.get(name, []))
            owners = [next((sha for at, sha, _ in recorded if at >= quarantined_at), None) for quarantined_at, _ in rows]
            if None not in owners and Counter(owners) == {sha: n for _, sha, n in recorded}:
                updates += [(sha, row_id) for sha, (_, row_id) in zip(owners, rows)]
        db.executemany(f"UPDATE quarantine SET file_sha256 = {p} WHERE id = {p}", updates)
        db.execute(f"INSERT INTO meta VALUES ({p}, 1) ON CONFLICT (key) DO NOTHING", (OLD_REFUSALS_ATTRIBUTED,))

    def _bump(self, db: Any, key: str, by: int) -> None:
        if by:
            db.execute(f"UPDATE meta SET value = value + {self.PARAM} WHERE key = {self.PARAM}", (by, key))

    def _meta(self, db: Any, key: str, suffix: str = "") -> int:
        return int(db.execute(f"SELECT value FROM meta WHERE key = {self.PARAM}{suffix}", (key,)).fetchone()[0])

    def _label_base(self, db: Any) -> int:
        """The highest label_seq so far, read so that no other writer can hand out labels until we commit."""
        return self._meta(db, "label_seq", self.LOCK_ROW)

    def append(self, events: pd.DataFrame, source: str, timed: bool = False) -> AppendResult:
        """Insert new events; for known ids with the same feature values apply a label they lack; report conflicting
        labels, and known ids given other feature values (`changed`: nothing of those rows is written). `timed`: the
        events' times are their source's own (a landing file with the spec's time column), so a landed id given
        another time is changed too; without, they are the moment of landing and say nothing.

        `events` has the canonical columns (event_id, event_time, label, features) and optionally
        model_version, prediction, probability. Re-sending an id never duplicates it (a repeat within
        `events` counts as a duplicate too). New rows go in through the backend's bulk path.
        """
        if events.empty:
            return AppendResult(0, 0, 0, pd.DataFrame(columns=[EVENT_ID, LABEL, "existing_label"]))
        events, repeated = _first_occurrences(events)
        # A served event given one of these ids may commit between the look-up of the known ids and the insert
        # (PostgreSQL: the served path takes no label lock). Rolled back, the append is tried again: a known id now.
        # Before, landing took the error for the file's own fault and rejected a good file (the review).
        for _ in range(APPEND_ATTEMPTS - 1):
            try:
                return self._append_new(events, repeated, source, timed)
            except Exception as exc:
                if not self._id_taken(exc):
                    raise
        return self._append_new(events, repeated, source, timed)

    def _append_new(self, events: pd.DataFrame, repeated: int, source: str, timed: bool) -> AppendResult:
        """`append` in one transaction, of events without repeated ids."""
        serving = [c for c in SERVING_COLUMNS if c in events.columns]
        at = now_us()
        with self._write() as db:
            base = self._label_base(db)
            known = self._known(db, events, timed)
            new = events[~events[EVENT_ID].isin(known[EVENT_ID]).to_numpy()]
            labelled = new[LABEL].notna().to_numpy()
            self._insert_new(db, new, serving, _label_seqs(labelled, base), source, at)
            new_labelled = int(labelled.sum())
            self._bump(db, "label_seq", new_labelled)
            self._bump(db, "labelled", new_labelled)
            self._bump(db, "events", len(new))
            changed = known[known[CHANGED].notna()]
            known = known[known[CHANGED].isna()]  # the same event again: its label may still be news
            late = known[known[LABEL].notna() & known["existing_label"].isna()]
            applied = self._apply_labels(db, base + new_labelled, late[EVENT_ID].tolist(), late[LABEL].tolist())
        differ = ~same_values(known[LABEL], known["existing_label"], not self.spec.is_classification)  # a regression label to 15 digits is the label
        conflicts = known[known[LABEL].notna() & known["existing_label"].notna() & differ]
        return AppendResult(
            inserted=len(new),
            duplicates=len(known) + repeated,
            labels_applied=applied,
            conflicts=conflicts.drop(columns=CHANGED).reset_index(drop=True),
            changed=changed[[EVENT_ID, CHANGED]].reset_index(drop=True),
        )

    def _known(self, db: Any, events: pd.DataFrame, timed: bool = False) -> pd.DataFrame:
        """The incoming ids already in the log, with the incoming and the recorded label, in incoming order, and the
        first of the time (`timed`, of an event landed before) and the features whose incoming value differs from the
        logged one (`changed`; None where all agree)."""
        columns = [EVENT_ID, LABEL, "existing_label", CHANGED]
        if not self._meta(db, "events"):
            return pd.DataFrame(columns=columns)
        features = [f for f in self.spec.features if f in events.columns]
        logged = [f"{LOGGED}{f}" for f in features]
        rows = self._recorded(db, events[EVENT_ID].tolist(), [_col(f) for f in features] + ["event_time", "source"] * timed)
        if not rows:  # a landing batch of new events: nothing to compare, nothing copied
            return pd.DataFrame(columns=columns)
        times = [f"{LOGGED}{EVENT_TIME}", f"{LOGGED}source"] * timed
        recorded = frame_from_rows([EVENT_ID, "existing_label", *logged, *times], rows, self.spec)
        recorded["existing_label"] = _as_class_now(recorded["existing_label"], self.spec)  # a renamed class is no conflict
        incoming = events.loc[events[EVENT_ID].isin(recorded[EVENT_ID]).to_numpy(), [EVENT_ID, LABEL, *features, *[EVENT_TIME] * timed]].reset_index(drop=True)
        incoming[LABEL] = incoming[LABEL].astype(object).where(incoming[LABEL].notna(), None)
        known = incoming.merge(recorded, on=EVENT_ID, how="inner")
        known[CHANGED] = None
        if timed:  # the probe: a re-export with a corrected time counted as a duplicate, its time lost without a word
            given, kept = known[EVENT_TIME].astype("int64"), known[f"{LOGGED}{EVENT_TIME}"].astype("int64")
            moved = ((given != kept) & (known[f"{LOGGED}source"] != SERVING_SOURCE)).to_numpy()  # serving stamps its own clock
            known.loc[moved, CHANGED] = [f"event_time: {iso_time(k)} logged, {iso_time(g)} here" for g, k in zip(given[moved], kept[moved])]
        for feature in features:
            given, kept = known[feature].astype(object), known[f"{LOGGED}{feature}"].astype(object)
            # An optional feature missing on either side agrees: one source (an older client, an older export) lacks it,
            # and the later file's rows, their labels included, were quarantined as other values (the diff review).
            same = same_values(given, kept, feature in self.spec.numeric_features)
            if feature in self.spec.optional:
                same |= (given.isna() | kept.isna()).to_numpy(dtype=bool)
            first = ~same & known[CHANGED].isna()
            if first.any():
                known.loc[first, CHANGED] = [f"{feature}: {k!r} logged, {g!r} here" for g, k in zip(given[first].where(given[first].notna(), None),
                                                                                              kept[first].where(kept[first].notna(), None))]
        return known[columns]

    def _apply_labels(self, db: Any, base: int, ids: Sequence[str], labels: Sequence[object]) -> int:
        """Set labels on events that have none, numbered after `base`.

        Callers found these events unlabelled in the same transaction, after `_label_base` shut out every
        other labelling writer, so each update hits one row and the numbers stay dense.
        """
        if not ids:
            return 0
        at = now_us()
        rows = [(label, base + i + 1, at, event_id) for i, (event_id, label) in enumerate(zip(ids, labels))]
        p = self.PARAM
        db.executemany(f"UPDATE events SET label = {p}, label_seq = {p}, label_time = {p} WHERE event_id = {p} AND label IS NULL", rows)
        self._bump(db, "label_seq", len(rows))
        self._bump(db, "labelled", len(rows))
        return len(rows)

    def add_labels(self, event_ids: Sequence[str], labels: Sequence[object]) -> LabelResult:
        """Late labels by event id: idempotent for the same label; a different one is a conflict."""
        unchanged: list[str] = []
        unknown: list[str] = []
        conflicts: list[str] = []
        with self._write() as db:
            base = self._label_base(db)
            recorded = {event_id: self.spec.label_map.get(label, label) if isinstance(label, str) else label  # a renamed class is no conflict
                        for event_id, label in self._recorded(db, list(dict.fromkeys(event_ids)))}
            to_apply: dict[str, object] = {}
            for event_id, label in zip(event_ids, labels):
                if event_id not in recorded:
                    unknown.append(event_id)
                elif recorded[event_id] is None and event_id not in to_apply:
                    to_apply[event_id] = label
                elif (had := to_apply.get(event_id, recorded[event_id])) == label or not self.spec.is_classification and same_number(had, label):
                    unchanged.append(event_id)
                else:
                    conflicts.append(event_id)
            self._apply_labels(db, base, list(to_apply), list(to_apply.values()))
        return LabelResult(list(to_apply), unchanged, unknown, conflicts)

    def append_served(self, rows: Sequence[Sequence[object]], source: str) -> int:
        """Insert new unlabelled events given as plain tuples (event_id, event_time, model_version, prediction, probability, then the features in spec order), without pandas.

        The prediction service's path: its event ids are new (random per-process prefix + counter), it has no labels, so none of
        `append`'s duplicate and late-label handling applies, and a group commit of a few predictions
        must cost microseconds, not a DataFrame. An id the log already holds fails the whole call, as EventIdsTaken naming
        the ids (a caller's id that another process served first).
        """
        if not rows:
            return 0
        try:
            with self._write() as db:
                self._record_served(db, rows, source)
        except Exception as exc:
            if not self._id_taken(exc):
                raise
            taken = self.existing([row[0] for row in rows])
            if not taken:
                raise
            raise EventIdsTaken(taken) from exc
        return len(rows)

    def append_served_now(self, rows: Sequence[Sequence[object]], source: str) -> int | None:
        """`append_served` if it can commit without waiting for anyone, else None and nothing written.

        The prediction service calls this on its event loop, where a wait for a lock would stall every request: a
        store whose writes are local and usually uncontended commits at once, saving the hand-over to the writer
        thread; a store that always waits (a network round trip) answers None, and so does one whose write lock is
        held. A store that commits here does not checkpoint in that commit: call `checkpoint` off the loop now and then.
        """
        return None

    def checkpoint(self) -> None:
        """Fold what `append_served_now` committed into the database's main file, if the backend keeps it apart."""

    def _record_served(self, db: Any, rows: Sequence[Sequence[object]], source: str) -> None:
        """Only the `events` counter is touched, last, so concurrent writers hold its row lock for the shortest time."""
        columns = [EVENT_ID, EVENT_TIME, *SERVING_COLUMNS, *(f"f_{f}" for f in self.spec.features), "ingested_at", "source"]
        at = now_us()
        self._insert_served(db, columns, [(*row, at, source) for row in rows])
        self._bump(db, "events", len(rows))

    def append_shadow(self, rows: Sequence[tuple[str, str, object, float | None]]) -> int:
        """Record a shadow challenger's predictions, (event_id, model_version, prediction, probability) each, next to the
        events the champion answered. Kept apart from `events`, so a shadow can never change what was served; a repeat of
        (version, event) keeps the first prediction."""
        if not rows:
            return 0
        p = self.PARAM
        at = now_us()
        with self._write() as db:
            db.executemany(
                f"INSERT INTO shadow_predictions (model_version, event_id, prediction, probability, scored_at) VALUES ({p}, {p}, {p}, {p}, {p}) "
                "ON CONFLICT (model_version, event_id) DO NOTHING",
                [(str(version), event_id, None if prediction is None else str(prediction), probability, at) for event_id, version, prediction, probability in rows],
            )
        return len(rows)

    def _shadow_join(self) -> str:
        p = self.PARAM
        return (f"FROM shadow_predictions s JOIN events e ON e.event_id = s.event_id WHERE s.model_version = {p} AND e.model_version = {p} "
                f"AND e.source = {p} AND e.label_seq IS NOT NULL AND e.prediction IS NOT NULL")

    def shadow_labelled(self, challenger_version: int | str, champion_version: int | str) -> int:
        """Labelled events the champion served and the challenger scored in shadow: the evidence a shadow comparison has."""
        params = [str(challenger_version), str(champion_version), SERVING_SOURCE]
        return int(self._query(f"SELECT count(*) {self._shadow_join()}", params)[1][0][0])

    def shadow_window(self, limit: int, challenger_version: int | str, champion_version: int | str) -> pd.DataFrame:
        """The latest `limit` such events (by event time), oldest first: event_id, event_time, label, the champion's served
        prediction and probability, and the challenger's (`shadow_prediction`, `shadow_probability`)."""
        sql = (f"SELECT e.event_id, e.event_time, e.label, e.prediction, e.probability, s.prediction AS shadow_prediction, "
               f"s.probability AS shadow_probability {self._shadow_join()} ORDER BY e.event_time DESC, e.seq DESC LIMIT {int(limit)}")
        frame = frame_from_rows(*self._query(sql, [str(challenger_version), str(champion_version), SERVING_SOURCE]), self.spec)
        return frame.iloc[::-1].reset_index(drop=True)

    def quarantine(self, rows: pd.DataFrame, source: str, file_sha256: str) -> int:
        """Keep invalid rows of the landing file `source` (its content hash `file_sha256`) with their reason and its kind
        (`reason_kind`); `rows` has row_number, reason, record."""
        if rows.empty:
            return 0
        at = now_us()
        p = self.PARAM
        with self._write() as db:
            db.executemany(
                f"INSERT INTO quarantine (source, row_number, reason, record, quarantined_at, file_sha256, kind) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                [(source, int(r.row_number), _storable(str(r.reason)), None if r.record is None else _storable(str(r.record)), at, file_sha256,
                  _storable(reason_kind(str(r.reason)))) for r in rows.itertuples(index=False)],
            )
            self._bump(db, "quarantined", len(rows))
        return len(rows)

    def release_quarantined(self, file_sha256: str, from_line: int = 0) -> int:
        """Forget the quarantined rows of a file that is being read again: those still refused are quarantined again by
        that reading, the others are in the log by then. Before, every reading added its refusals to the earlier ones,
        and the quarantined count grew with each landing of the same bytes. `from_line`: only the rows from that line on
        (a content that went on from one landed whole is read again from where it began: the rows before are that
        content's). Returns how many were released."""
        return self._release("file_sha256 = {p} AND COALESCE(row_number, 0) >= {p}", (file_sha256, from_line))

    def release_quarantined_file(self, source: str, content: str | None = None, by: str = "", reason: str = "") -> int:
        """Forget the quarantined rows landed as `source`: a person's call, once a corrected file (new bytes, so not a
        reading again) took its place. `content`: only those of the content whose SHA-256 starts with it (hex), where one
        name was landed as several contents; None: every content of that name. The release itself is kept, per content,
        with `by`, `reason` and its time (`quarantine_releases`): the rows are gone, and an operator asking where they
        went gets an answer. Returns how many were released."""
        if content is None:
            return self._release("source = {p}", (source,), (by, reason))
        if not SHA256_PREFIX.fullmatch(content):
            raise ValueError(f"content: {content!r} is not a SHA-256 prefix (lowercase hex)")
        return self._release("source = {p} AND file_sha256 LIKE {p}", (source, content + "%"), (by, reason))

    def _release(self, where: str, params: tuple[str, ...], recorded: tuple[str, str] | None = None) -> int:
        """Delete the quarantined rows `where` selects; a person's release (`recorded`: by whom, why) is kept per content."""
        p, where = self.PARAM, where.format(p=self.PARAM)
        with self._write() as db:
            if recorded is not None:
                db.execute(f"INSERT INTO quarantine_releases (released_at, source, file_sha256, rows, released_by, reason) "
                           f"SELECT {p}, source, file_sha256, count(*), {p}, {p} FROM quarantine WHERE {where} GROUP BY source, file_sha256",
                           (now_us(), *recorded, *params))
            released = db.execute(f"DELETE FROM quarantine WHERE {where}", params).rowcount
            self._bump(db, "quarantined", -released)
        return int(released)

    def quarantine_releases(self, source: str | None = None) -> pd.DataFrame:
        """The releases of quarantined rows people made (of landing file `source`, or of every file), newest first: when
        (µs since the epoch), file, content (the first CONTENT_CHARS of its SHA-256), rows, by whom and why."""
        where, params = ("", ()) if source is None else (f" WHERE source = {self.PARAM}", (source,))
        columns, rows = self._query(
            f"SELECT released_at, source AS file, substr(file_sha256, 1, {CONTENT_CHARS}) AS content, rows, released_by AS by, reason "
            f"FROM quarantine_releases{where} ORDER BY released_at DESC, file, content", params)
        return pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)

    def recorded_file(self, sha256: str) -> FileCounts | None:
        """What became of the rows of the file with this content hash when it was last ingested to the end (labels applied
        are not kept), None if it never was."""
        found = self._query(f"SELECT rows, ingested, duplicates, quarantined FROM files WHERE sha256 = {self.PARAM}", (sha256,))[1]
        return FileCounts(*(int(v or 0) for v in found[0])) if found else None

    def record_file(self, sha256: str, name: str, counts: FileCounts, ended: FileProgress | None = None) -> None:
        """The file is ingested to its end: its record replaces its progress, in one transaction. `ended`: where a plain
        text or Parquet file ended (its position, line and rows parsed, and in `prefix_sha256` what a file going on from it
        begins with: the bytes read, or a Parquet file's rows' digest), so the same file appended to later goes on from
        there (see `completed_named`)."""
        columns = ("name", "rows", "ingested", "duplicates", "quarantined", "at", *_ENDED_AT, ENDED_SHA256)
        end = (None, None, None, None) if ended is None else (ended.position, ended.line, ended.parsed, ended.prefix_sha256 or None)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
        with self._write() as db:
            db.execute(
                f"INSERT INTO files (sha256, {', '.join(columns)}) VALUES ({', '.join(self.PARAM for _ in range(len(columns) + 1))}) "
                f"ON CONFLICT (sha256) DO UPDATE SET {updates}",
                (sha256, name, counts.rows, counts.ingested, counts.duplicates, counts.quarantined, now_us(), *end),
            )
            db.execute(f"DELETE FROM file_progress WHERE sha256 = {self.PARAM}", (sha256,))

    def lineage(self, sha256: str) -> tuple[FileProgress, str | None]:
        """Of a content that went on from an earlier reading (see `hand_over`): where its own rows begin (from its start,
        unless it went on from one landed whole) and the prefix of its generated ids, its first content's. (FileProgress(),
        None) for any other: its own hash names its ids."""
        found = self._query(f"SELECT began_position, began_line, began_parsed, id_prefix FROM file_lineage WHERE sha256 = {self.PARAM}", (sha256,))[1]
        if not found:
            return FileProgress(), None
        position, line, parsed, prefix = found[0]
        return FileProgress(int(position), int(line), int(parsed)), str(prefix)

    def completed_named(self, name: str) -> list[tuple[str, FileProgress]]:
        """The contents landed under `name` and read to their end, as readings to go on from: a file appended
        to and landed again under its name begins with one of them (landing checks it) and is read from where it ended,
        with counts of its own. Before, it was a new content read from its start, and its rows without ids landed twice.
        Each one's `prefix_sha256` is what such a file begins with: the content's own hash, or a Parquet file's rows' digest."""
        rows = self._query(f"SELECT sha256, {', '.join(_ENDED_AT)}, {ENDED_SHA256} FROM files WHERE name = {self.PARAM} AND position IS NOT NULL", (name,))[1]
        return [(str(sha), FileProgress(int(position), int(line), int(parsed), FileCounts(), str(ended or sha))) for sha, position, line, parsed, ended in rows]

    def landed_unplaced(self, name: str) -> list[tuple[str, int]]:
        """The newest content landed whole under `name` with no record of where it ended (an earlier version kept none),
        with its rows: landing looks for where it ends in a file of that name, and records it (`place_landed`). The newest
        only: a cumulative export goes on from its latest landing, and a name reused for other contents (a daily
        export.csv) would have every earlier one looked for at every landing."""
        found = self._query(f"SELECT sha256, rows FROM files WHERE name = {self.PARAM} AND position IS NULL AND rows > 0 ORDER BY at DESC LIMIT 1",
                            (name,))[1]
        return [(str(sha), int(rows)) for sha, rows in found]

    def place_landed(self, sha256: str, ended: FileProgress) -> None:
        """Where a content landed whole by an earlier version ended, found by landing: from now on in `completed_named`."""
        with self._write() as db:
            db.execute(f"UPDATE files SET position = {self.PARAM}, line = {self.PARAM}, parsed = {self.PARAM} WHERE sha256 = {self.PARAM} AND position IS NULL",
                       (ended.position, ended.line, ended.parsed, sha256))

    def hand_over(self, earlier_sha256: str, sha256: str, began: FileProgress, id_prefix: str, quarantine: bool = True) -> None:
        """The reading of a file that grew (`sha256`) takes over the earlier reading it goes on from (see `progress_named`):
        that reading's progress goes, so no later reading goes on from it again, and (`quarantine`) its quarantined rows
        become the grown file's: an unfinished reading has no record of its own to keep them; a content landed whole
        (`completed_named`) keeps its own. Its lineage is kept from its first batch on (`began`: where its own rows
        begin; `id_prefix`: its generated ids', the first content's), so a reading of it killed and resumed, grown again or
        read again numbers every row as it was first landed. Within the caller's transaction, with its first progress."""
        p = self.PARAM
        with self._write() as db:
            db.execute(f"INSERT INTO file_lineage (sha256, began_position, began_line, began_parsed, id_prefix, grown_from) VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
                       "ON CONFLICT (sha256) DO UPDATE SET began_position = excluded.began_position, began_line = excluded.began_line, "
                       "began_parsed = excluded.began_parsed, id_prefix = excluded.id_prefix, grown_from = excluded.grown_from",
                       (sha256, began.position, began.line, began.parsed, id_prefix, earlier_sha256))
            db.execute(f"DELETE FROM file_progress WHERE sha256 = {self.PARAM}", (earlier_sha256,))
            if quarantine:
                db.execute(f"UPDATE quarantine SET file_sha256 = {self.PARAM} WHERE file_sha256 = {self.PARAM}", (sha256, earlier_sha256))

    def file_progress(self, sha256: str) -> FileProgress:
        """How far an earlier, interrupted run got with the file of this content hash (from the start if none did)."""
        rows = self._query(f"SELECT {', '.join(_PROGRESS_COLUMNS)} FROM file_progress WHERE sha256 = {self.PARAM}", (sha256,))[1]
        return _progress(rows[0]) if rows else FileProgress()

    def progress_named(self, name: str) -> list[tuple[str, FileProgress]]:
        """The unfinished readings of contents landed under `name`, by content hash. A file that grew while it was read
        leaves one that ends where its hashed content did, a reading that was killed one that ends at its last batch: the
        grown file goes on from there (landing checks that it begins with the bytes read)."""
        rows = self._query(f"SELECT sha256, {', '.join(_PROGRESS_COLUMNS)} FROM file_progress WHERE name = {self.PARAM}", (name,))[1]
        return [(str(sha), _progress(values)) for sha, *values in rows]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction around several writes (append, add_labels, quarantine, record_progress): all commit or none.

        A landing file's batch is written in one, with the file's progress, so a process killed mid-file leaves
        whole batches and a progress record pointing just past them, and counters that count each row once.
        """
        with self._write():
            yield

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Around the transactions of one landing file: a backend may do once at the end what it does at every commit."""
        yield

    def record_progress(self, sha256: str, name: str, progress: FileProgress) -> None:
        p = self.PARAM
        updates = ", ".join(f"{c} = excluded.{c}" for c in ("name", *_PROGRESS_COLUMNS))
        with self._write() as db:
            db.execute(
                f"INSERT INTO file_progress (sha256, name, {', '.join(_PROGRESS_COLUMNS)}) VALUES ({', '.join(p for _ in range(2 + len(_PROGRESS_COLUMNS)))}) "
                f"ON CONFLICT (sha256) DO UPDATE SET {updates}",
                (sha256, name, progress.position, progress.line, progress.parsed, *(getattr(progress.counts, c) for c in _COUNT_COLUMNS),
                 progress.prefix_sha256),
            )

    def counts(self) -> Counts:
        """The counters row values kept by every writing transaction: a few key look-ups, no scan."""
        values = {key: int(value) for key, value in self._query("SELECT key, value FROM meta")[1]}
        return Counts(values["events"], values["labelled"], values["quarantined"], values["label_seq"])

    def labelled_since(self, label_seq: int) -> int:
        """Labels that landed after `label_seq` (O(1): label_seq is dense)."""
        return max(0, self.counts().label_watermark - label_seq)

    def quarantine_reasons(self, since_us: int = 0, limit: int | None = 10, source: str | None = None) -> pd.DataFrame:
        """The most frequent reasons rows were quarantined for from `since_us` on (a run's own), per file (or of landing file
        `source` alone) and content (the first CONTENT_CHARS of its SHA-256: one name can be landed as several files): how
        many rows and the first of their lines, where to look. Reasons of one kind are one: the reason when its rows share
        it, else the kind, its values left out. `limit` None: every reason."""
        p = self.PARAM
        where, params = self._quarantine_where(source)
        columns, rows = self._query(
            f"SELECT source AS file, substr(file_sha256, 1, {CONTENT_CHARS}) AS content, "
            "CASE WHEN min(reason) = max(reason) THEN min(reason) ELSE min(COALESCE(kind, reason)) END AS reason, count(*) AS rows, min(row_number) AS first_line "
            f"FROM quarantine WHERE quarantined_at >= {p}{where} GROUP BY source, content, COALESCE(kind, reason) "
            f"ORDER BY rows DESC, file, content, reason{'' if limit is None else f' LIMIT {int(limit)}'}", (int(since_us), *params))
        return pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)

    def first_contents(self, source: str) -> dict[str, str]:
        """Of each content of landing file `source` with quarantined rows (the first CONTENT_CHARS of its SHA-256), the
        content the file first landed as, before it grew, appended to, to this one (`hand_over`; itself for a content that
        grew from none). Contents with one first content are one file that grew, not files that replaced it."""
        p = self.PARAM
        contents = [str(sha) for (sha,) in self._query(f"SELECT DISTINCT file_sha256 FROM quarantine WHERE source = {p} AND file_sha256 IS NOT NULL", (source,))[1]]
        earlier = {str(sha): str(grown_from) for sha, grown_from in self._query(  # each content's chain back, a reading killed on the way included
            "WITH RECURSIVE chain (sha256, grown_from) AS ("
            f"SELECT sha256, grown_from FROM file_lineage WHERE sha256 IN (SELECT file_sha256 FROM quarantine WHERE source = {p}) "
            "UNION SELECT l.sha256, l.grown_from FROM file_lineage l JOIN chain c ON l.sha256 = c.grown_from) "
            "SELECT sha256, grown_from FROM chain WHERE grown_from IS NOT NULL", (source,))[1]}

        def first(sha: str) -> str:
            seen = {sha}
            while sha in earlier and earlier[sha] not in seen:
                sha = earlier[sha]
                seen.add(sha)
            return sha

        return {sha[:CONTENT_CHARS]: first(sha) for sha in contents}

    def quarantined_rows(self, limit: int, source: str | None = None) -> pd.DataFrame:
        """The latest quarantined rows (of landing file `source`, or of every file), newest first: file, line, reason, the
        record as it was read, and when (µs since the epoch)."""
        where, params = self._quarantine_where(source)
        columns, rows = self._query(
            f"SELECT source AS file, row_number AS line, reason, record, quarantined_at FROM quarantine WHERE 1 = 1{where} "
            f"ORDER BY id DESC LIMIT {self.PARAM}", (*params, int(limit)))
        return pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)

    def _quarantine_where(self, source: str | None) -> tuple[str, tuple[str, ...]]:
        return ("", ()) if source is None else (f" AND source = {self.PARAM}", (source,))

    def _select_sql(self, where: str, order: str, limit: int | None, label_times: bool) -> str:
        features = ", ".join(f"{_col(f)} AS \"{f}\"" for f in self.spec.features)
        times = "ingested_at, label_time, " if label_times else ""
        sql = (
            f"SELECT seq, event_id, event_time, label, label_seq, source, model_version, prediction, probability, {times}"
            f"{features} FROM events WHERE {where} ORDER BY {order}"
        )
        return sql if limit is None else f"{sql} LIMIT {int(limit)}"

    def _select(self, where: str, params: Sequence[object], order: str, limit: int | None, label_times: bool = False) -> pd.DataFrame:
        return frame_from_rows(*self._query(self._select_sql(where, order, limit, label_times), list(params)), self.spec)

    def existing(self, event_ids: Sequence[str]) -> list[str]:
        """Which of these ids the log holds, in no order: serving's check of callers' ids, one indexed look-up without a
        DataFrame (which costs more than the rest of a one-row request)."""
        return [row[0] for sql, chunk in self._existing_sql(event_ids) for row in self._query(sql, chunk)[1]]

    def existing_now(self, event_ids: Sequence[str]) -> list[str] | None:
        """`existing` if it can answer without waiting for anyone, else None. Serving calls this on its event loop, as
        `append_served_now`: a store whose reads are local answers at once; one that always waits (a network round trip)
        answers None, and the caller asks `existing` off the loop."""
        return None

    def _existing_sql(self, event_ids: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
        for where, chunk in self._id_chunks(dict.fromkeys(event_ids)):
            yield f"SELECT event_id FROM events WHERE {where}", chunk

    def _id_chunks(self, event_ids: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
        """`event_id IN (...)` conditions over at most 500 ids each, with their ids: a statement's parameters are limited."""
        ids = list(event_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            yield f"event_id IN ({', '.join(self.PARAM for _ in chunk)})", chunk

    def record(self, event_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """One event as plain values: (the log's columns of `get` with label times, the features by name); None if no event
        has that id. Two mappings, as a feature may be named like a column of the log.

        Serving files each label of /feedback into its history state with it: a one-row DataFrame costs more than the rest of the request.
        """
        columns, rows = self._query(self._select_sql(f"event_id = {self.PARAM}", "seq", 1, True), [event_id])
        if not rows:
            return None
        split = len(columns) - len(self.spec.features)
        return dict(zip(columns[:split], rows[0][:split])), dict(zip(self.spec.features, rows[0][split:]))

    def labelled_window(self, limit: int, max_label_seq: int | None = None) -> pd.DataFrame:
        """The most recent `limit` labelled events (by event time), oldest first."""
        where, params = "label_seq IS NOT NULL", []
        if max_label_seq is not None:
            where += f" AND label_seq <= {self.PARAM}"
            params.append(int(max_label_seq))
        frame = self._select(where, params, "event_time DESC, seq DESC", limit)
        return frame.iloc[::-1].reset_index(drop=True)

    def served_window(self, limit: int, model_version: int | str) -> pd.DataFrame:
        """The most recent `limit` labelled predictions that `model_version` served (by event time), oldest first."""
        p = self.PARAM
        where = f"source = {p} AND model_version = {p} AND label_seq IS NOT NULL AND prediction IS NOT NULL"
        frame = self._select(where, [SERVING_SOURCE, str(model_version)], "event_time DESC, seq DESC", limit)
        return frame.iloc[::-1].reset_index(drop=True)

    def labels_since(self, label_seq: int, limit: int = 10_000, newest: bool = False) -> pd.DataFrame:
        """The events whose labels landed after `label_seq`, in the order they landed (at most `limit`: the first ones, or
        with `newest` the latest), with their label times."""
        frame = self._select(f"label_seq > {self.PARAM}", [int(label_seq)], "label_seq DESC" if newest else "label_seq", limit, label_times=True)
        return frame.iloc[::-1].reset_index(drop=True) if newest else frame

    def events_between(self, start_us: int | None = None, end_us: int | None = None, limit: int | None = None, label_times: bool = False) -> pd.DataFrame:
        """Events with start <= event_time < end, oldest first; the latest `limit` when capped.

        `label_times` adds ingested_at and label_time, which history features need to tell when a label became known.
        """
        clauses, params = ["1 = 1"], []
        if start_us is not None:
            clauses.append(f"event_time >= {self.PARAM}")
            params.append(int(start_us))
        if end_us is not None:
            clauses.append(f"event_time < {self.PARAM}")
            params.append(int(end_us))
        frame = self._select(" AND ".join(clauses), params, "event_time DESC, seq DESC", limit, label_times)
        return frame.iloc[::-1].reset_index(drop=True)

    def history_warmup(self, before_us: int | None, events: int, span_us: int) -> pd.DataFrame:
        """What history features start warm from, oldest first, with label times: the latest `events` events before
        `before_us` (None: the end of the log), or every event in the `span_us` before it when those are more (a time
        window holding more events than the count), so that training and a restarted serving read the same past."""
        latest = self.events_between(end_us=before_us, limit=events, label_times=True)
        if span_us <= 0 or len(latest) < events:
            return latest  # no time window, or the count already reached the log's start
        bounds = self.time_range() if before_us is None else (before_us, before_us - 1)
        if bounds is None:
            return latest
        start = bounds[1] + 1 - span_us
        if len(latest) and int(latest[EVENT_TIME].iloc[0]) < start:
            return latest  # the count reaches further back than the span
        return self.events_between(start_us=start, end_us=before_us, label_times=True)

    def _window(self, start_us: int, end_us: int, max_label_seq: int | None, arrived_after: Arrival | None = None) -> tuple[str, list[object]]:
        p = self.PARAM
        where, params = f"event_time >= {p} AND event_time < {p}", [int(start_us), int(end_us)]
        if arrived_after is not None:  # two ranges, each on its own index (SQLite's OR optimisation, PostgreSQL's BitmapOr)
            where = f"(({where}) OR (seq > {p} AND event_time >= {p} AND event_time < {p}))"
            params += [int(arrived_after.seq), int(arrived_after.since_us), int(end_us)]
        if max_label_seq is not None:
            where += f" AND label_seq IS NOT NULL AND label_seq <= {p}"
            params.append(int(max_label_seq))
        return where, params

    def count_between(self, start_us: int, end_us: int, max_label_seq: int | None = None, arrived_after: Arrival | None = None) -> int:
        """Events with start <= event_time < end (labelled up to `max_label_seq` when given), and those `arrived_after`
        names, counted without reading rows."""
        where, params = self._window(start_us, end_us, max_label_seq, arrived_after)
        return int(self._query(f"SELECT count(*) FROM events WHERE {where}", params)[1][0][0])

    def sample_between(self, start_us: int, end_us: int, n: int, max_label_seq: int | None = None, arrived_after: Arrival | None = None) -> pd.DataFrame:
        """A uniform sample without replacement of at most `n` of the events `count_between` counts, oldest first.

        Rows are drawn on the (event_time, seq) index with ORDER BY random(), so only the `n` chosen
        rows are read whole: memory and time stay bounded however large the window is.
        """
        where, params = self._window(start_us, end_us, max_label_seq, arrived_after)
        chosen = f"seq IN (SELECT seq FROM events WHERE {where} ORDER BY random() LIMIT {max(0, int(n))})"
        return self._select(chosen, params, "event_time, seq", None)

    def time_range(self) -> tuple[int, int] | None:
        """First and last event time in the log (two index look-ups), or None when it is empty."""
        first, last = self._query("SELECT (SELECT min(event_time) FROM events), (SELECT max(event_time) FROM events)")[1][0]
        return None if first is None else (int(first), int(last))

    def get(self, event_ids: Sequence[str], label_times: bool = False) -> pd.DataFrame:
        """The events with these ids, in log order; `label_times` as in `events_between`."""
        parts = [self._select(where, chunk, "seq", None, label_times) for where, chunk in self._id_chunks(event_ids)]
        return pd.concat(parts, ignore_index=True) if parts else self._select("0 = 1", [], "seq", None, label_times)


class _NoWaitConnection:
    """A connection of the event log's file that never waits (busy timeout 0), opened on first use and used by one
    thread at a time: another thread finding it in use gets None, as the `*_now` methods answer when they would wait."""

    def __init__(self, path: Path, pragmas: Sequence[str] = ()) -> None:
        self._path, self._pragmas = path, pragmas
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @contextmanager
    def use(self) -> Iterator[sqlite3.Connection | None]:
        if not self._lock.acquire(blocking=False):
            yield None
            return
        try:
            if self._db is None:
                self._db = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
                for pragma in self._pragmas:
                    self._db.execute(pragma)
            yield self._db
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock the statement needs: a `*_now` method answers None instead of waiting."""
    return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class EventLog(EventStore):
    """The embedded event log: one SQLite file per dataset, safe across threads and processes."""

    def __init__(self, path: Path, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.execute("PRAGMA temp_store=MEMORY")
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise EventLogError(f"event log {self.path}: {exc}") from exc
        # append_served_now's connection never checkpoints on commit; existing_now's only reads
        self._served_now = _NoWaitConnection(self.path, ("PRAGMA synchronous=NORMAL", "PRAGMA wal_autocheckpoint=0"))
        self._lookup_now = _NoWaitConnection(self.path)

    @classmethod
    def for_dataset(cls, events_dir: Path, spec: DatasetSpec) -> "EventLog":
        return cls(Path(events_dir) / f"{spec.name}.sqlite", spec)

    def _id_taken(self, exc: Exception) -> bool:
        return (isinstance(exc, sqlite3.IntegrityError) and getattr(exc, "sqlite_errorname", "") == "SQLITE_CONSTRAINT_UNIQUE"
                and str(exc).endswith("events.event_id"))

    @property
    def location(self) -> str:
        return str(self.path)

    def probe_writable(self) -> str | None:
        """On its own connection with a short timeout, so a probe never waits behind the group commit's lock."""
        try:
            with closing(sqlite3.connect(self.path, timeout=PROBE_TIMEOUT_S, isolation_level=None)) as db:
                db.execute("BEGIN IMMEDIATE")
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                db.execute(f"PRAGMA user_version = {version}")  # rewrites the header page: a real commit to the WAL
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            return f"the event log {self.path} cannot be written: {exc}"
        return None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        self._served_now.close()
        self._lookup_now.close()

    def append_served_now(self, rows: Sequence[Sequence[object]], source: str) -> int | None:
        """On a connection of its own that never waits (busy timeout 0) and never checkpoints on commit: SQLITE_BUSY,
        another writer holding the file's write lock, answers None, and so does an id already in the log (the writer
        thread's `append_served` then names it); a commit costs tens of microseconds (WAL, no fsync)."""
        if not rows:
            return 0
        with self._served_now.use() as db:
            if db is None:
                return None
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return None
                raise
            try:
                self._record_served(db, rows, source)
            except sqlite3.IntegrityError:  # an id already taken: `append_served`, off the loop, finds which
                db.execute("ROLLBACK")
                return None
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return len(rows)

    def existing_now(self, event_ids: Sequence[str]) -> list[str] | None:
        """On a read connection of its own that never waits: in WAL mode a read sees the last commit without waiting for
        writers, and another thread holding this connection, or SQLITE_BUSY, answers None."""
        with self._lookup_now.use() as db:
            if db is None:
                return None
            try:
                return [row[0] for sql, chunk in self._existing_sql(event_ids) for row in db.execute(sql, chunk)]
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return None
                raise

    def checkpoint(self) -> None:
        """A PASSIVE checkpoint on the main connection: copies what it can without waiting for readers or writers."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so the label counter read in it cannot go stale."""
        with self._lock:
            if self._conn.in_transaction:  # nested in `transaction()`: the outer block commits or rolls back
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Checkpoint every 64 MiB of WAL instead of at every landing batch's commit (each checkpoint writes the pages
        to the database file again, with two fsyncs), then once at the end, so no later writer inherits the backlog.
        Durability is the same: a commit is durable once in the WAL, checkpointed or not."""
        with self._lock:
            self._conn.execute(f"PRAGMA wal_autocheckpoint={BULK_CHECKPOINT_PAGES}")
        try:
            yield
        finally:
            with self._lock:
                self._conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        self.checkpoint()

    def _query(self, sql: str, params: Sequence[object] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock:
            cursor = self._conn.execute(sql, list(params))
            return [d[0] for d in cursor.description], cursor.fetchall()

    def _existing_columns(self, db: sqlite3.Connection, table: str) -> dict[str, str]:
        return {row[1]: str(row[2]).lower() for row in db.execute(f"PRAGMA table_info({table})")}

    def _retype_feature(self, db: sqlite3.Connection, column: str, to_text: bool) -> None:
        """SQLite changes no column's type: a new column takes the values, then replaces the old one. To text, numbers are
        spelled as landing spells a category (`2`, not SQLite's `2.0`: the same bytes landed again were "other values");
        to numbers, text that is no finite number (SQLite keeps it as text in a REAL column; `1e400` becomes inf) is cleared."""
        retyped = column[:-1] + '__retyped"'
        db.execute(f"ALTER TABLE events ADD COLUMN {retyped} {'TEXT' if to_text else 'REAL'}")
        if to_text:
            stored = pd.DataFrame(db.execute(f"SELECT seq, {column} FROM events WHERE {column} IS NOT NULL").fetchall(), columns=["seq", "value"])
            spelled = normalise_category(stored["value"].astype(object)).astype(object)
            db.executemany(f"UPDATE events SET {retyped} = ? WHERE seq = ?", zip(spelled.where(spelled.notna(), None).tolist(), stored["seq"].tolist()))
        else:
            db.execute(f"UPDATE events SET {retyped} = {column}")
            db.execute(f"UPDATE events SET {retyped} = NULL WHERE typeof({retyped}) = 'text' OR abs({retyped}) > {sys.float_info.max!r}")
        db.execute(f"ALTER TABLE events DROP COLUMN {column}")
        db.execute(f"ALTER TABLE events RENAME COLUMN {retyped} TO {column}")

    def _insert_new(self, db: sqlite3.Connection, new: pd.DataFrame, serving: list[str], label_seqs: list[int | None], source: str, at: int) -> None:
        """One executemany over columns converted once by numpy; constants are SQL literals, not a bound parameter per row."""
        features = list(self.spec.features)
        cols = [EVENT_ID, EVENT_TIME, LABEL, *serving, *features]
        db_cols = ["event_id", "event_time", "label", *serving, *(f"f_{f}" for f in features)]
        seq = len(db_cols) + 1
        quoted = ", ".join(f'"{c}"' for c in db_cols)
        insert = (
            f"INSERT INTO events ({quoted}, ingested_at, source, label_seq, label_time) "
            f"VALUES ({', '.join(f'?{i}' for i in range(1, seq))}, {at}, {_sql_text(source)}, "
            f"?{seq}, CASE WHEN ?{seq} IS NOT NULL THEN {at} END)"
        )
        db.executemany(insert, zip(*(_sql_values(new[c]) for c in cols), label_seqs))

    def _insert_served(self, db: sqlite3.Connection, columns: list[str], rows: Sequence[Sequence[object]]) -> None:
        names = ", ".join(f'"{c}"' for c in columns)
        db.executemany(f"INSERT INTO events ({names}) VALUES ({', '.join('?' for _ in columns)})", rows)

    def _recorded(self, db: sqlite3.Connection, event_ids: list[str], columns: Sequence[str] = ()) -> list[tuple[Any, ...]]:
        """One statement joining the ids, bound as one JSON array, to the event_id index: a bound value per batch,
        not an insert per id into a temp table (4x faster for a landing batch)."""
        selected = "".join(f", e.{c}" for c in columns)
        return db.execute(f"SELECT e.event_id, e.label{selected} FROM json_each(?) i JOIN events e ON e.event_id = i.value", (json.dumps(event_ids),)).fetchall()


def _sql_text(value: str) -> str:
    """A string as an SQL literal."""
    return "'" + value.replace("'", "''") + "'"
