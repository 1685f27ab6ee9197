"""Ingesting files dropped in the landing folder (CSV, Parquet, JSON Lines; optionally gzipped).

Each file is ingested exactly once (by content hash), then moved to `processed/`; a file that
cannot be parsed at all is moved to `rejected/` with a `.reason.txt` beside it. Rows that are
invalid are quarantined in the event log with their reason, so nothing is silently dropped.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mlplatform.stores.eventlog import EventLog, now_us
from mlplatform.domain.features import ARROW_STRING, as_text, normalise_category
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, SchemaError, Validated, parse_numeric, validate_frame, with_clean_columns

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".jsonl", ".jsonl.gz", ".ndjson")
PROCESSED = "processed"
REJECTED = "rejected"
DEFAULT_MAX_FILE_BYTES = 1 << 30


class UnreadableFile(ValueError):
    """The file as a whole cannot be read; it is moved aside with this reason."""


@dataclass
class FileOutcome:
    name: str
    rows: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    labels_applied: int = 0
    extra_columns: list[str] = field(default_factory=list)
    rejected: str | None = None
    already_ingested: bool = False

    @property
    def note(self) -> str:
        """What a person should know about this file beyond the counts."""
        if self.rejected:
            return self.rejected
        if self.already_ingested:
            return "already ingested"
        return f"ignored columns: {', '.join(self.extra_columns)}" if self.extra_columns else ""


@dataclass
class IngestReport:
    files: list[FileOutcome] = field(default_factory=list)

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


def pending_files(landing_dir: Path) -> list[Path]:
    """Files waiting in the landing folder, oldest first (name breaks ties)."""
    if not landing_dir.is_dir():
        return []
    files = [p for p in landing_dir.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES) and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Strings stay Arrow-backed: no Python object per cell, and validation works on them in C++."""
    return table.to_pandas(types_mapper={pa.string(): ARROW_STRING, pa.large_string(): ARROW_STRING}.get)


def _split_utf8(data: bytes) -> tuple[bytes, list[tuple[int, str, str]]]:
    """Blank out the lines that are not valid UTF-8 (so line numbers stay true) and report them."""
    try:
        data.decode("utf-8")
        return data, []
    except UnicodeDecodeError:
        pass
    kept: list[bytes] = []
    bad: list[tuple[int, str, str]] = []
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        try:
            line.decode("utf-8")
            kept.append(line)
        except UnicodeDecodeError as exc:
            bad.append((number, f"line {number}: not valid UTF-8 ({exc.reason} at byte {exc.start})", line.decode("utf-8", "replace")[:4096]))
            kept.append(b"\n")
    return b"".join(kept), bad


def _parse_csv(data: bytes) -> _Parsed:
    data, bad = _split_utf8(data)
    if not data.strip():
        return _Parsed(pd.DataFrame(), bad)
    # Arrow numbers rows without the empty lines it skips; this maps its row numbers back to lines.
    lines = [number for number, line in enumerate(data.split(b"\n"), start=1) if line not in (b"", b"\r")]
    invalid: set[int] = set()

    if bad and bad[0][0] == 1:
        raise UnreadableFile(f"the header line is not valid UTF-8: {bad[0][1]}")

    def on_invalid(row: pacsv.InvalidRow) -> str:
        number = lines[row.number - 1] if row.number and row.number <= len(lines) else row.number or 0
        invalid.add(number)
        bad.append((number, f"line {number}: expected {row.expected_columns} fields, found {row.actual_columns}", (row.text or "")[:4096]))
        return "skip"

    try:
        first_line = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
        names = next(csv.reader([first_line]), [])
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(block_size=1 << 24, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(column_types={str(n): pa.string() for n in names}, strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, csv.Error) as exc:
        raise UnreadableFile(f"not parseable as CSV: {exc}") from None
    rows = [n for n in lines[1:] if n not in invalid]
    # Quoted values spanning lines break the one-row-per-line mapping: then rows are numbered 1, 2, ...
    return _Parsed(_to_pandas(table), bad, rows if len(rows) == table.num_rows else None)


def _parse_jsonl(data: bytes, text_columns: list[str]) -> _Parsed:
    """Arrow's JSON reader (C++) for clean files; line by line when it refuses one, to say which lines are bad.

    `text_columns` are read as strings: Arrow would otherwise turn date-like text into timestamps.
    """
    data, bad = _split_utf8(data)
    if not data.strip():
        return _Parsed(pd.DataFrame(), bad)
    schema = pa.schema([(name, pa.string()) for name in dict.fromkeys(text_columns)])
    try:
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(block_size=1 << 24),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        )
    except pa.ArrowException:
        return _parse_jsonl_lines(data, bad)
    return _Parsed(_to_pandas(table), bad, [number for number, line in enumerate(data.split(b"\n"), start=1) if line.strip()])


def _parse_jsonl_lines(data: bytes, bad: list[tuple[int, str, str]]) -> _Parsed:
    records: list[dict[str, object]] = []
    numbers: list[int] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((number, f"line {number}: malformed JSON ({exc.msg})", line[:4096]))
            continue
        if not isinstance(value, dict):
            bad.append((number, f"line {number}: expected a JSON object, got {type(value).__name__}", line[:4096]))
            continue
        records.append(value)
        numbers.append(number)
    return _Parsed(pd.DataFrame.from_records(records), bad, numbers)


def _parse_parquet(data: bytes) -> _Parsed:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise UnreadableFile(f"not parseable as Parquet: {exc}") from None
    return _Parsed(_to_pandas(table), [])


def _text_columns(spec: DatasetSpec) -> list[str]:
    """Columns that are text whatever they look like: ids, times, categoricals, class labels."""
    columns = [EVENT_ID, EVENT_TIME, *(c for c in (spec.id_column, spec.time_column) if c), *spec.categorical_features]
    return columns + [spec.label] if spec.is_classification else columns


def read_landing_file(path: Path, spec: DatasetSpec) -> tuple[_Parsed, str]:
    """Parse a landing file; returns the rows and the content hash."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name = path.name.lower()
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UnreadableFile(f"not a valid gzip file: {exc}") from None
        name = name[:-3]
    if name.endswith(".parquet"):
        return _parse_parquet(data), digest
    if name.endswith((".jsonl", ".ndjson")):
        return _parse_jsonl(data, _text_columns(spec)), digest
    return _parse_csv(data), digest


def _move(path: Path, folder: str) -> Path:
    target_dir = path.parent / folder
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{now_us()}-{path.name}"
    shutil.move(str(path), target)
    return target


def _is_label_file(frame: pd.DataFrame, spec: DatasetSpec) -> bool:
    ids = {EVENT_ID, spec.id_column}
    return spec.label in frame.columns and bool(ids & set(frame.columns)) and not (set(spec.features) & set(frame.columns))


def _ingest_labels(parsed: _Parsed, spec: DatasetSpec, log: EventLog, name: str, outcome: FileOutcome) -> None:
    """A file of late labels: event id + label, no features."""
    frame = parsed.frame.reset_index(drop=True)
    lines = parsed.line_numbers or list(range(1, len(frame) + 1))
    id_col = spec.id_column if spec.id_column in frame.columns else EVENT_ID
    ids = as_text(frame[id_col])
    if spec.is_classification:
        labels = normalise_category(frame[spec.label]).replace(spec.label_map)
        valid = ids.notna() & labels.isin(spec.classes or [])
    else:
        labels, bad = parse_numeric(frame[spec.label])
        valid = ids.notna() & labels.notna() & ~bad
    result = log.add_labels(ids[valid].tolist(), labels[valid].tolist())
    problems = [(i, "label: missing id or invalid label") for i in frame.index[~valid]]
    position = {event_id: i for i, event_id in zip(frame.index[valid], ids[valid])}
    problems += [(position[e], "label for an unknown event_id") for e in result.unknown]
    problems += [(position[e], "label conflicts with the label already recorded") for e in result.conflicts]
    if problems:
        rows = pd.DataFrame(
            {
                "row_number": [lines[i] for i, _ in problems],
                "reason": [reason for _, reason in problems],
                "record": [json.dumps({k: str(v) for k, v in frame.iloc[i].items()}) for i, _ in problems],
            }
        )
        outcome.quarantined += log.quarantine(rows, source=name)
    outcome.labels_applied = len(result.applied)
    outcome.duplicates = len(result.unchanged)


def ingest_file(path: Path, spec: DatasetSpec, log: EventLog, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> FileOutcome:
    """Ingest one landing file and move it out of the landing folder."""
    outcome = FileOutcome(name=path.name)
    try:
        if path.stat().st_size > max_bytes:
            raise UnreadableFile(f"file is {path.stat().st_size} bytes, over the limit of {max_bytes}")
        parsed, digest = read_landing_file(path, spec)
        if log.file_seen(digest):
            outcome.already_ingested = True
            outcome.rows = len(parsed.frame)
            outcome.duplicates = len(parsed.frame)
            _move(path, PROCESSED)
            return outcome
        frame = parsed.frame = with_clean_columns(parsed.frame)
        outcome.rows = len(frame) + len(parsed.bad_rows)
        if parsed.bad_rows:
            bad = pd.DataFrame(parsed.bad_rows, columns=["row_number", "reason", "record"])
            outcome.quarantined += log.quarantine(bad, source=path.name)
        if frame.empty:
            log.record_file(digest, path.name, outcome.rows, 0, 0, outcome.quarantined)
            _move(path, PROCESSED)
            return outcome
        if _is_label_file(frame, spec):
            _ingest_labels(parsed, spec, log, path.name, outcome)
        else:
            validated: Validated = validate_frame(
                frame, spec, generated_id_prefix=digest[:16], generated_time_start_us=now_us(), row_numbers=parsed.line_numbers
            )
            outcome.extra_columns = validated.extra_columns
            outcome.quarantined += log.quarantine(validated.quarantined, source=path.name)
            result = log.append(validated.events, source=path.name)
            outcome.ingested = result.inserted
            outcome.labels_applied = result.labels_applied
            outcome.duplicates = validated.duplicates + result.duplicates
            if not result.conflicts.empty:
                conflicts = result.conflicts.assign(
                    row_number=0,
                    reason="label conflicts with the label already recorded",
                    record=[json.dumps(r) for r in result.conflicts.astype(str).to_dict("records")],
                )
                outcome.quarantined += log.quarantine(conflicts, source=path.name)
                outcome.duplicates -= len(conflicts)
        log.record_file(digest, path.name, outcome.rows, outcome.ingested, outcome.duplicates, outcome.quarantined)
        _move(path, PROCESSED)
    except (UnreadableFile, SchemaError) as exc:
        outcome.rejected = str(exc)
        moved = _move(path, REJECTED)
        moved.with_name(moved.name + ".reason.txt").write_text(f"{exc}\n", encoding="utf-8")
    return outcome


def ingest_pending(landing_dir: Path, spec: DatasetSpec, log: EventLog, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> IngestReport:
    """Ingest every file waiting in the landing folder."""
    report = IngestReport()
    for path in pending_files(landing_dir):
        report.files.append(ingest_file(path, spec, log, max_bytes=max_bytes))
    return report
