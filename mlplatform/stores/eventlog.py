"""The event log: every event, its label (possibly late) and, for served traffic, the prediction.

Embedded by default: one SQLite file per dataset in WAL mode, so the serving process can write while
Dagster runs read, in separate processes, without "database is locked" (writers take the lock up
front with BEGIN IMMEDIATE and wait for it). Labels get a dense sequence number (`label_seq`) when
they land; "new labelled events since a cut-off" is then a subtraction, not a scan.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL

BUSY_TIMEOUT_S = 60.0
_SYSTEM_COLUMNS = ["event_id", "event_time", "ingested_at", "source", "label", "label_seq", "label_time", "model_version", "prediction", "probability"]
SERVING_COLUMNS = ["model_version", "prediction", "probability"]
SERVING_SOURCE = "serving"  # `source` of events logged by the prediction service


class EventLogError(RuntimeError):
    """The event log cannot be opened or written."""


@dataclass(frozen=True)
class AppendResult:
    inserted: int
    duplicates: int
    labels_applied: int
    conflicts: pd.DataFrame  # event_id, label, existing_label: a different label was already recorded


@dataclass(frozen=True)
class LabelResult:
    applied: list[str]
    unchanged: list[str]
    unknown: list[str]
    conflicts: list[str]


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


def _sql_text(value: str) -> str:
    """A string as an SQL literal."""
    return "'" + value.replace("'", "''") + "'"


def _col(feature: str) -> str:
    """Feature columns are prefixed so that no feature name can clash with a system column."""
    return '"f_' + feature.replace('"', '') + '"'


class EventLog:
    """Append-only store of events for one dataset, safe across threads and processes."""

    def __init__(self, path: Path, spec: DatasetSpec) -> None:
        self.path = Path(path)
        self.spec = spec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
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

    @classmethod
    def for_dataset(cls, events_dir: Path, spec: DatasetSpec) -> "EventLog":
        return cls(Path(events_dir) / f"{spec.name}.sqlite", spec)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _create_schema(self) -> None:
        label_type = "TEXT" if self.spec.is_classification else "REAL"
        feature_cols = ",\n".join(
            f"{_col(n)} {'REAL' if n in self.spec.numeric_features else 'TEXT'}" for n in self.spec.features
        )
        with self._write() as db:
            db.execute(
                f"""CREATE TABLE IF NOT EXISTS events (
                    seq INTEGER PRIMARY KEY,
                    event_id TEXT NOT NULL UNIQUE,
                    event_time INTEGER NOT NULL,
                    ingested_at INTEGER NOT NULL,
                    source TEXT NOT NULL,
                    label {label_type},
                    label_seq INTEGER,
                    label_time INTEGER,
                    model_version TEXT,
                    prediction TEXT,
                    probability REAL,
                    {feature_cols})"""
            )
            existing = {row[1] for row in db.execute("PRAGMA table_info(events)")}
            for name in self.spec.features:
                if f"f_{name}" not in existing:
                    db.execute(f"ALTER TABLE events ADD COLUMN {_col(name)} {'REAL' if name in self.spec.numeric_features else 'TEXT'}")
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_label_seq ON events(label_seq) WHERE label_seq IS NOT NULL")
            db.execute("CREATE INDEX IF NOT EXISTS events_time ON events(event_time, seq)")
            db.execute(
                """CREATE TABLE IF NOT EXISTS quarantine (
                    id INTEGER PRIMARY KEY, source TEXT NOT NULL, row_number INTEGER,
                    reason TEXT NOT NULL, record TEXT, quarantined_at INTEGER NOT NULL)"""
            )
            db.execute(
                """CREATE TABLE IF NOT EXISTS files (
                    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, rows INTEGER, ingested INTEGER,
                    duplicates INTEGER, quarantined INTEGER, at INTEGER NOT NULL)"""
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            for key in ("events", "labelled", "quarantined", "label_seq"):
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, 0)", (key,))

    @staticmethod
    def _bump(db: sqlite3.Connection, key: str, by: int) -> None:
        if by:
            db.execute("UPDATE meta SET value = value + ? WHERE key = ?", (by, key))

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def append(self, events: pd.DataFrame, source: str) -> AppendResult:
        """Insert new events; for known ids apply a label they lack; report conflicting labels.

        `events` has the canonical columns (event_id, event_time, label, features) and optionally
        model_version, prediction, probability. Re-sending an id never duplicates it (a repeat within
        `events` counts as a duplicate too). New rows go straight into `events` with one executemany
        over columns converted once by numpy: the cheap path for bulk ingestion.
        """
        if events.empty:
            return AppendResult(0, 0, 0, pd.DataFrame(columns=[EVENT_ID, LABEL, "existing_label"]))
        first = ~events[EVENT_ID].duplicated().to_numpy()
        repeated = int((~first).sum())
        events = events[first]
        features = list(self.spec.features)
        serving = [c for c in SERVING_COLUMNS if c in events.columns]
        cols = [EVENT_ID, EVENT_TIME, LABEL, *serving, *features]
        db_cols = ["event_id", "event_time", "label", *serving, *(f"f_{f}" for f in features)]
        ingested_at = now_us()
        label_seq = len(db_cols) + 1
        quoted = ", ".join(f'"{c}"' for c in db_cols)
        # Constants are SQL literals (an integer and a quoted string), not one bound parameter per row.
        insert = (
            f"INSERT INTO events ({quoted}, ingested_at, source, label_seq, label_time) "
            f"VALUES ({', '.join(f'?{i}' for i in range(1, label_seq))}, {ingested_at}, {_sql_text(source)}, "
            f"?{label_seq}, CASE WHEN ?{label_seq} IS NOT NULL THEN {ingested_at} END)"
        )
        with self._write() as db:
            known = self._known(db, events)
            fresh = ~events[EVENT_ID].isin(known[EVENT_ID]).to_numpy()
            new = events[fresh]
            labelled = new[LABEL].notna().to_numpy()
            base = self._meta(db, "label_seq")
            label_seqs = np.where(labelled, base + np.cumsum(labelled), 0).astype(object)
            label_seqs[~labelled] = None
            n = len(new)
            db.executemany(insert, zip(*(_sql_values(new[c]) for c in cols), label_seqs.tolist()))
            new_labelled = int(labelled.sum())
            self._bump(db, "label_seq", new_labelled)
            self._bump(db, "labelled", new_labelled)
            self._bump(db, "events", n)
            late = known[known[LABEL].notna() & known["existing_label"].isna()]
            applied = self._apply_labels(db, late[EVENT_ID].tolist(), late[LABEL].tolist())
        conflicts = known[known[LABEL].notna() & known["existing_label"].notna() & (known[LABEL] != known["existing_label"])]
        return AppendResult(
            inserted=n,
            duplicates=len(known) + repeated,
            labels_applied=applied,
            conflicts=conflicts.reset_index(drop=True),
        )

    def _known(self, db: sqlite3.Connection, events: pd.DataFrame) -> pd.DataFrame:
        """The incoming ids already in the log, with the incoming and the recorded label."""
        columns = [EVENT_ID, LABEL, "existing_label"]
        if not self._meta(db, "events"):
            return pd.DataFrame(columns=columns)
        db.execute("CREATE TEMP TABLE IF NOT EXISTS incoming (event_id TEXT, label)")
        db.execute("DELETE FROM incoming")
        db.executemany("INSERT INTO incoming VALUES (?, ?)", zip(_sql_values(events[EVENT_ID]), _sql_values(events[LABEL])))
        rows = db.execute("SELECT i.event_id, i.label, e.label FROM incoming i JOIN events e ON e.event_id = i.event_id").fetchall()
        db.execute("DELETE FROM incoming")
        return pd.DataFrame(rows, columns=columns)


    def _apply_labels(self, db: sqlite3.Connection, ids: Sequence[str], labels: Sequence[object]) -> int:
        """Set labels on events that have none, each with the next label_seq."""
        if not ids:
            return 0
        base = self._meta(db, "label_seq")
        at = now_us()
        done = 0
        for event_id, label in zip(ids, labels):
            cur = db.execute(
                "UPDATE events SET label = ?, label_seq = ?, label_time = ? WHERE event_id = ? AND label IS NULL",
                (label, base + done + 1, at, event_id),
            )
            done += cur.rowcount
        self._bump(db, "label_seq", done)
        self._bump(db, "labelled", done)
        return done

    def add_labels(self, event_ids: Sequence[str], labels: Sequence[object]) -> LabelResult:
        """Late labels by event id: idempotent for the same label; a different one is a conflict."""
        applied: list[str] = []
        unchanged: list[str] = []
        unknown: list[str] = []
        conflicts: list[str] = []
        with self._write() as db:
            to_apply: dict[str, object] = {}
            for event_id, label in zip(event_ids, labels):
                row = db.execute("SELECT label FROM events WHERE event_id = ?", (event_id,)).fetchone()
                if row is None:
                    unknown.append(event_id)
                elif row[0] is None and event_id not in to_apply:
                    to_apply[event_id] = label
                elif (to_apply.get(event_id, row[0])) == label:
                    unchanged.append(event_id)
                else:
                    conflicts.append(event_id)
            self._apply_labels(db, list(to_apply), list(to_apply.values()))
            applied = list(to_apply)
        return LabelResult(applied, unchanged, unknown, conflicts)

    def append_served(self, rows: Sequence[Sequence[object]], source: str) -> int:
        """Insert new unlabelled events given as plain tuples (event_id, event_time, model_version, prediction, probability, then the features in spec order), without pandas.

        The prediction service's path: its event ids are new (random per-process prefix + counter), it has no labels, so none of
        `append`'s duplicate and late-label handling applies, and a group commit of a few predictions
        must cost microseconds, not a DataFrame. A repeated id fails the whole group (IntegrityError).
        """
        if not rows:
            return 0
        db_cols = [EVENT_ID, EVENT_TIME, *SERVING_COLUMNS]
        names = ", ".join([*(f'"{c}"' for c in db_cols), *(_col(f) for f in self.spec.features), "ingested_at", "source"])
        placeholders = ", ".join("?" for _ in range(len(db_cols) + len(self.spec.features) + 2))
        at = now_us()
        with self._write() as db:
            db.executemany(f"INSERT INTO events ({names}) VALUES ({placeholders})", [(*row, at, source) for row in rows])
            self._bump(db, "events", len(rows))
        return len(rows)

    def quarantine(self, rows: pd.DataFrame, source: str) -> int:
        """Keep invalid rows with their reason; `rows` has row_number, reason, record."""
        if rows.empty:
            return 0
        at = now_us()
        with self._write() as db:
            db.executemany(
                "INSERT INTO quarantine (source, row_number, reason, record, quarantined_at) VALUES (?, ?, ?, ?, ?)",
                [(source, int(r.row_number), str(r.reason), r.record, at) for r in rows.itertuples(index=False)],
            )
            self._bump(db, "quarantined", len(rows))
        return len(rows)

    def file_seen(self, sha256: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM files WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def record_file(self, sha256: str, name: str, rows: int, ingested: int, duplicates: int, quarantined: int) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sha256, name, rows, ingested, duplicates, quarantined, now_us()),
            )

    def counts(self) -> Counts:
        with self._lock:
            values = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        return Counts(values["events"], values["labelled"], values["quarantined"], values["label_seq"])

    def labelled_since(self, label_seq: int) -> int:
        """Labels that landed after `label_seq` (O(1): label_seq is dense)."""
        return max(0, self.counts().label_watermark - label_seq)

    def quarantine_reasons(self, limit: int = 10) -> pd.DataFrame:
        with self._lock:
            return pd.read_sql_query(
                "SELECT reason, count(*) AS rows FROM quarantine GROUP BY reason ORDER BY rows DESC LIMIT ?",
                self._conn,
                params=(limit,),
            )

    def _select(self, where: str, params: Sequence[object], order: str, limit: int | None) -> pd.DataFrame:
        features = ", ".join(f"{_col(f)} AS \"{f}\"" for f in self.spec.features)
        sql = (
            "SELECT seq, event_id, event_time, label, label_seq, source, model_version, prediction, probability, "
            f"{features} FROM events WHERE {where} ORDER BY {order}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            frame = pd.read_sql_query(sql, self._conn, params=list(params))
        for name in self.spec.numeric_features:
            frame[name] = frame[name].astype("float64")
        if not self.spec.is_classification:
            frame[LABEL] = frame[LABEL].astype("float64")
        return frame

    def labelled_window(self, limit: int, max_label_seq: int | None = None) -> pd.DataFrame:
        """The most recent `limit` labelled events (by event time), oldest first."""
        where, params = "label_seq IS NOT NULL", []
        if max_label_seq is not None:
            where += " AND label_seq <= ?"
            params.append(max_label_seq)
        frame = self._select(where, params, "event_time DESC, seq DESC", limit)
        return frame.iloc[::-1].reset_index(drop=True)

    def served_window(self, limit: int, model_version: int | str) -> pd.DataFrame:
        """The most recent `limit` labelled predictions that `model_version` served (by event time), oldest first."""
        where = "source = ? AND model_version = ? AND label_seq IS NOT NULL AND prediction IS NOT NULL"
        frame = self._select(where, [SERVING_SOURCE, str(model_version)], "event_time DESC, seq DESC", limit)
        return frame.iloc[::-1].reset_index(drop=True)

    def events_between(self, start_us: int | None = None, end_us: int | None = None, limit: int | None = None) -> pd.DataFrame:
        """Events with start <= event_time < end, oldest first; the latest `limit` when capped."""
        clauses, params = ["1 = 1"], []
        if start_us is not None:
            clauses.append("event_time >= ?")
            params.append(start_us)
        if end_us is not None:
            clauses.append("event_time < ?")
            params.append(end_us)
        frame = self._select(" AND ".join(clauses), params, "event_time DESC, seq DESC", limit)
        return frame.iloc[::-1].reset_index(drop=True)

    @staticmethod
    def _window(start_us: int, end_us: int, max_label_seq: int | None) -> tuple[str, list[object]]:
        where, params = "event_time >= ? AND event_time < ?", [int(start_us), int(end_us)]
        if max_label_seq is not None:
            where += " AND label_seq IS NOT NULL AND label_seq <= ?"
            params.append(int(max_label_seq))
        return where, params

    def count_between(self, start_us: int, end_us: int, max_label_seq: int | None = None) -> int:
        """Events with start <= event_time < end (labelled up to `max_label_seq` when given), counted without reading rows."""
        where, params = self._window(start_us, end_us, max_label_seq)
        with self._lock:
            return int(self._conn.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()[0])

    def sample_between(self, start_us: int, end_us: int, n: int, max_label_seq: int | None = None) -> pd.DataFrame:
        """A uniform sample without replacement of at most `n` events with start <= event_time < end, oldest first.

        Rows are drawn on the (event_time, seq) index with ORDER BY random(), so only the `n` chosen
        rows are read whole: memory and time stay bounded however large the window is.
        """
        where, params = self._window(start_us, end_us, max_label_seq)
        chosen = f"seq IN (SELECT seq FROM events WHERE {where} ORDER BY random() LIMIT {max(0, int(n))})"
        return self._select(chosen, params, "event_time, seq", None)

    def time_range(self) -> tuple[int, int] | None:
        """First and last event time in the log (two index look-ups), or None when it is empty."""
        with self._lock:
            first, last = self._conn.execute("SELECT (SELECT min(event_time) FROM events), (SELECT max(event_time) FROM events)").fetchone()
        return None if first is None else (int(first), int(last))

    def get(self, event_ids: Sequence[str]) -> pd.DataFrame:
        ids = list(event_ids)
        if not ids:
            return self._select("0 = 1", [], "seq", None)
        chunks = [ids[i : i + 500] for i in range(0, len(ids), 500)]
        parts = [self._select(f"event_id IN ({','.join('?' for _ in chunk)})", chunk, "seq", None) for chunk in chunks]
        return pd.concat(parts, ignore_index=True)
