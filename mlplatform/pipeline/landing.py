"""Ingesting files dropped in the landing folder (CSV, Parquet, JSON Lines; optionally gzipped).

Only settled regular files are taken: unchanged for a quiet period (and, in marker mode, with their
marker beside them), never a symlink, a temporary or hidden name, or a directory; every entry not taken
is reported with why. Each file taken is read in batches (memory bounded by the batch, not the file) and
ingested exactly once (by content hash): every batch commits with the file's progress, so a run killed
mid-file is resumed by the next one after the last committed batch. Then the file is moved to
`processed/`; a file that cannot be ingested for a reason of its own is moved to `rejected/` with a
`.reason.txt` beside it and none of its rows kept, so one bad file never blocks the next. Rows that are
invalid are quarantined in the event log with their reason, so nothing is silently dropped. Trouble
with the disk or the event log is raised, leaving the file in place, so the run is retried.
"""

from __future__ import annotations

import codecs
import copy
import csv
import fcntl
import errno
import gc
import gzip
import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import time
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mlplatform.domain.features import ARROW_STRING, normalise_category
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import (
    EVENT_ID,
    EVENT_TIME,
    ID_NUMBER_PROBLEM,
    FutureBound,
    LABEL,
    NUL,
    NUL_PROBLEM,
    RepeatedKey,
    SchemaError,
    check_columns,
    csv_separator,
    has_nul,
    label_conflict,
    not_an_id_number,
    unusable_cells,
    value_problem,
    not_a_class,
    not_a_label_number,
    one_value_per_key,
    parse_label_numbers,
    validate_frame,
    with_clean_columns,
)
from mlplatform.settings import LANDING_MAX_FUTURE_SECONDS, Settings, env_name
from mlplatform.stores.eventlog import CHANGED, CONTENT_CHARS, EventStore, EventLogError, FileCounts, FileProgress, now_us

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".jsonl", ".jsonl.gz", ".ndjson")
TEMPORARY_SUFFIXES = (".tmp", ".part")
PROCESSED = "processed"
TAKEN_INDEX = ".mlplatform-taken.json"  # in `processed`: the plain text files taken lately, watched for a writer that goes on
TAKEN_WATCH_SECONDS = 86_400.0
TAKEN_WATCH_FILES = 256  # the newest ones: the index is rewritten at each file taken, and looked at on each sensor tick
REJECTED = "rejected"
REASON_SUFFIX = ".reason.txt"
PARQUET_ROW_BYTES = 128  # a Parquet batch has batch_bytes / this many rows: about what a row of ~20 columns takes as text
READ_BLOCK = 1 << 20  # bytes read at a time while hashing and checking a .gz
LEGACY_LINE_SLACK = 1000  # line ends past twice its rows after which an earlier version's landed content is not looked for
MAX_HEADER_BYTES = 1 << 20
PARSER_BLOCK_BYTES = 1 << 24  # what Arrow's CSV and JSON readers parse at a time: a longer line (or quoted span) cannot be read
MIN_COLLECTION_SLACK_BYTES = 32 << 20  # growth of resident memory that calls for a full collection, however small the batches


class UnreadableFile(ValueError):
    """The file as a whole cannot be read; it is moved aside with this reason."""


class NotSettled(Exception):
    """The file changed while it was being looked at: it is left in the landing folder for a later run."""


@dataclass(frozen=True)
class LandingPolicy:
    """Which landing files may be taken, and how much of one may be read."""

    quiet_seconds: float
    ready_marker: str | None
    max_file_bytes: int
    max_decompressed_bytes: int
    batch_bytes: int = 8 << 20  # text parsed, validated and committed at a time (Parquet: batch_bytes / PARQUET_ROW_BYTES rows)
    max_future_seconds: float = LANDING_MAX_FUTURE_SECONDS  # an event timed later than this after now is quarantined

    @classmethod
    def from_settings(cls, settings: Settings) -> "LandingPolicy":
        return cls(
            quiet_seconds=settings.landing_quiet_seconds,
            ready_marker=settings.landing_ready_marker,
            max_file_bytes=settings.landing_max_file_bytes,
            max_decompressed_bytes=settings.landing_max_decompressed_bytes,
            batch_bytes=settings.landing_batch_bytes,
            max_future_seconds=settings.landing_max_future_seconds,
        )


@dataclass(frozen=True)
class Skipped:
    """An entry of the landing folder that was not taken in this run, and why."""

    name: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class FileOutcome(FileCounts):
    """What became of one landing file: its rows' counts, and what a person should know beyond them."""

    name: str
    extra_columns: list[str] = field(default_factory=list)
    rejected: str | None = None
    already_ingested: bool = False
    read_again: str = ""  # why a file landed before was read again (empty: it was not)
    grown: str = ""  # where the reading of a file that grew after an earlier one went on (empty: it did not)
    replaced: str = ""  # a file of this name landed before with other content, whose rows this one's may repeat
    untimed: str = ""  # an events file without the spec's time column: its events are timed as they landed

    @property
    def note(self) -> str:
        """What a person should know about this file beyond the counts."""
        if self.rejected:
            return self.rejected
        if self.already_ingested:
            return "already ingested"
        if self.read_again:
            return self.read_again
        if self.grown:
            return "; ".join(n for n in (self.grown, self.replaced) if n)
        if not self.rows:
            return "no rows"
        ignored = f"ignored columns: {', '.join(self.extra_columns)}" if self.extra_columns else ""
        return "; ".join(n for n in (self.untimed, self.replaced, ignored) if n)


@dataclass
class IngestReport:
    files: list[FileOutcome] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files)

    @property
    def rejected(self) -> list[FileOutcome]:
        return [f for f in self.files if f.rejected]


@dataclass
class _Parsed:
    frame: pd.DataFrame
    bad_rows: list[tuple[int, str, str]]  # line number, reason, raw text
    line_numbers: list[int] | None = None  # the line of each row of `frame`, so quarantine points into the file


@dataclass
class _Batch:
    parsed: _Parsed
    position: int  # where the next batch starts: byte offset in the (decompressed) text, or Parquet row
    line: int  # the file line the next batch starts on
    # The text ends without a line end: the file's last line, or a line a writer is still writing. Committed only if the
    # file is unchanged, so a reading of a file that grows goes on from a whole line.
    open_ended: bool = False
    table: pa.Table | None = None  # a Parquet batch's rows as read, for the digest of the file's rows


def _state(info: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is written to, truncated, touched or replaced."""
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _lstat(path: Path) -> os.stat_result | None:
    """The entry's own status (a symlink's, not its target's), or None when it is gone."""
    try:
        return path.lstat()
    except FileNotFoundError:
        return None


def _unwanted_name(name: str) -> str | None:
    """Why a name is never taken, or None: temporary and hidden names are how writers say "not yet"."""
    lower = name.lower()
    if name.startswith((".", "_")):
        return "hidden or temporary name (starts with '.' or '_')"
    if lower.endswith(TEMPORARY_SUFFIXES):
        return f"temporary name ({', '.join(TEMPORARY_SUFFIXES)}): still being written"
    if not lower.endswith(SUFFIXES):
        return f"not a landing file (expected one of {', '.join(SUFFIXES)})"
    return None


def _survey(landing_dir: Path, policy: LandingPolicy) -> tuple[list[tuple[Path, os.stat_result]], list[Skipped]]:
    """Entries to take (regular files, and symlinks, which are taken to be rejected) and entries left, with why.

    Entries are looked at with lstat only: a symlink's target is never touched.
    """
    take: list[tuple[Path, os.stat_result]] = []
    skipped: list[Skipped] = []
    marker = policy.ready_marker
    listing = sorted(landing_dir.iterdir())
    names = {path.name for path in listing}
    for path in listing:
        info = _lstat(path)
        if info is None or (path.name in (PROCESSED, REJECTED) and stat.S_ISDIR(info.st_mode)):
            continue
        if marker and path.name.endswith(marker):
            if path.name[: -len(marker)] not in names:
                skipped.append(Skipped(path.name, f"ready marker without its file {path.name[: -len(marker)]!r}"))
            continue
        reason = _unwanted_name(path.name)
        if reason is None and not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            reason = "a directory: landing takes files only" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        if reason is None and marker and path.name + marker not in names:
            reason = f"waiting for its ready marker {path.name + marker!r}"
        if reason is None:
            take.append((path, info))
        else:
            skipped.append(Skipped(path.name, reason))
    return take, skipped


def _settling_ns(infos: list[os.stat_result], quiet_seconds: float) -> int:
    """How long until the youngest regular file has been quiet for `quiet_seconds` (0 or less: all have)."""
    youngest = max((max(info.st_mtime_ns, info.st_ctime_ns) for info in infos if stat.S_ISREG(info.st_mode)), default=0)
    return youngest + int(quiet_seconds * 1e9) - time.time_ns()


def _settled(entries: list[tuple[Path, os.stat_result]], quiet_seconds: float) -> tuple[list[tuple[Path, os.stat_result]], list[Skipped]]:
    """The entries whose size and times stayed the same for `quiet_seconds`, oldest first, and the files still changing.

    A file changed less than the quiet period ago is waited for (at most the quiet period, once per run) and
    looked at again, rather than skipped: a file just published whole should not cost a whole extra run.
    """
    wait_ns = min(_settling_ns([info for _, info in entries], quiet_seconds), int(quiet_seconds * 1e9))
    if wait_ns > 0:
        time.sleep(wait_ns / 1e9)
    settled: list[tuple[Path, os.stat_result]] = []
    skipped: list[Skipped] = []
    for path, info in entries:
        now = _lstat(path)
        if now is None:
            continue  # taken away meanwhile: nothing left to take or report
        if _state(now) != _state(info):
            skipped.append(Skipped(path.name, f"still being written: changed within the last {quiet_seconds:g} s"))
        else:
            settled.append((path, info))
    return sorted(settled, key=lambda e: (e[1].st_mtime_ns, e[0].name)), skipped


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Strings stay Arrow-backed: no Python object per cell, and validation works on them in C++. A dictionary column (a
    pandas category written to Parquet) is read as its values: as a pandas Categorical it broke every numeric check. A
    binary column (a writer's bytes) is read as text; a cell that is not UTF-8 stays bytes, for validation to quarantine
    its row."""
    for i, column in enumerate(table.schema):
        if pa.types.is_dictionary(column.type):
            table = table.set_column(i, column.name, table.column(i).cast(column.type.value_type))
    frame = table.to_pandas(types_mapper={pa.string(): ARROW_STRING, pa.large_string(): ARROW_STRING}.get)
    for i, column in enumerate(table.schema):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type) or pa.types.is_fixed_size_binary(column.type):
            try:
                text = table.column(i).cast(pa.binary()).cast(pa.string())
                frame[column.name] = pd.Series(text.to_pandas(types_mapper={pa.string(): ARROW_STRING}.get).array, index=frame.index)
            except pa.ArrowInvalid:
                frame[column.name] = frame[column.name].map(_text_or_bytes)
    return frame


def _text_or_bytes(value: object) -> object:
    """A binary cell as text where it is UTF-8, else as it is."""
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else value
    except UnicodeDecodeError:
        return value


def _split_utf8(data: bytes, offset: int) -> tuple[bytes, list[tuple[int, str, str]]]:
    """Blank out the lines that are not valid UTF-8 (so line numbers stay true) and report them (line k of `data` is file line k + `offset`)."""
    try:
        data.decode("utf-8")
        return data, []
    except UnicodeDecodeError:
        pass
    kept: list[bytes] = []
    bad: list[tuple[int, str, str]] = []
    for number, line in enumerate(data.splitlines(keepends=True), start=1 + offset):
        try:
            line.decode("utf-8")
            kept.append(line)
        except UnicodeDecodeError as exc:
            bad.append((number, f"line {number}: not valid UTF-8 ({exc.reason} at byte {exc.start})", line.decode("utf-8", "replace")[:4096]))
            kept.append(b"\n")
    return b"".join(kept), bad


def _csv_separator(header: bytes, spec: DatasetSpec) -> str:
    """The separator that splits the header into the most of the spec's columns (`validation.csv_separator`)."""
    return csv_separator(header.decode("utf-8").rstrip("\r\n"), {EVENT_ID, EVENT_TIME, spec.label, *spec.features, *spec.key_columns})


def _parse_csv(data: bytes, offset: int, separator: str, missing: list[str]) -> _Parsed:
    """One batch: the header line, then lines of the file from line `offset` + 2 on, fields split by `separator`.

    A row is a line: a value may not span lines. A stray quote that opened a value and was not closed on its line took
    in every line up to the next quote as one row (150 good rows counted as one quarantined, or a 5-line value
    quarantined as "longer than 256 characters" and the rows in it gone). When rows span lines, each line that leaves
    a quote open is quarantined and the batch parsed again, so every other line is its own row. A line longer than
    the parser's block is quarantined too, instead of the file being rejected there.
    """
    data, bad = _split_utf8(data, offset)
    data, bad = _without_long_lines(data, offset, bad)
    parsed = _parse_csv_part(data, offset, separator, missing)
    if parsed.line_numbers is not None or not len(parsed.frame.columns):
        return _Parsed(parsed.frame, sorted(bad + parsed.bad_rows), parsed.line_numbers)
    data, open_quotes = _without_open_quotes(data, offset, separator)
    parsed = _parse_csv_part(data, offset, separator, missing)
    return _Parsed(parsed.frame, sorted(bad + open_quotes + parsed.bad_rows), parsed.line_numbers)


def _without_long_lines(data: bytes, offset: int, bad: list[tuple[int, str, str]]) -> tuple[bytes, list[tuple[int, str, str]]]:
    """Lines longer than PARSER_BLOCK_BYTES blanked out (line numbers stay true) and reported; looked for only in a batch that long."""
    if len(data) <= PARSER_BLOCK_BYTES:
        return data, bad
    lines = data.split(b"\n")
    long = [i for i, line in enumerate(lines) if len(line) > PARSER_BLOCK_BYTES]
    for i in long:
        number = i + 1 + offset
        bad = [*bad, (number, f"line {number}: longer than {PARSER_BLOCK_BYTES >> 20} MiB ({len(lines[i]):,} bytes)", lines[i][:4096].decode("utf-8", "replace"))]
        lines[i] = b""
    return (b"\n".join(lines), bad) if long else (data, bad)


def _without_open_quotes(data: bytes, offset: int, separator: str) -> tuple[bytes, list[tuple[int, str, str]]]:
    """The lines after the header that end inside a quoted value blanked out (line numbers stay true), and why."""
    lines = data.split(b"\n")
    bad: list[tuple[int, str, str]] = []
    for i in range(1, len(lines)):
        if b'"' not in lines[i]:
            continue
        text = lines[i].rstrip(b"\r").decode("utf-8")
        try:
            next(csv.reader([text], delimiter=separator, strict=True), None)
        except csv.Error as exc:
            if "unexpected end of data" not in str(exc):
                continue
            number = i + 1 + offset
            bad.append((number, f"line {number}: a quote opened on this line is not closed on it (a value may not span lines)", text[:4096]))
            lines[i] = b""
    return b"\n".join(lines), bad


def _parse_csv_part(data: bytes, offset: int, separator: str, missing: list[str]) -> _Parsed:
    """The rows of `data` and its bad lines; row numbers only where each row is one line. A field spelt as one of
    `missing` (DatasetSpec.csv_missing_values) is missing, quoted or not."""
    if not data.strip():
        return _Parsed(pd.DataFrame(), [])
    bad: list[tuple[int, str, str]] = []
    # Arrow numbers rows without the empty lines it skips; this maps its row numbers back to lines.
    lines = [number for number, line in enumerate(data.split(b"\n"), start=1 + offset) if line not in (b"", b"\r")]
    invalid: set[int] = set()

    def on_invalid(row: pacsv.InvalidRow) -> str:
        number = lines[row.number - 1] if row.number and row.number <= len(lines) else row.number or 0
        invalid.add(number)
        bad.append((number, f"line {number}: expected {row.expected_columns} fields, found {row.actual_columns}", (row.text or "")[:4096]))
        return "skip"

    try:
        first_line = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r").lstrip("\ufeff")  # Arrow drops a BOM: so must the names typed as text
        names = next(csv.reader([first_line], delimiter=separator), [])
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(block_size=PARSER_BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=separator, invalid_row_handler=on_invalid, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(column_types={str(n): pa.string() for n in names}, strings_can_be_null=True, null_values=missing),
        )
    except (pa.ArrowInvalid, csv.Error) as exc:
        raise UnreadableFile(f"not parseable as CSV: {exc}") from None
    rows = [n for n in lines[1:] if n not in invalid]
    return _Parsed(_to_pandas(table), bad, rows if len(rows) == table.num_rows else None)  # None: a row ran over several lines


def _parse_jsonl(data: bytes, text_columns: list[str], key_columns: list[str], offset: int) -> _Parsed:
    """Arrow's JSON reader (C++) for clean batches; line by line when it refuses one, to say which lines are bad.

    `text_columns` are read as strings: Arrow would otherwise turn date-like text into timestamps. Those of
    `key_columns` (ids and times) that no line has are dropped (`_without_absent_keys`). Line k of `data` is line k +
    `offset` of the file.
    """
    data, bad = _split_utf8(data, offset)
    if not data.strip():
        return _Parsed(pd.DataFrame(), bad)
    schema = pa.schema([(name, pa.string()) for name in dict.fromkeys(text_columns)])
    try:
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(block_size=PARSER_BLOCK_BYTES),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        )
    except pa.ArrowException:
        return _parse_jsonl_lines(data, bad, offset)
    table = _without_absent_keys(table, data, [name for name in schema.names if name in key_columns])
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    if table.num_rows == lines:  # no blank line: row k is line k, no need to look at each line
        return _Parsed(_to_pandas(table), bad, list(range(1 + offset, 1 + offset + lines)))
    return _Parsed(_to_pandas(table), bad, [number for number, line in enumerate(data.split(b"\n"), start=1 + offset) if line.strip()])


def _without_absent_keys(table: pa.Table, data: bytes, names: list[str]) -> pa.Table:
    """The id and time columns of the explicit schema (`names`) that are no key of any line dropped: Arrow adds each
    one, all null, and a file without event ids or times lost every row as "missing" instead of getting generated ones,
    as a CSV without them does. A feature or label column no line has stays, all null, as before."""
    absent = [name for name in names if table.column(name).null_count == table.num_rows
              and not re.search(b'"' + re.escape(name.encode()) + rb'"\s*:', data)]
    return table.drop_columns(absent) if absent else table


def _parse_jsonl_lines(data: bytes, bad: list[tuple[int, str, str]], offset: int) -> _Parsed:
    """Line by line, where Arrow refused the block: each line that is not one JSON object is quarantined on its own."""
    records: list[dict[str, object]] = []
    numbers: list[int] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1 + offset):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=one_value_per_key)
        except RepeatedKey as exc:
            bad.append((number, f"line {number}: key {json.dumps(exc.key)} given twice in one object (which value is meant is unknown)", line[:4096]))
            continue
        except json.JSONDecodeError as exc:
            bad.append((number, f"line {number}: malformed JSON ({exc.msg})", line[:4096]))
            continue
        if not isinstance(value, dict):
            bad.append((number, f"line {number}: expected a JSON object, got {type(value).__name__}", line[:4096]))
            continue
        records.append(value)
        numbers.append(number)
    return _Parsed(pd.DataFrame.from_records(records), bad, numbers)


def _key_columns(spec: DatasetSpec) -> list[str]:
    """The columns a file may leave out for generated ones: ids and times."""
    return [EVENT_ID, EVENT_TIME, *(c for c in (spec.id_column, spec.time_column) if c)]


def _text_columns(spec: DatasetSpec) -> list[str]:
    """Columns that are text whatever they look like: ids, times, categoricals, entity keys, class labels."""
    columns = [*_key_columns(spec), *spec.categorical_features, *spec.entity_keys]
    return columns + [spec.label] if spec.is_classification else columns


@contextmanager
def _opened_settled(path: Path, seen: os.stat_result, max_bytes: int) -> Iterator[BinaryIO]:
    """`path` opened for reading, provided it is still the regular file `seen` describes and within `max_bytes`.

    Opened without following symlinks, so a file swapped for a link after it was looked at is not read either.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except PermissionError as exc:
        raise UnreadableFile(f"cannot be read: {exc.strerror}") from None
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise NotSettled(f"replaced while being read ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotSettled("replaced by a symbolic link while being read") from None
        raise
    with os.fdopen(fd, "rb"):
        if _state(os.fstat(fd)) != _state(seen):
            raise NotSettled("changed since the landing folder was read")
        if seen.st_size > max_bytes:
            raise UnreadableFile(f"file is {seen.st_size} bytes, over the limit of {max_bytes} ({env_name('landing_max_file_bytes')})")
        yield io.BufferedReader(_Prefix(fd, seen.st_size), READ_BLOCK)


class _Prefix(io.RawIOBase):
    """The first `size` bytes of an open file, as a file of its own: what was hashed is all that is read. Before, rows
    appended while a file was read were read too, under the ids of the content hashed without them, and the file,
    changed, was read again whole at the next run: its rows without ids landed twice."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd, self._size, self._position = fd, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, max(0, min(len(buffer), self._size - self._position)), self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _check_settled(path: Path, handle: BinaryIO, seen: os.stat_result) -> None:
    """Raise NotSettled when the file read through `handle` changed, or its name now points elsewhere."""
    after = os.fstat(handle.fileno())
    if _state(after) != _state(seen) or _state(_lstat(path) or after) != _state(seen):
        raise NotSettled("changed while being read")


@contextmanager
def _decompressed(handle: BinaryIO) -> Iterator[BinaryIO]:
    """The content of a .gz file from its start; a corrupt stream is the file's fault, not the disk's."""
    handle.seek(0)
    try:
        with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
            yield stream  # type: ignore[misc]
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UnreadableFile(f"not a valid gzip file: {exc}") from None


def _digested(digest: Any, size: int, block: bytes, cuts: list[int], prefixes: dict[int, str]) -> int:
    """`block` added to `digest` (of `size` bytes so far), noting the digest at each of `cuts` it reaches; the new size."""
    while cuts and cuts[0] <= size + len(block):
        head, block = block[: cuts[0] - size], block[cuts[0] - size :]
        digest.update(head)
        size += len(head)
        prefixes[size] = digest.copy().hexdigest()
        cuts.pop(0)
    digest.update(block)
    return size + len(block)


def _content_hash(handle: BinaryIO, seen: os.stat_result, gzipped: bool, max_decompressed: int, at: Collection[int] = ()) -> tuple[str, dict[int, str]]:
    """The sha256 of the file, read block by block, and of its first `at` bytes (for each size given that it holds; of a
    .gz, of its decompressed text). A .gz is also decompressed to its end: a corrupt one or one that expands past
    `max_decompressed` is rejected before any of its rows is written."""
    handle.seek(0)
    digest = hashlib.sha256()
    size = 0
    prefixes: dict[int, str] = {}
    cuts = sorted(n for n in set(at) if n > 0)
    while block := handle.read(READ_BLOCK):
        size = _digested(digest, size, block, [] if gzipped else cuts, prefixes)
    if size != seen.st_size:
        raise NotSettled("changed while being read")
    if gzipped:
        expanded, text = 0, hashlib.sha256()
        with _decompressed(handle) as stream:
            while block := stream.read(READ_BLOCK):
                expanded = _digested(text, expanded, block, cuts, prefixes)
                if expanded > max_decompressed:
                    raise UnreadableFile(f"decompresses to more than {max_decompressed} bytes, over the limit ({env_name('landing_max_decompressed_bytes')})")
    return digest.hexdigest(), prefixes


def _text_batches(stream: BinaryIO, start: int, batch_bytes: int) -> Iterator[bytes]:
    """Whole lines of `stream` from byte `start` on, about `batch_bytes` at a time (more when one line is longer)."""
    stream.seek(start)
    carry = b""
    while block := stream.read(batch_bytes):
        data = carry + block
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        carry = data[cut:]
    if carry:
        yield carry


def _csv_header(stream: BinaryIO) -> tuple[bytes, int]:
    """The header (the first line that is not blank) and the file line it is on; (b"", 0) when the file has none."""
    number = 0
    while line := stream.readline(MAX_HEADER_BYTES + 1):
        number += 1
        if len(line) > MAX_HEADER_BYTES:
            raise UnreadableFile(f"the header line is longer than {MAX_HEADER_BYTES} bytes")
        if number == 1 and line.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise UnreadableFile("the file is UTF-16 (its byte-order mark says so; Excel's \"Unicode text\"): save or export it as UTF-8 (\"CSV UTF-8\")")
        if line.strip():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UnreadableFile(f"the header line is not valid UTF-8: line {number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            return line if line.endswith(b"\n") else line + b"\n", number
    return b"", 0


def _parquet_batches(handle: BinaryIO, start: int, batch_rows: int) -> Iterator[_Batch]:
    """Row batches of a Parquet file from row `start` on, parsed for landing; row groups before it are not read."""
    for table, position in _parquet_tables(handle, start, batch_rows):
        yield _Batch(_Parsed(_to_pandas(table), []), position, 1, table=table)


def _parquet_tables(handle: BinaryIO, start: int, batch_rows: int) -> Iterator[tuple[pa.Table, int]]:
    """Row batches of a Parquet file from row `start` on, as Arrow reads them, each with the row after it; an empty one
    for a file without rows (its columns are still checked, as a CSV header's). Row groups before `start` are not read."""
    try:
        handle.seek(0)
        file = pq.ParquetFile(handle)
        groups, skipped = [], 0
        for i in range(file.num_row_groups):
            rows = file.metadata.row_group(i).num_rows
            if groups or skipped + rows > start:
                groups.append(i)
            else:
                skipped += rows
        position = skipped
        if not file.metadata.num_rows and not start:
            yield file.schema_arrow.empty_table(), 0
        for batch in file.iter_batches(batch_size=batch_rows, row_groups=groups, use_threads=False):
            if position + batch.num_rows <= start:  # a batch of the row group before `start`: a reading went past it
                position += batch.num_rows
                continue
            if position < start:
                batch = batch.slice(start - position)
                position = start
            position += batch.num_rows
            if batch.num_rows:
                yield pa.Table.from_batches([batch]), position
    except (pa.ArrowInvalid, OSError) as exc:
        raise UnreadableFile(f"not parseable as Parquet: {exc}") from None


class _RowsDigest:
    """The SHA-256 of a Parquet file's rows by value: its column names, then its rows as CSV text (Arrow's writer; by
    each row's values where a column is one it cannot write, lists or bytes: a choice made by the schema, so the same
    rows give the same digest however they are batched), in order, whatever row groups a writer cut them into. So a
    cumulative export rewritten with more rows is known to begin with the content landed before (its bytes differ from
    the first one on: a new footer). A row the writer refuses (text that is not UTF-8) leaves no digest: such a file is
    read whole. (A hash of the pandas rows cost a fifth of the whole landing's CPU time.)"""

    def __init__(self, schema: pa.Schema) -> None:
        self._digest = hashlib.sha256("\x1f".join(schema.names).encode())
        self._by_row = any(pa.types.is_nested(f.type) or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
                           or pa.types.is_fixed_size_binary(f.type) or pa.types.is_dictionary(f.type) for f in schema)
        self._broken = False

    def update(self, table: pa.Table) -> None:
        if self._broken:
            return
        if self._by_row:
            self._digest.update("".join(f"{row!r}\n" for row in table.to_pylist()).encode())
            return
        text = io.BytesIO()
        try:
            pacsv.write_csv(table, text, pacsv.WriteOptions(include_header=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            self._broken = True
            return
        self._digest.update(text.getvalue())

    def copy(self) -> "_RowsDigest":
        copied = copy.copy(self)
        copied._digest = self._digest.copy()
        return copied

    def hexdigest(self) -> str:
        """The digest, or "" where a row left none."""
        return "" if self._broken else self._digest.hexdigest()


def _rows_digests(handle: BinaryIO, at: Collection[int], batch_rows: int) -> dict[int, _RowsDigest]:
    """The digest of a Parquet file's first `at` rows, for each count given that it holds (0: its column names alone)."""
    handle.seek(0)
    try:
        digest = _RowsDigest(pq.ParquetFile(handle).schema_arrow)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UnreadableFile(f"not parseable as Parquet: {exc}") from None
    cuts = sorted(set(at))
    found, read = {}, 0
    while cuts and cuts[0] == 0:
        found[cuts.pop(0)] = digest.copy()
    tables = _parquet_tables(handle, 0, batch_rows)  # not parsed to pandas: only the Arrow rows are digested
    while cuts and (read_now := next(tables, None)) is not None:
        table = read_now[0]
        while cuts and cuts[0] <= read + table.num_rows:
            digest.update(table.slice(0, cuts[0] - read))
            table, read = table.slice(cuts[0] - read), cuts[0]
            found[cuts.pop(0)] = digest.copy()
        digest.update(table)
        read += table.num_rows
    return found


def _batches(handle: BinaryIO, name: str, spec: DatasetSpec, policy: LandingPolicy, start: FileProgress) -> Iterator[_Batch]:
    """The rows of a landing file, batch by batch from where `start` says the last committed batch ended; `name` says the format."""
    name = name.lower()
    gzipped = name.endswith(".gz")
    name = name.removesuffix(".gz")
    if name.endswith(".parquet"):
        yield from _parquet_batches(handle, start.position, max(1, policy.batch_bytes // PARQUET_ROW_BYTES))
        return
    jsonl = name.endswith((".jsonl", ".ndjson"))
    with _decompressed(handle) if gzipped else nullcontext(handle) as stream:
        stream.seek(0)
        header, line = (b"", 0) if jsonl else _csv_header(stream)
        if not jsonl and not header:
            return
        separator = "" if jsonl else _csv_separator(header, spec)
        position = start.position or stream.tell()
        if jsonl and not position and stream.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:  # line by line, json.loads refused it
            position = len(codecs.BOM_UTF8)
        line = start.line if start.position else line + 1
        yielded = False
        for text in _text_batches(stream, position, policy.batch_bytes):
            # Line k of what is parsed is file line k + offset: CSV batches are parsed behind their header line.
            parsed = _parse_jsonl(text, _text_columns(spec), _key_columns(spec), line - 1) if jsonl else _parse_csv(header + text, line - 2, separator, spec.csv_missing_values)
            position += len(text)
            line += text.count(b"\n")
            yielded = True
            yield _Batch(parsed, position, line, open_ended=not text.endswith(b"\n"))
        if not yielded and header and not start.position:  # a header and no row: its columns are still checked
            yield _Batch(_parse_csv(header, line - 2, separator, spec.csv_missing_values), position, line)


def _move(path: Path, folder: str, marker: str | None) -> Path:
    """Move the entry itself (a symlink is moved, not followed) and its ready marker, if any, out of the landing folder."""
    target_dir = path.parent / folder
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    if os.path.lexists(target):
        target = target_dir / f"{now_us()}-{path.name}"
    os.rename(path, target)
    if marker and os.path.lexists(path.parent / (path.name + marker)):
        os.rename(path.parent / (path.name + marker), target.parent / (target.name + marker))
    return target


def _is_label_file(frame: pd.DataFrame, spec: DatasetSpec) -> bool:
    """Ids and labels, no feature: a feature column without a value counts as absent (a JSON Lines batch has every text
    column of the spec but absent ids and times, as its explicit schema: a label file in JSON Lines was rejected for
    missing feature columns)."""
    def present(column: str | None) -> bool:
        return column in frame.columns and (frame.empty or bool(frame[column].notna().any()))

    return present(spec.label) and (present(EVENT_ID) or present(spec.id_column)) and not any(present(c) for c in spec.features)


def _label_row_problem(id_col: str, event_id: object, not_an_id: bool, raw: object, spec: DatasetSpec) -> str:
    """Why a plain row of a label file is not applied, in the words event rows are quarantined with."""
    if pd.isna(event_id):
        return f"{id_col}: missing"
    if NUL in str(event_id):
        return f"{id_col}: {NUL_PROBLEM}"
    if not_an_id:
        return f"{id_col}: {ID_NUMBER_PROBLEM}"
    if pd.isna(raw) or (isinstance(raw, str) and not raw.strip()):
        return "label: missing"
    return f"label: {not_a_class(raw, spec.classes) if spec.is_classification else not_a_label_number(raw)}"


def _ingest_labels(frame: pd.DataFrame, lines: list[int], digest: str, spec: DatasetSpec, log: EventStore, name: str) -> FileCounts:
    """A batch of a file of late labels (event id + label, no features); returns what became of its rows."""
    id_col = spec.id_column if spec.id_column in frame.columns else EVENT_ID
    nested = {col: unusable_cells(frame[col]) for col in (id_col, spec.label)}
    plain = ~nested[id_col] & ~nested[spec.label]
    id_cells = frame[id_col].mask(nested[id_col])
    ids = normalise_category(id_cells)  # spelled as event rows' ids are
    numbers = not_an_id_number(id_cells)
    storable = ids.notna() & ~has_nul(ids) & ~numbers
    label_cells = frame[spec.label].mask(nested[spec.label])
    if spec.is_classification:
        labels = normalise_category(label_cells).replace(spec.label_map)
        valid = plain & storable & labels.isin(spec.classes or [])
    else:
        labels, bad = parse_label_numbers(label_cells)
        valid = plain & storable & labels.notna() & ~bad
    result = log.add_labels(ids[valid].tolist(), labels[valid].tolist())
    problems = [(i, f"{col}: {value_problem(frame.at[i, col])}") for col, mask in nested.items() for i in frame.index[mask & ~valid]]
    problems += [(i, _label_row_problem(id_col, ids[i], numbers[i], frame.at[i, spec.label], spec)) for i in frame.index[plain & ~valid]]
    position = {event_id: i for i, event_id in zip(frame.index[valid], ids[valid])}
    problems += [(position[e], "label for an unknown event_id") for e in result.unknown]
    if result.conflicts:
        recorded = dict(zip(*log.get(result.conflicts)[[EVENT_ID, LABEL]].to_numpy().T))
        problems += [(position[e], label_conflict(recorded.get(e), labels[position[e]])) for e in result.conflicts]
    rows = pd.DataFrame(
        {
            "row_number": [lines[i] for i, _ in problems],
            "reason": [reason for _, reason in problems],
            "record": [json.dumps({k: str(v) for k, v in frame.iloc[i].items()}) for i, _ in problems],
        }
    )
    return FileCounts(quarantined=log.quarantine(rows, source=name, file_sha256=digest), labels_applied=len(result.applied), duplicates=len(result.unchanged))


def _is_transient(exc: Exception) -> bool:
    """Trouble with the disk, memory or the event log, which a retried run may not meet again.

    Everything else (a parser or a check failing on what the file holds) is the file's own fault: no retry
    can fix it, so the file is rejected instead of blocking every file behind it.
    """
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)):
        return False
    return isinstance(exc, (OSError, MemoryError, sqlite3.Error, EventLogError))


def _ingest_events(frame: pd.DataFrame, lines: list[int], first_row: int, digest: str, id_prefix: str, spec: DatasetSpec, log: EventStore,
                   name: str, max_future_seconds: float) -> tuple[FileCounts, list[str]]:
    """A batch of events: valid rows appended (ids generated as `id_prefix` and the row's number), the others quarantined
    (conflicting labels too); returns what became of its rows and the columns ignored."""
    now = now_us()
    validated = validate_frame(frame, spec, generated_id_prefix=id_prefix, generated_time_start_us=now, row_numbers=lines, first_row=first_row,
                               future=FutureBound(now + int(max_future_seconds * 1_000_000), max_future_seconds))
    result = log.append(validated.events, source=name, timed=validated.timed)
    quarantined = log.quarantine(validated.quarantined, source=name, file_sha256=digest)
    duplicates = validated.duplicates + result.duplicates
    if not result.changed.empty:
        line = dict(zip(validated.events[EVENT_ID], validated.row_numbers.tolist()))
        changed = pd.DataFrame({
            "row_number": [line.get(event_id, 0) for event_id in result.changed[EVENT_ID]],
            "reason": [f"event_id: already the id of an event with other values ({what}); an event is never overwritten"
                       for what in result.changed[CHANGED]],
            "record": [json.dumps(r) for r in result.changed.astype(str).to_dict("records")],
        })
        quarantined += log.quarantine(changed, source=name, file_sha256=digest)
    if not result.conflicts.empty:
        line = dict(zip(validated.events[EVENT_ID], validated.row_numbers.tolist()))
        conflicts = result.conflicts.assign(
            row_number=[line.get(event_id, 0) for event_id in result.conflicts[EVENT_ID]],
            reason=[label_conflict(r, g) for r, g in zip(result.conflicts["existing_label"], result.conflicts[LABEL])],
            record=[json.dumps(r) for r in result.conflicts.astype(str).to_dict("records")],
        )
        quarantined += log.quarantine(conflicts, source=name, file_sha256=digest)
        duplicates -= len(conflicts)
    counts = FileCounts(ingested=result.inserted, duplicates=duplicates, quarantined=quarantined, labels_applied=result.labels_applied)
    return counts, validated.extra_columns


class _CycleCollector:
    """Frees the reference cycles pandas frames sit in, which would keep several batches of Arrow buffers alive.

    A young-generation pass after each batch is cheap and frees some of them. A full pass walks every object of
    every loaded library (seconds in a big process), so it runs only when the resident memory grew by more than
    `slack_kb` (two batches, at least 32 MiB) over what the last one left: memory stays bounded by the batch, and
    a process whose memory does not grow pays nothing.
    """

    def __init__(self, slack_kb: int) -> None:
        self.slack_kb = slack_kb
        self.baseline_kb = _resident_kb()

    def after_batch(self) -> None:
        gc.collect(1)
        if _resident_kb() > self.baseline_kb + self.slack_kb:
            gc.collect()
            self.baseline_kb = _resident_kb()


def _resident_kb() -> int:
    """The process's resident memory now (not its peak, which never comes down after a collection)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class _PrefixDigest:
    """The SHA-256 of a file's first bytes (a .gz's decompressed text), extended as its reading goes on. Recorded with
    each batch's progress, so a file that grew after its reading was killed is known to begin with the bytes read, and
    goes on after them: read from its start as a new content, its rows without ids landed twice. One more pass over the
    bytes read (sha256, ~1 GB/s), on a reader of its own: the reading's handle moves as it parses."""

    def __init__(self, handle: BinaryIO, size: int, gzipped: bool) -> None:
        raw: BinaryIO = io.BufferedReader(_Prefix(handle.fileno(), size), READ_BLOCK)
        self._stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        self._digest, self._size = hashlib.sha256(), 0

    def upto(self, position: int) -> str:
        """The digest of the file's first `position` bytes (at or after the last one asked for)."""
        while self._size < position:
            try:
                block = self._stream.read(min(READ_BLOCK, position - self._size))
            except (EOFError, zlib.error, gzip.BadGzipFile):  # a .gz cut short meanwhile
                block = b""
            if not block:
                raise NotSettled("changed while being read")
            self._digest.update(block)
            self._size += len(block)
        return self._digest.hexdigest()


def _ends_a_line_at(handle: BinaryIO, position: int, gzipped: bool) -> bool:
    """Whether a content landed whole that ended at `position` ended a line there, as this file shows: its last byte is a
    line end, or the bytes appended after it begin with one (an export whose last line had none, appended to). Its last
    line extended by the appended bytes would be read on from the middle of a line, so such a file is read whole. Of a
    .gz, in its decompressed text."""
    if position <= 0:
        return False
    if gzipped:
        with _decompressed(handle) as stream:
            stream.seek(position - 1)
            around = stream.read(2)
        return around[:1] == b"\n" or around[1:2] in (b"\n", b"\r")
    fd = handle.fileno()
    return os.pread(fd, 1, position - 1) == b"\n" or os.pread(fd, 1, position) in (b"\n", b"\r")


def _content_end(handle: BinaryIO, sha256: str, read_up_to: int = 0, max_line_ends: int | None = None) -> tuple[int, int] | None:
    """Where the file's first bytes are the whole content of `sha256`, ending at a line end after `read_up_to`, and the
    line ends they hold; None if they never are (within `max_line_ends`). How a reading recorded by an earlier version,
    which kept no digest of the bytes read (killed mid-file) or no place where the content ended (landed whole), is known
    to be this file's start (the upgrade probe: such a file grown was read from its start, and its rows without ids landed
    twice). One pass over the file, a digest at each line end after `read_up_to`; only for such readings."""
    digest, fd, offset, ends = hashlib.sha256(), handle.fileno(), 0, 0
    while offset < read_up_to:
        block = os.pread(fd, min(READ_BLOCK, read_up_to - offset), offset)
        if not block:
            return None
        digest.update(block)
        ends += block.count(b"\n")
        offset += len(block)
    while block := os.pread(fd, READ_BLOCK, offset):
        start = 0
        while (end := block.find(b"\n", start)) != -1:
            digest.update(block[start : end + 1])
            start, ends = end + 1, ends + 1
            if digest.copy().hexdigest() == sha256:
                return offset + start, ends
            if max_line_ends is not None and ends >= max_line_ends:
                return None
        digest.update(block[start:])
        offset += len(block)
    return None


def _placed(handle: BinaryIO, log: EventStore, name: str) -> list[tuple[str, FileProgress]]:
    """The newest content of `name` an earlier version landed whole without keeping where it ended, as a reading to go on
    from (see `completed_named`): where this file begins with it, it ended there; the place is recorded, and never looked
    for again. Its rows are only counted, which numbers nothing: the appended rows get ids of their own."""
    placed = []
    for sha, rows in log.landed_unplaced(name):
        found = _content_end(handle, sha, max_line_ends=2 * rows + LEGACY_LINE_SLACK)
        if found is not None:
            position, ends = found
            ended = FileProgress(position, ends + 1, rows, FileCounts(), sha)  # the next line's number, as a reading counts it
            log.place_landed(sha, ended)
            placed.append((sha, ended))
    return placed


def _store(path: Path, handle: BinaryIO, seen: os.stat_result, spec: DatasetSpec, log: EventStore, policy: LandingPolicy) -> FileOutcome:
    """Ingest the file batch by batch, each batch in one transaction with the file's progress.

    Everything about the file as a whole (its hash, a .gz's integrity and size, a header or schema that makes it
    unusable: checked on the first batch, before it is written) fails before the first write, so such a file
    leaves no rows behind. A run that dies mid-file leaves whole batches and the progress after them: the next
    run resumes there, and event-id dedup makes any overlap harmless.
    """
    # A plain text file whose reading stopped (where its content then ended, or killed after a batch) may have grown since:
    # one that begins with the bytes read goes on from there. A Parquet file landed whole may have been exported again
    # with more rows: one that begins with its rows goes on from there. Not a .gz's.
    parquet, gzipped = path.name.lower().endswith(".parquet"), path.name.lower().endswith(".gz")
    plain_text = not parquet and not gzipped
    unfinished, landed = log.progress_named(path.name), log.completed_named(path.name)
    if plain_text:  # a content an earlier version landed whole, kept without where it ended
        landed += _placed(handle, log, path.name)
    digest, prefixes = _content_hash(handle, seen, gzipped, policy.max_decompressed_bytes, [] if parquet else [p.position for _, p in [*unfinished, *landed]])
    batch_rows = max(1, policy.batch_bytes // PARQUET_ROW_BYTES)
    rows_read: dict[int, _RowsDigest] = {}
    _check_settled(path, handle, seen)
    if landed and _first_columns_label_only(handle, path.name, spec, policy):
        landed = []  # a label file is read whole, as one landed again is: labels whose events were missing may find them now
    recorded = log.recorded_file(digest)
    read_again = "" if recorded is None or not recorded.rows else _read_again(recorded, handle, path.name, spec, policy)
    if recorded is not None and recorded.rows and not read_again:
        return FileOutcome(name=path.name, rows=recorded.rows, duplicates=recorded.rows, already_ingested=True)
    progress = log.file_progress(digest)
    # A content that went on from one landed whole is its own from there: read again, it begins there too (before, the
    # rows of the earlier content landed again under this content's ids).
    began, inherited = log.lineage(digest)
    id_prefix, continued = inherited or digest[:16], inherited is not None
    landed_rows = 0
    if read_again and not progress.position:
        progress = began
    grown_from, grown, grown_at = None, "", 0
    if recorded is None and not progress.position:  # the furthest reading this file begins with (it may have grown twice)
        if parquet:  # only here: not for the same bytes again, nor a reading resumed
            rows_read = _rows_digests(handle, [p.position for _, p in [*unfinished, *landed]], batch_rows)
            prefixes = {rows: found.hexdigest() for rows, found in rows_read.items() if found.hexdigest()}
        # Its line end looked at only where its prefix matches (or is unknown): a .gz's is a decompression up to it, and a
        # name landed daily (export.csv.gz) decompressed the new file once per earlier content (the review).
        ended_lines = [(sha, p) for sha, p in landed if parquet or ((not p.prefix_sha256 or prefixes.get(p.position) == p.prefix_sha256)
                                                                    and _ends_a_line_at(handle, p.position, gzipped))]
        grown_from, progress = max(((sha, p) for sha, p in [*unfinished, *ended_lines] if prefixes.get(p.position) == (p.prefix_sha256 or sha)
                                    or (plain_text and not p.prefix_sha256 and _content_end(handle, sha, p.position) is not None)),
                                   key=lambda found: found[1].position, default=(None, progress))
        grown_at = progress.position
        grown = "" if not grown_from else (f"grew after its first {progress.position} rows were landed: read on from row {progress.position + 1}" if parquet
                                           else f"grew after its first {progress.position} bytes{' (decompressed)' if gzipped else ''} were read: read on from line {progress.line}")
    # Going on from a content landed whole, this one is the appended rows alone: its counts, its quarantine, and a reading
    # of it again begin where that content ended. Going on from an unfinished reading, it is that reading's file, whole.
    from_landed = grown_from in {sha for sha, _ in landed}
    if from_landed:  # its own rows begin there, under its own ids: two files grown apart from one landed content never share one
        began, landed_rows = FileProgress(progress.position, progress.line, progress.parsed), progress.parsed
    elif grown_from is not None:  # one reading, gone on: its rows are numbered on under that reading's ids, from where its own began
        began, inherited = log.lineage(grown_from)
        id_prefix = inherited or grown_from[:16]
    # A reading again replaces the file's quarantine, in its first batch's transaction (not again when it resumes).
    releasing = bool(read_again) and not progress.counts.rows
    collector = _CycleCollector(slack_kb=max(2 * policy.batch_bytes, MIN_COLLECTION_SLACK_BYTES) // 1024)
    read = None if parquet else _PrefixDigest(handle, seen.st_size, gzipped)
    # A Parquet file's rows' digest, for a later export that goes on from it: from where this reading begins (its rows
    # before were digested above when it goes on from an earlier reading, and are read again here when it resumes).
    rows_digest = (rows_read[progress.position] if progress.position in rows_read else _rows_digests(handle, [progress.position], batch_rows)[progress.position]) \
        if parquet else None
    columns: list[str] = []
    labels_only = False
    extra: list[str] = []
    try:
        with log.bulk_load():
            for batch in _batches(handle, path.name, spec, policy, progress):
                if rows_digest is not None and batch.table is not None:
                    rows_digest.update(batch.table)
                frame = with_clean_columns(batch.parsed.frame)
                counts = FileCounts(rows=len(frame) + len(batch.parsed.bad_rows))
                if not columns and len(frame.columns):
                    columns, labels_only = list(frame.columns), _is_label_file(frame, spec)
                    if not labels_only:
                        check_columns(columns, spec)  # before any write, a header without rows too
                # A JSON Lines batch may lack a key the file's first rows had: its rows miss that value, like the other lines'.
                frame = frame.assign(**{c: pd.Series(None, index=frame.index, dtype=object) for c in columns if c not in frame.columns})
                lines = batch.parsed.line_numbers or list(range(progress.parsed + 1, progress.parsed + len(frame) + 1))
                if batch.open_ended:  # its last line has no line end: a writer may be in the middle of it
                    _check_settled(path, handle, seen)
                with log.transaction():
                    if releasing:
                        log.release_quarantined(digest, from_line=began.line if began.position else 0)
                        releasing = False
                    if grown_from is not None:
                        log.hand_over(grown_from, digest, began, id_prefix, quarantine=not from_landed)
                        grown_from = None
                    if not frame.empty:
                        if labels_only:
                            counts += _ingest_labels(frame, lines, digest, spec, log, path.name)
                        else:
                            found, extra_now = _ingest_events(frame, lines, progress.parsed, digest, id_prefix, spec, log, path.name, policy.max_future_seconds)
                            counts, extra = counts + found, extra or extra_now
                    if batch.parsed.bad_rows:
                        bad = pd.DataFrame(batch.parsed.bad_rows, columns=["row_number", "reason", "record"])
                        counts += FileCounts(quarantined=log.quarantine(bad, source=path.name, file_sha256=digest))
                    progress = FileProgress(batch.position, batch.line, progress.parsed + len(frame), progress.counts + counts,
                                            read.upto(batch.position) if read else rows_digest.hexdigest() if rows_digest is not None else "")
                    log.record_progress(digest, path.name, progress)
                del frame, batch
                collector.after_batch()
    except (UnreadableFile, SchemaError) as exc:
        if progress.counts.rows:
            raise type(exc)(f"{exc} (from line or row {progress.line} on; the {progress.counts.rows} rows before it were kept)") from None
        raise
    _check_settled(path, handle, seen)
    with log.transaction():
        if grown_from is not None:  # nothing was read after the earlier reading: still its successor
            log.hand_over(grown_from, digest, began, id_prefix, quarantine=not from_landed)
        ended = replace(progress, prefix_sha256=rows_digest.hexdigest()) if rows_digest is not None else progress
        # The rows of a content landed whole and none after them (the same rows written again as other bytes): nothing
        # new, and recorded so: landed again, these bytes were read from their start (the review: their rows twice).
        nothing_new = from_landed and not progress.counts.rows
        counts = FileCounts(rows=landed_rows, duplicates=landed_rows) if nothing_new else progress.counts
        log.record_file(digest, path.name, counts, ended if progress.position else None)
    if nothing_new:
        return FileOutcome(name=path.name, rows=landed_rows, duplicates=landed_rows, already_ingested=True)
    # Another content of this name, not gone on from (a corrected export, say), or one further than the content gone on
    # from, which this one does not begin with. Without ids, rows it shares with the other are new events again (the
    # acceptance probe: 27 rows stored twice, nothing said). Not said of a reading that resumes one that went on.
    others = [sha[:CONTENT_CHARS] for sha, p in landed if sha != digest and (not grown or p.position > grown_at)]
    if not plain_text:  # one landed by a version that kept no digest of its rows or text: never gone on from
        others += [sha[:CONTENT_CHARS] for sha, _ in log.landed_unplaced(path.name) if sha != digest]
    has_ids = spec.id_column in columns or EVENT_ID in columns  # validation's own choice of an id column
    replaced = (f"another file named {path.name!r} was landed before ({', '.join(others)}): without an id column, rows the two share are "
                "events of both" if others and not continued and not read_again and not has_ids else "")
    # The spec names a time column and this events file has none: a broken export, most likely (the new-user probe: old
    # events became the log's newest, in every hold-out, and nothing said so). Taken, as documented, and said.
    untimed = (f"no time column {spec.time_column!r}: its events are timed as they landed" if spec.time_column and columns and not labels_only
               and spec.time_column not in columns and EVENT_TIME not in columns else "")
    return FileOutcome(name=path.name, extra_columns=extra, read_again=read_again, grown=grown, replaced=replaced, untimed=untimed,
                       **asdict(progress.counts))


def _read_again(recorded: FileCounts, handle: BinaryIO, name: str, spec: DatasetSpec, policy: LandingPolicy) -> str:
    """Why a file landed before is read again, or "": a file of late labels, for the labels whose events have landed since;
    a file some of whose rows were quarantined, for those rows under the spec as it is now (after a fix of a wrong
    `time_format`, say). Rows already in the log are duplicates again; rows still refused are quarantined again."""
    if _first_columns_label_only(handle, name, spec, policy):
        return "label file landed before: read again (labels already applied count as duplicates)"
    if recorded.quarantined:
        return (f"landed before with {recorded.quarantined} of its {recorded.rows} rows quarantined: read again under the current spec "
                "(rows already in the event log count as duplicates)")
    return ""


def _first_columns_label_only(handle: BinaryIO, name: str, spec: DatasetSpec, policy: LandingPolicy) -> bool:
    """Whether a file's first batch is of late labels: such a file landed again is read again, since labels whose events
    were missing the first time (quarantined) may have their events now; an event file's same bytes are duplicates."""
    first = next(_batches(handle, name, spec, policy, FileProgress()), None)
    return first is not None and _is_label_file(with_clean_columns(first.parsed.frame), spec)


def _take(path: Path, seen: os.stat_result, spec: DatasetSpec, log: EventStore, policy: LandingPolicy) -> FileOutcome:
    """Ingest one entry and move it out of the landing folder; raises NotSettled (left in place) or a transient error."""
    try:
        if stat.S_ISLNK(seen.st_mode):
            raise UnreadableFile(f"a symbolic link (to {os.readlink(path)!r}): landing takes regular files only, the target is not read")
        if not stat.S_ISREG(seen.st_mode):
            raise UnreadableFile("not a regular file: landing takes regular files only")
        with _opened_settled(path, seen, policy.max_file_bytes) as handle:
            outcome = _store(path, handle, seen, spec, log, policy)
    except NotSettled:
        raise
    except Exception as exc:
        if _is_transient(exc):
            raise
        reason = str(exc) if isinstance(exc, (UnreadableFile, SchemaError)) else f"cannot be ingested: {type(exc).__name__}: {exc}"
        moved = _move(path, REJECTED, policy.ready_marker)
        moved.with_name(moved.name + REASON_SUFFIX).write_text(f"{reason}\n", encoding="utf-8")
        return FileOutcome(name=path.name, rejected=reason)
    moved = _move(path, PROCESSED, policy.ready_marker)
    if not path.name.lower().endswith((".gz", ".parquet")):  # what a writer may append to, and landing can read on from
        _remember_taken(moved, path.name, seen)
    return outcome


@dataclass(frozen=True)
class RejectedFile:
    """A landing file moved to `rejected/`, with the first line of why."""

    name: str
    reason: str
    at_us: int  # when it was rejected (its reason file's mtime)


def rejected_files(landing_dir: Path) -> list[RejectedFile]:
    """The files of the landing folder's `rejected/`, newest first: `status` lists them (a rejected file's rows were in
    no count and no command showed it: the new-user probe)."""
    folder = landing_dir / REJECTED
    found = []
    for reason in folder.glob(f"*{REASON_SUFFIX}") if folder.is_dir() else ():
        with suppress(OSError):  # taken back meanwhile
            first = reason.read_text(encoding="utf-8", errors="replace").partition("\n")[0]
            found.append(RejectedFile(reason.name.removesuffix(REASON_SUFFIX), first, reason.stat().st_mtime_ns // 1000))
    return sorted(found, key=lambda r: r.at_us, reverse=True)


def _taken(processed: Path) -> dict[str, dict[str, Any]]:
    """The plain text files moved into `processed` within TAKEN_WATCH_SECONDS (the newest TAKEN_WATCH_FILES), by their
    name there: their name in the landing folder, inode, size as read and whether that content ended a line. An index,
    or an entry, that cannot be read is none (it only ever adds a look; a sensor tick must not fail on it)."""
    try:
        index = json.loads((processed / TAKEN_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    since, kept = time.time() - TAKEN_WATCH_SECONDS, []
    for name, entry in index.items() if isinstance(index, dict) else ():
        try:
            read = {"name": str(entry["name"]), "ino": int(entry["ino"]), "size": int(entry["size"]), "at": float(entry["at"]),
                    "line_end": bool(entry["line_end"])}
        except (TypeError, KeyError, ValueError):
            continue
        if read["at"] >= since:
            kept.append((str(name), read))
    return dict(sorted(kept, key=lambda item: item[1]["at"])[-TAKEN_WATCH_FILES:])


def _write_taken(processed: Path, index: dict[str, dict[str, Any]]) -> None:
    temporary = processed / f"{TAKEN_INDEX}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(index), encoding="utf-8")
    os.replace(temporary, processed / TAKEN_INDEX)


def _remember_taken(moved: Path, name: str, seen: os.stat_result) -> None:
    if not seen.st_size:
        return
    with moved.open("rb") as taken:
        line_end = os.pread(taken.fileno(), 1, seen.st_size - 1) == b"\n"
    index = _taken(moved.parent)
    index[moved.name] = {"name": name, "ino": seen.st_ino, "size": seen.st_size, "at": time.time(), "line_end": line_end}
    _write_taken(moved.parent, index)


@dataclass(frozen=True)
class _Grown:
    """A processed file that grew after it was taken (the same inode, larger): a writer that paused past the quiet period
    kept it open and wrote on into it in `processed` (the operator probe lost 1,500 of 2,500 rows so, with nothing said)."""

    where: Path
    name: str  # its name in the landing folder
    info: os.stat_result
    line_end: bool  # the content taken ended a line: read on from there; else the rest would be read as a new file

    def why_left(self, landing_dir: Path) -> str | None:
        """Why it is not brought back now, or None."""
        if not self.line_end:
            return ("grew after it was taken, in the middle of its last line (its writer paused mid-line): move it back into the landing "
                    "folder to land the rest; without ids, the rows taken before land again")
        if os.path.lexists(landing_dir / self.name):
            return f"grew after it was taken; brought back to be read on once the {self.name!r} waiting in the landing folder is taken"
        return None


def _grown_since_taken(landing_dir: Path, index: dict[str, dict[str, Any]] | None = None) -> list[_Grown]:
    """The processed files of `index` (default: the one in `processed`) that grew since they were taken."""
    processed = landing_dir / PROCESSED
    grown = []
    for name, entry in (_taken(processed) if index is None else index).items():
        info = _lstat(processed / name)
        if info is not None and stat.S_ISREG(info.st_mode) and info.st_ino == entry["ino"] and info.st_size > entry["size"]:
            grown.append(_Grown(processed / name, entry["name"], info, entry["line_end"]))
    return grown


def _bring_back_grown(landing_dir: Path, marker: str | None) -> list[Skipped]:
    """Move each processed file that grew since it was taken back into the landing folder under its name (with its ready
    marker), where it is read on from where its reading ended (see `completed_named`); the others are reported, with why."""
    index, left = _taken(landing_dir / PROCESSED), []
    for grown in _grown_since_taken(landing_dir, dict(index)):  # read once: the loop takes entries out of `index`
        why = grown.why_left(landing_dir)
        if why is not None:
            left.append(Skipped(f"{PROCESSED}/{grown.where.name}", why))
            continue
        os.rename(grown.where, landing_dir / grown.name)
        if marker and os.path.lexists(grown.where.parent / (grown.where.name + marker)):
            os.rename(grown.where.parent / (grown.where.name + marker), landing_dir / (grown.name + marker))
        index.pop(grown.where.name, None)
        _write_taken(landing_dir / PROCESSED, index)
    return left


def _policy(policy: LandingPolicy | None) -> LandingPolicy:
    """The given policy, or the one the MLPLATFORM_LANDING_* settings describe."""
    return policy or LandingPolicy.from_settings(Settings())


def ingest_file(path: Path, spec: DatasetSpec, log: EventStore, policy: LandingPolicy | None = None) -> FileOutcome:
    """Ingest one landing file, whatever its age, and move it out of the landing folder.

    Raises NotSettled, leaving the file in place, when it changes while being read.
    """
    return _take(path, path.lstat(), spec, log, _policy(policy))


def ingest_pending(landing_dir: Path, spec: DatasetSpec, log: EventStore, policy: LandingPolicy | None = None) -> IngestReport:
    """Ingest every settled file waiting in the landing folder, oldest first; report every entry left there, and why.

    One ingestion of a folder at a time (an exclusive lock on the folder itself): a run the landing sensor started and
    one started by hand take turns, the second finding what the first left."""
    policy = _policy(policy)
    report = IngestReport()
    if not landing_dir.is_dir():
        return report
    with exclusive(landing_dir):
        left = _bring_back_grown(landing_dir, policy.ready_marker)
        entries, report.skipped = _survey(landing_dir, policy)
        report.skipped += left
        entries, changing = _settled(entries, policy.quiet_seconds)
        report.skipped += changing
        for path, seen in entries:
            try:
                report.files.append(_take(path, seen, spec, log, policy))
            except NotSettled as exc:
                report.skipped.append(Skipped(path.name, str(exc)))
    return report


@contextmanager
def exclusive(folder: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (waiting for it, after calling `on_wait` if it is held; no file is made),
    released when the block ends or the process dies. Landing holds its folder's while it reads the files in it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def landing_candidates(landing_dir: Path, policy: LandingPolicy) -> tuple[list[tuple[str, int, int]], float]:
    """The entries a run would take now, each as (name, size, latest change in ns), and the seconds until all are settled
    (0: they are), by lstat alone: what the landing sensor looks at on every tick, without reading a byte of any file."""
    if not landing_dir.is_dir():
        return [], 0.0
    entries, _ = _survey(landing_dir, policy)
    entries += [(landing_dir / g.name, g.info) for g in _grown_since_taken(landing_dir) if g.why_left(landing_dir) is None]  # a run brings them back
    infos = [info for _, info in entries]
    waiting = [(path.name, info.st_size, max(info.st_mtime_ns, info.st_ctime_ns)) for path, info in entries]
    return waiting, max(_settling_ns(infos, policy.quiet_seconds), 0) / 1e9
