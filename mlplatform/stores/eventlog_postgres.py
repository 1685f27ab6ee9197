"""The event log on PostgreSQL (production profile): same interface and results as the SQLite one.

One schema per dataset (`eventlog_<name>`) in the database of `MLPLATFORM_EVENT_LOG_URL`. Landing appends
go in with COPY in binary format, the rows encoded column by column by numpy and pyarrow (no Python loop per
value, and the server parses no text); served predictions with COPY of their tuples. The counters live in
`meta` rows updated by the writing transaction, so the sensor reads them in O(1). Writers that hand out
label numbers first lock the `label_seq` row (SELECT ... FOR UPDATE): label_seq stays dense across
processes, while served appends, which only bump the `events` row at their end, wait for an ingestion only
between its own `events` update and its commit.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import psycopg
from psycopg.copy import QueuedLibpqWriter
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL
from mlplatform.stores.eventlog import EventLogError, EventStore

EVENT_LOG_URL_SETTING = "MLPLATFORM_EVENT_LOG_URL"
CONNECT_TIMEOUT_S = 10
COPY_BATCH_ROWS = 50_000  # encoded and sent batch by batch, so memory stays bounded on big files
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_COPY_TRAILER = b"\xff\xff"
_NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", pa.binary())  # field length -1
_NOTHING = pa.scalar(b"", pa.binary())


def schema_for(dataset: str) -> str:
    """The dataset's schema name: a plain lower-case identifier within PostgreSQL's 63 bytes."""
    return ("eventlog_" + re.sub(r"[^a-z0-9_]", "_", dataset.lower()))[:63]


def redact(url: str) -> str:
    """The URL (or key=value connection string) without its password, for messages and metadata."""
    url = re.sub(r"password\s*=\s*('[^']*'|[^\s&]+)", "password=***", url)
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _text(values: pd.Series) -> pa.Array:
    """A TEXT column: values as strings (as SQLite's TEXT affinity stores them), missing as null."""
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all strings: convert the way pandas prints them
        return pa.array(values.astype("string"), type=pa.string(), from_pandas=True)


def _real(values: pd.Series) -> pa.Array:
    return pa.array(values.to_numpy(dtype="float64", na_value=np.nan), type=pa.float64(), from_pandas=True)


def _fixed(rows: np.ndarray) -> pa.Array:
    """A contiguous numpy array of n records as a binary array of n values of the record's bytes."""
    width = rows.dtype.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(rows), [None, pa.py_buffer(rows)]).cast(pa.binary())


def _binary_fields(column: pa.Array) -> pa.Array:
    """One column as COPY BINARY fields: a big-endian int32 length then the value (int8/float8 big-endian, text UTF-8); length -1 for null."""
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        records = np.empty(len(column), dtype=[("length", ">i4"), ("value", ">f8" if pa.types.is_floating(column.type) else ">i8")])
        records["length"] = 8
        records["value"] = column.fill_null(0).to_numpy()
        fields = _fixed(records)
    else:
        data = column.cast(pa.binary())
        fields = pc.binary_join_element_wise(_fixed(pc.binary_length(data).fill_null(0).to_numpy().astype(">i4")), data, _NOTHING)
    return fields if column.null_count == 0 else pc.if_else(column.is_valid(), fields, _NULL_FIELD)


def _binary_rows(batch: pa.RecordBatch) -> memoryview:
    """The tuples of a COPY BINARY stream for `batch`: field count, then every field, row after row."""
    count = _fixed(np.full(batch.num_rows, batch.num_columns, dtype=">i2"))
    rows = pc.binary_join_element_wise(count, *(_binary_fields(c) for c in batch.columns), _NOTHING)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=4 * rows.offset)
    return memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]


def _error(message: str, url: str, exc: psycopg.Error) -> EventLogError:
    """An EventLogError naming the setting; the driver may quote the URL it could not parse, so that is redacted too."""
    return EventLogError(f"{message} ({EVENT_LOG_URL_SETTING}, {redact(url)}): {str(exc).replace(url, redact(url))}")


class PostgresEventLog(EventStore):
    """The event log of one dataset in its own schema of a PostgreSQL database; safe across threads and processes."""

    PARAM = "%s"
    LOCK_ROW = " FOR UPDATE"
    # Event ids are opaque: byte order (COLLATE "C") keeps their unique index cheap whatever the database's locale.
    TYPES = {"key": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "int": "BIGINT", "real": "DOUBLE PRECISION", "text": "TEXT", "id": 'TEXT COLLATE "C"'}
    UNIQUE_VIOLATION = psycopg.errors.UniqueViolation

    def __init__(self, url: str, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.schema = schema_for(spec.name)
        self._dsn = url
        self._url = redact(url)
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            raise _error("event log: cannot connect", url, exc) from exc
        try:
            with self._conn.transaction():
                # Several processes may open a new dataset at once: CREATE ... IF NOT EXISTS is not atomic.
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
                self._conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                self._create_schema()
        except psycopg.Error as exc:
            self._conn.close()
            raise _error(f"event log: cannot set up schema {self.schema}", url, exc) from exc

    @property
    def location(self) -> str:
        return f"{self._url} (schema {self.schema})"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def probe_writable(self) -> str | None:
        """A write to the counters row that changes nothing, in its own transaction: fails when the server is down,
        read-only (a standby, a full disk) or the connection cannot be remade."""
        try:
            with self._write() as db:
                db.execute("UPDATE meta SET value = value WHERE key = 'events'")
        except (psycopg.Error, EventLogError) as exc:
            return f"the event log {self.location} cannot be written: {exc}"
        return None

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        conn.execute(f'SET search_path TO "{self.schema}"')
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one when the server dropped it (restart, failover): a drop costs the call that met it, not the process."""
        if self._conn.broken:
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def _unavailable_as_event_log_error(self) -> Iterator[None]:
        """A server that is down or dropped the connection is the event log's trouble, named by its setting, and an
        EventLogError: what callers treat as transient (a landed file is kept for the next run, not rejected as its own
        fault). Errors about the data itself (integrity, types) stay psycopg's."""
        try:
            yield
        except psycopg.OperationalError as exc:
            raise _error("event log: unavailable", self._dsn, exc) from exc

    @contextmanager
    def _write(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._lock, self._unavailable_as_event_log_error():
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cursor:
                yield cursor

    def _query(self, sql: str, params: Sequence[object] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock, self._unavailable_as_event_log_error(), self._connection().cursor() as cursor:
            cursor.execute(sql, list(params) or None)
            return [d.name for d in cursor.description or []], cursor.fetchall()

    def _existing_columns(self, db: psycopg.Cursor[Any], table: str) -> dict[str, str]:
        db.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s", (table,))
        return {row[0]: str(row[1]).lower() for row in db.fetchall()}

    def _retype_feature(self, db: psycopg.Cursor[Any], column: str, to_text: bool) -> None:
        """In place; to numbers, text that is no number, or none a double holds (`1e400` failed the cast, and the log
        could not be opened), becomes missing, and one too small for a double 0. CASE tries its branches in order: a
        cast is reached only by text the pattern passed."""
        number = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})?\s*$"
        using = (f"{column}::text" if to_text else
                 f"CASE WHEN {column} !~ '{number}' THEN NULL WHEN abs({column}::numeric) > {sys.float_info.max!r} THEN NULL "
                 f"WHEN abs({column}::numeric) < 1e-300 THEN 0 ELSE {column}::double precision END")
        db.execute(f"ALTER TABLE events ALTER COLUMN {column} TYPE {'TEXT' if to_text else 'DOUBLE PRECISION'} USING {using}")

    def _insert_new(self, db: psycopg.Cursor[Any], new: pd.DataFrame, serving: list[str], label_seqs: list[int | None], source: str, at: int) -> None:
        """COPY ... FROM STDIN (FORMAT binary) of the rows encoded by `_binary_rows`."""
        n = len(new)
        reals = set(self.spec.numeric_features) | {"probability"} | (set() if self.spec.is_classification else {LABEL})
        seqs = pa.array(label_seqs, type=pa.int64())
        columns: dict[str, pa.Array] = {
            "event_id": _text(new[EVENT_ID]),
            "event_time": pa.array(new[EVENT_TIME].to_numpy(dtype="int64"), type=pa.int64()),
            "label_seq": seqs,
            "label_time": pa.array(np.full(n, at, dtype="int64"), mask=seqs.is_null().to_numpy(zero_copy_only=False)),
            "ingested_at": pa.array(np.full(n, at, dtype="int64")),
            "source": pa.array([source] * n, type=pa.string()),
        }
        for name in [LABEL, *serving]:
            columns[name] = _real(new[name]) if name in reals else _text(new[name])
        for name in self.spec.features:
            columns[f"f_{name}"] = _real(new[name]) if name in reals else _text(new[name])
        table = pa.table(columns)
        quoted = ", ".join(f'"{c}"' for c in table.column_names)
        # The queued writer sends from a thread, so the next batch is encoded while the server stores this one.
        with db.copy(f"COPY events ({quoted}) FROM STDIN (FORMAT binary)", writer=QueuedLibpqWriter(db)) as copy:
            copy.write(_COPY_HEADER)
            for batch in table.to_batches(max_chunksize=COPY_BATCH_ROWS):
                copy.write(_binary_rows(batch))
            copy.write(_COPY_TRAILER)

    def _insert_served(self, db: psycopg.Cursor[Any], columns: list[str], rows: Sequence[Sequence[object]]) -> None:
        names = ", ".join(f'"{c}"' for c in columns)
        with db.copy(f"COPY events ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _recorded(self, db: psycopg.Cursor[Any], event_ids: list[str], columns: Sequence[str] = ()) -> list[tuple[Any, ...]]:
        """One statement with the ids as an array: index probes, no temp table."""
        db.execute(f"SELECT event_id, label{''.join(f', {c}' for c in columns)} FROM events WHERE event_id = ANY(%s)", (event_ids,))
        return db.fetchall()
