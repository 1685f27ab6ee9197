"""Turning a raw frame (landing file or request) into valid events, quarantining what is invalid.

Vectorised on purpose: ingestion has to keep up with ≥ 200k rows/s, so the checks are column
operations on Arrow-backed strings (parsed with Arrow casts, pandas only as the fallback for the
rows Arrow refuses), each column is converted once, and a reason text is built only for the rows
that get it. An invalid row names every column that is wrong in it, the first problem found in each, so a file
is mended in one pass, not one reason per landing.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform.domain.features import ARITHMETIC_LIMIT, as_text, normalise_category
from mlplatform.domain.spec import EVENT_ID, EVENT_TIME, LABEL, DatasetSpec
from mlplatform.domain.timeformat import column_format, format_that_reads, offset_event_times, parse_event_times

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 256
SHOWN_CHARS = 40
NESTED_TYPES = (list, tuple, set, dict, np.ndarray)  # how lists, objects and Parquet lists/structs arrive in Python
NOT_VALUE_TYPES = (*NESTED_TYPES, bytes)  # bytes: a Parquet binary cell that is not UTF-8 text (see landing's `_to_pandas`)


class SchemaError(ValueError):
    """A whole frame is unusable (for example a required column is missing)."""


@dataclass
class Validated:
    """Valid events in canonical columns, plus the rows that were not, each with its reason."""

    events: pd.DataFrame
    quarantined: pd.DataFrame
    duplicates: int = 0
    extra_columns: list[str] = field(default_factory=list)
    row_numbers: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int64"))  # where each event sits in its file
    timed: bool = False  # the events' times are their own (the frame had the time column), not generated


_NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def with_clean_columns(raw: pd.DataFrame) -> pd.DataFrame:
    """`raw` with stripped column names and a fresh index; two columns of one name make the frame unusable."""
    raw = raw.reset_index(drop=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    if raw.columns.duplicated().any():
        dupes = sorted(set(raw.columns[raw.columns.duplicated()]))
        # Names such as '0' or '' are values: the rest of a file a writer began again without its header (the operator probe).
        looks_like_data = all(not name or _NUMBER_TEXT.fullmatch(name) for name in dupes)
        raise SchemaError(f"duplicated column names: {dupes}" + ("; the first line looks like a row of data, not a header: a file must begin "
                                                                 "with its header line" if looks_like_data else ""))
    return raw


def _arrow(text: pd.Series) -> pa.Array:
    return pa.array(text, type=pa.string(), from_pandas=True)


def parse_numeric(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parsed floats (missing stays NaN) and a mask of values present but not a finite number."""
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index), values.notna()
    if pd.api.types.is_numeric_dtype(values):
        parsed = values.astype("float64")
        return parsed.where(np.isfinite(parsed)), np.isinf(parsed)
    text = as_text(values)
    try:
        parsed = pd.Series(pc.cast(_arrow(text), pa.float64()).to_numpy(zero_copy_only=False), index=values.index)
    except pa.ArrowInvalid:  # some text is no number: each value alone, correctly rounded as Arrow's cast is
        parsed = pd.Series([_number_or_nan(v) for v in text.astype(object)], index=values.index, dtype="float64")
    bad = text.notna() & ~np.isfinite(parsed)
    return parsed.where(~bad), bad


def _number_or_nan(value: object) -> float:
    """The float a text spells, NaN if none. Not pandas' parser: it can be one ulp off (`94.75175710398139` read as
    `94.7517571039814`), so one value read in a batch with a bad cell and in one without differed, and the same event
    landed from two files was refused as an event with other values."""
    if not isinstance(value, str) or "_" in value:  # float() reads 1_000; Arrow's cast, the other path, does not
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def generated_keys(n: int, prefix: str, start_us: int, step_us: int = 1, first_row: int = 0) -> tuple[list[str], np.ndarray]:
    """Event ids `<prefix>-<row>` and times `start_us + row × step_us` for rows that carry none (rows counted from `first_row`).

    The one rule for replay (prefix: dataset name, start 2026-01-01, a minute apart) and landing (prefix:
    the file's content hash, start: ingestion time, a microsecond apart, so file order is kept): the same
    input always gets the same ids, so sending it twice yields duplicates, not new events.
    """
    return [f"{prefix}-{i}" for i in range(first_row, first_row + n)], start_us + np.arange(n, dtype="int64") * step_us


class RepeatedKey(ValueError):
    """A JSON object naming one key twice: `json.loads` keeps the last value silently, and which one is meant is unknown."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicated key {key[:64]!r}")
        self.key = key


def one_value_per_key(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """`object_pairs_hook` of every JSON reader of outside input (a request body, a JSON Lines row): RepeatedKey on a key
    given twice."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RepeatedKey(key)
            seen.add(key)
    return obj


def value_problem(value: object) -> str | None:
    """Why `value` is not a feature value, if it is nested (a list, an object, a struct) or bytes that are not text.

    One rule for every surface: a landing file quarantines such a row, a request should refuse it, and
    neither may store its text form ("{'a': 1}", "b'\\xff'") as if it were a category.
    """
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
            detail = ""
        except UnicodeDecodeError as exc:
            detail = f" that is not UTF-8 text ({exc.reason} at byte {exc.start})"
        return f"binary data{detail}: expected a string, a number or null"
    if not isinstance(value, NESTED_TYPES):
        return None
    kind = "object" if isinstance(value, dict) else "list"
    return f"a nested value ({kind}) is not allowed: expected a string, a number or null"


def unusable_cells(values: pd.Series) -> pd.Series:
    """Mask of the cells `value_problem` refuses; only object columns can hold them (Arrow strings and numbers never do)."""
    if values.dtype != object:
        return pd.Series(False, index=values.index)
    return values.map(lambda v: isinstance(v, NOT_VALUE_TYPES)).astype(bool)


# PostgreSQL's text holds no NUL (SQLite's is cut at it when read by most tools): one in an id or a category failed the
# whole batch's insert on PostgreSQL, and with it the landing file or the request. Every surface refuses it instead.
NUL = "\x00"
NUL_PROBLEM = "contains a NUL character (U+0000), which the event log cannot store"


def has_nul(text: pd.Series) -> pd.Series:
    """Mask of the text cells holding a NUL (missing cells: False)."""
    return text.str.contains(NUL, regex=False).fillna(False).astype(bool)


@dataclass(frozen=True)
class FutureBound:
    """Event times after `latest_us` are refused: more than `seconds` after the clock of the run reading them. Served
    events are timed by the server's clock; one landed with a time years ahead (a producer's clock, a time zone, a wrong
    time_format) was taken, then sat at the end of every hold-out and made serving's history features read labels from
    the future."""

    latest_us: int
    seconds: float

    @property
    def problem(self) -> str:
        """The same words for every row and batch: the bound itself moves with the clock, so it is not in them."""
        return f"in the future: more than {self.seconds:g} s after the landing run's clock (a producer's clock or time zone, or the time_format?)"


MAX_INTEGER_ID = 2**53 - 1  # the integers every JSON parser reads exactly (IEEE doubles)
ID_NUMBER_PROBLEM = f"a number that is no integer within ±{MAX_INTEGER_ID}: an id is text or such an integer, as /predict takes it"


def not_an_id_number(values: pd.Series) -> pd.Series:
    """Mask of the id cells that are numbers but no integer within ±MAX_INTEGER_ID (1.5, inf, 1e300, 2**60) or
    true/false, from a JSON Lines or Parquet file: landing kept 1.5 as the id "1.5" where /predict refuses it, so one
    event had an id on one surface only."""
    if pd.api.types.is_bool_dtype(values):
        return values.notna().astype(bool)
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            exact = (np.abs(numbers) <= MAX_INTEGER_ID) & (numbers % 1 == 0)
        return pd.Series(~np.isnan(numbers) & ~exact, index=values.index)
    if pd.api.types.is_integer_dtype(values):
        return values.abs().gt(MAX_INTEGER_ID).fillna(False).astype(bool)
    if values.dtype == object:
        return values.map(_not_an_id_number).astype(bool)
    return pd.Series(False, index=values.index)


def _not_an_id_number(value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, (int, np.integer)):
        return abs(int(value)) > MAX_INTEGER_ID
    return isinstance(value, (float, np.floating)) and not (abs(value) <= MAX_INTEGER_ID and float(value).is_integer())


# A value inside a reason: a quoted text (as Python or JSON writes it) or a number standing alone (a line's, a byte's);
# digits inside a word (a column named x1) are part of it.
REASON_VALUE = re.compile(r"""'(?:[^'\\]|\\.)*'…?|"(?:[^"\\]|\\.)*"…?|(?<![\w.-])[-+]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])""")
VALUE_LEFT_OUT = "…"
LINE_PREFIX = re.compile(r"line \d+$")  # the parser's "line 307: ..." (a column's reason starts with the column's name)


def reason_kind(reason: str) -> str:
    """What a quarantine reason says with its values left out: rows refused for one problem with other values (a
    column's 5,000 non-numbers, or lines each naming their number) are one group where reasons are counted, not a line
    each (the own-dataset probe: 400 bad amounts made a 400-line summary). The column a reason starts with is kept as
    it is, a column named 2019 included."""
    column, sep, detail = reason.partition(": ")
    if sep and not LINE_PREFIX.match(column):
        return f"{column}{sep}{REASON_VALUE.sub(VALUE_LEFT_OUT, detail)}"
    return REASON_VALUE.sub(VALUE_LEFT_OUT, reason)


def shown(value: object) -> str:
    """A refused value as a reason quotes it: its first SHOWN_CHARS characters, and '…' after them when it is longer (the
    serving probe: 400 nines read as a 40-digit number, finite, said not to be)."""
    text = str(value)
    return f"{text[:SHOWN_CHARS]!r}…" if len(text) > SHOWN_CHARS else repr(text)


def not_a_number(value: object) -> str:
    """Why a value is refused where a number belongs: the one wording of landing, label files and serving."""
    return f"{shown(value)} is not a finite number"


CSV_SEPARATORS = (",", ";", "\t", "|")  # the first is the default: a header these split no better is read with ','


def csv_separator(header: str, columns: Collection[str] | None = None) -> str:
    """The one of CSV_SEPARATORS that splits the header line into the most of `columns` (None: the most fields; ','
    on a tie): exports from European locales use ';', others a tab or '|', and the header is where a file says which."""
    def score(sep: str) -> int:
        fields = [name.strip() for name in next(csv.reader([header], delimiter=sep), [])]
        return len(fields) if columns is None else len(set(columns).intersection(fields))

    return max(CSV_SEPARATORS, key=score)


def parse_label_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Regression labels as numbers (NA where bad), and where they are bad: not a finite number, or beyond
    ±ARITHMETIC_LIMIT, whose square no metric can hold (one such label made every RMSE inf, and no version comparable)."""
    parsed, bad = parse_numeric(values)
    bad = bad | (parsed.abs() > ARITHMETIC_LIMIT).fillna(False).astype(bool)
    return parsed.where(~bad), bad


def not_a_label_number(value: object) -> str:
    """Why a value is refused as a regression label: the one wording of landing, label files and serving."""
    return f"{shown(value)} is not a finite number within ±{ARITHMETIC_LIMIT:g}"


def label_conflict(recorded: object, given: object) -> str:
    """Why a label is not applied to an event that has another: both values, as a changed feature is quarantined (each
    as Python writes it: a numpy number read 'np.float64(37.31)')."""
    recorded, given = (v.item() if isinstance(v, np.generic) else v for v in (recorded, given))
    return f"label: {recorded!r} recorded, {given!r} here; a label is never overwritten"


def not_a_class(value: object, classes: Sequence[str] | None) -> str:
    """Why a value is refused as a label of a classification spec: the one wording of landing, label files and serving."""
    return f"{shown(value)} is not one of {list(classes or [])}"


def _cell_text(value: object) -> str | None:
    """A cell as a quarantined record shows it; nested values are shown, not tested for missing (that is ambiguous)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, NOT_VALUE_TYPES):
        return str(value)
    return None if pd.isna(value) else str(value)


def _record_json(frame: pd.DataFrame, rows: pd.Index) -> list[str]:
    sub = frame.loc[rows]
    return [json.dumps({k: _cell_text(v) for k, v in rec.items()}, ensure_ascii=False)[:4096] for rec in sub.to_dict("records")]


# Two numbers that agree to 15 significant digits are one value: Excel and `%.15g` exports write that many, and a
# labelled re-export of landed events was quarantined whole as "other values" one digit in the 16th apart (the probe).
SAME_NUMBER_RTOL = 5e-15  # %.15g rounds by at most half a unit of the 15th digit: 5e-15 of the value


def same_numbers(given: pd.Series, kept: pd.Series) -> np.ndarray:
    """Where two columns of numbers hold one value each row (`SAME_NUMBER_RTOL`); False where either is missing or no number."""
    return np.isclose(pd.to_numeric(given, errors="coerce"), pd.to_numeric(kept, errors="coerce"), rtol=SAME_NUMBER_RTOL, atol=0.0)


def same_values(given: pd.Series, kept: pd.Series, numeric: bool) -> np.ndarray:
    """Where two columns hold one value each row: equal, missing on both sides, or (`numeric`) `same_numbers`; the one
    rule a known id's features and labels, and an id's repeats in one file, are compared by."""
    given, kept = given.reset_index(drop=True).astype(object), kept.reset_index(drop=True).astype(object)
    same = (given.isna() & kept.isna()) | (given == kept).fillna(False).astype(bool)
    return (same | same_numbers(given, kept) if numeric else same).to_numpy(dtype=bool)


def same_number(given: object, kept: object) -> bool:
    """`same_numbers` of two values; False for a value that is no number."""
    try:
        return math.isclose(float(given), float(kept), rel_tol=SAME_NUMBER_RTOL)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _fold_repeats(kept: pd.DataFrame, repeats: pd.DataFrame, content_cols: list[str], numeric: list[str],
                  spec_is_classification: bool) -> tuple[pd.DataFrame, int, list[tuple[object, str]]]:
    """An id repeated in one file, folded into its first row: the same event again is a duplicate, and one that brings the
    label its first row lacked (an export that lists an event, then again once labelled) labels it, as a label file
    would; other values, or another label, are a conflict. Returns the kept rows, the duplicates and (row, reason) per
    conflict. Column operations only: a file that lists every event twice folds in about the time it is read."""
    firsts = kept.set_index(EVENT_ID).reindex(repeats[EVENT_ID])  # each repeat's first row (kept holds one row per id)
    identical = np.ones(len(repeats), dtype=bool)
    for column in [c for c in content_cols if c != EVENT_ID]:
        identical &= same_values(repeats[column], firsts[column], column in numeric)
    conflicts: list[tuple[object, str]] = [(row, "event_id: repeated in the same file with different values") for row in repeats.index[~identical]]
    same = repeats[identical]
    labelled = same[same[LABEL].notna()]
    if len(labelled):
        first_label = labelled.drop_duplicates(EVENT_ID).set_index(EVENT_ID)[LABEL]
        kept = kept.assign(**{LABEL: kept[LABEL].fillna(kept[EVENT_ID].map(first_label))})
        final = kept.set_index(EVENT_ID)[LABEL]
        recorded = labelled[EVENT_ID].map(final)
        other = ~same_values(recorded, labelled[LABEL], not spec_is_classification)  # recorded: the first labelled repeat's label at least
        conflicts += [(row, label_conflict(r, g)) for row, r, g in zip(labelled.index[other], recorded[other], labelled[LABEL][other])]
        return kept, len(same) - int(other.sum()), sorted(conflicts, key=lambda c: c[0])  # type: ignore[arg-type, return-value]
    return kept, len(same), conflicts


def check_columns(columns: list[str], spec: DatasetSpec) -> str | None:
    """The time column these columns give (the spec's, else `event_time`, else None); SchemaError if a required feature
    column is missing, or the time_offset column beside the spec's time column: the rule for a frame of events and a bare
    header."""
    missing = [c for c in spec.required_features if c not in columns]
    if missing:
        # No feature at all: most likely a label file whose id or label column is spelt otherwise (a new user's
        # `ReadingID,status` was refused as a file missing every feature, with no word of labels).
        identity = spec.id_column or EVENT_ID
        label_file = (f"; with none of the features, it is no events file, and it is no label file either: that needs the id column "
                      f"{identity!r} and the label column {spec.label!r}, spelt so (its columns: {columns[:10]})"
                      if not any(c in columns for c in spec.features) else "")
        present = [c for c in spec.features if c in columns]
        if not label_file and identity in columns and spec.label in columns and len(present) < len(missing):
            # The id, the label and a few features (a label export carrying the entity key of history features) was
            # refused with the missing features alone, and no word of what makes a label file (the new-user probe).
            label_file = (f"; if it is a label file, it holds the id column {identity!r} and the label column {spec.label!r} and no "
                          f"feature: leave out {present[:10]}")
        raise SchemaError(f"missing required feature columns: {missing}{label_file}")
    time_col = spec.time_column if spec.time_column in columns else (EVENT_TIME if EVENT_TIME in columns else None)
    if spec.time_offset is not None and time_col is not None and time_col == spec.time_column and spec.time_offset.column not in columns:
        raise SchemaError(f"missing time_offset column {spec.time_offset.column!r} (the spec adds it to time_column {spec.time_column!r})")
    return time_col


def validate_frame(
    raw: pd.DataFrame,
    spec: DatasetSpec,
    *,
    generated_id_prefix: str,
    generated_time_start_us: int,
    row_numbers: Sequence[int] | None = None,
    first_row: int = 0,
    future: FutureBound | None = None,
) -> Validated:
    """Check every row of `raw` against `spec`.

    Missing required feature columns reject the frame (SchemaError), optional ones are missing values; everything else
    is per row. Rows without
    an id or time get generated ones that are stable for the same input, so the same file dropped
    twice produces the same event ids. `row_numbers` (default: 1, 2, ...) is where each row sits in
    its file; quarantined rows carry it. `first_row` is how many rows of the same file came before `raw`
    (a file validated batch by batch), so generated ids stay those of the whole file. `future`: a row timed after its
    bound is refused as in the future (None: any time is taken).
    """
    raw = with_clean_columns(raw)
    time_col = check_columns(list(raw.columns), spec)
    left_out = [c for c in spec.optional if c not in raw.columns]
    if left_out:  # an optional feature the file does not have: missing on each of its rows
        raw = raw.assign(**{c: pd.Series(None, index=raw.index, dtype=object) for c in left_out})
    id_col = spec.id_column if spec.id_column in raw.columns else (EVENT_ID if EVENT_ID in raw.columns else None)
    offset = spec.time_offset if time_col is not None and time_col == spec.time_column else None
    known = {*spec.features, spec.label, *spec.drop, EVENT_ID, EVENT_TIME, *spec.key_columns}
    extra = [c for c in raw.columns if c not in known]

    n = len(raw)
    numbers = np.arange(1, n + 1, dtype="int64") if row_numbers is None else np.asarray(row_numbers, dtype="int64")
    reason = pd.Series(pd.NA, index=raw.index, dtype=object)
    invalid = np.zeros(n, dtype=bool)  # rows that have a reason: kept beside `reason`, so no flag scans its objects
    flagged: dict[str, np.ndarray] = {}  # per column: its rows that have a reason for it (a value found unusable is not also "missing")

    def flag(mask: pd.Series, prefix: str, detail: str | Callable[[pd.Series], pd.Series]) -> None:
        """Give `mask` rows without a reason for column `prefix` this one, after any other column's; `detail` is built
        for those rows only."""
        column = flagged.setdefault(prefix, np.zeros(n, dtype=bool))
        new = mask.to_numpy(dtype=bool, na_value=False) & ~column
        if new.any():
            rows = raw.index[new]
            text = pd.Series(f"{prefix}: {detail}" if isinstance(detail, str) else (f"{prefix}: " + detail(rows)).to_numpy(), index=rows, dtype=object)
            earlier = invalid[new]
            reason[rows] = text.where(~earlier, reason[rows].astype(str) + "; " + text).to_numpy() if earlier.any() else text.to_numpy()
            invalid[new] = column[new] = True

    cells: dict[str, pd.Series] = {}
    for name in dict.fromkeys(c for c in (id_col, time_col, offset and offset.column, spec.label, *spec.features) if c is not None and c in raw.columns):
        nested = unusable_cells(raw[name])
        flag(nested, name, lambda rows, col=raw[name]: col[rows].map(value_problem))
        cells[name] = raw[name].mask(nested) if nested.any() else raw[name]

    out: dict[str, pd.Series] = {}
    if id_col is None or time_col is None:
        generated_ids, generated_times = generated_keys(n, generated_id_prefix, generated_time_start_us, first_row=first_row)
    if id_col is not None:
        ids = normalise_category(cells[id_col])  # an integer id column with a null reads as floats: 1.0 is id "1", as served
        flag(ids.isna(), id_col, "missing")
        flag(has_nul(ids), id_col, NUL_PROBLEM)
        flag(not_an_id_number(cells[id_col]), id_col, ID_NUMBER_PROBLEM)
        flag(ids.str.len().gt(MAX_ID_LENGTH), id_col, f"longer than {MAX_ID_LENGTH} characters")
        out[EVENT_ID] = ids
    else:
        out[EVENT_ID] = pd.Series(generated_ids, index=raw.index, dtype=pd.StringDtype("pyarrow"))

    if time_col is not None:
        # The spec's time column is read in its declared format; the platform's own event_time column in its fixed one.
        declared = time_col == spec.time_column
        time_format = spec.event_time_format if declared else column_format(cells[time_col])
        times = parse_event_times(cells[time_col], time_format)
        unread = times.isna()
        other = format_that_reads(cells[time_col][unread], time_format) if declared and unread.any() else None
        flag(unread, time_col, (f"missing, not a timestamp or out of range in time_format {time_format!r}" if declared else "missing, not a timestamp or out of range")
             + (f" (they read as time_format {other!r}: is that how the column is written?)" if other else ""))
        if offset is not None:
            times = offset_event_times(times, cells[offset.column], offset.unit)
            flag(times.isna() & ~unread, offset.column, f"missing or not a number of {offset.unit} (the spec's time_offset), or the time it makes is out of range")
        if future is not None:
            flag(times.gt(future.latest_us).fillna(False), time_col, future.problem)
        out[EVENT_TIME] = times.fillna(0).astype("int64")
    else:
        out[EVENT_TIME] = pd.Series(generated_times, index=raw.index)

    if spec.label not in raw.columns:
        out[LABEL] = pd.Series(pd.NA, index=raw.index, dtype=pd.StringDtype("pyarrow")) if spec.is_classification else pd.Series(np.nan, index=raw.index)
    elif spec.is_classification:
        labels = normalise_category(cells[spec.label]).replace(spec.label_map)
        unknown = labels.notna() & ~labels.isin(spec.classes or [])
        flag(unknown, "label", lambda rows: labels[rows].map(lambda value: not_a_class(value, spec.classes)))
        out[LABEL] = labels.where(~unknown)
    else:
        parsed_label, bad = parse_label_numbers(cells[spec.label])
        flag(bad, "label", lambda rows: cells[spec.label][rows].map(not_a_label_number))
        out[LABEL] = parsed_label

    for name in spec.features:
        col = cells[name]
        if name in spec.numeric_features:
            parsed, bad = parse_numeric(col)
            flag(bad, name, lambda rows: col[rows].map(not_a_number))
            out[name] = parsed
        else:
            text = normalise_category(col)
            flag(text.str.len().gt(MAX_TEXT_LENGTH), name, f"longer than {MAX_TEXT_LENGTH} characters")
            flag(has_nul(text), name, NUL_PROBLEM)
            out[name] = text

    events = pd.DataFrame(out)
    quarantined = pd.DataFrame(
        {
            "row_number": numbers[invalid],
            "reason": reason[invalid].astype(str).to_numpy(),
            "record": _record_json(raw, raw.index[invalid]),
        }
    )
    valid = events[~invalid]
    first = ~valid[EVENT_ID].duplicated(keep="first").to_numpy()
    kept = valid[first]
    repeats = valid[~first]
    duplicates = 0
    if len(repeats):
        kept, duplicates, conflicts = _fold_repeats(kept, repeats, [c for c in valid.columns if c != LABEL and (c != EVENT_TIME or time_col is not None)],
                                                    spec.numeric_features, spec.is_classification)
        if conflicts:
            rows = pd.Index([row for row, _ in conflicts])
            quarantined = pd.concat([quarantined, pd.DataFrame({"row_number": numbers[rows], "reason": [why for _, why in conflicts],
                                                                "record": _record_json(raw, rows)})], ignore_index=True)
    return Validated(events=kept.reset_index(drop=True), quarantined=quarantined, duplicates=duplicates, extra_columns=extra, timed=time_col is not None,
                     row_numbers=numbers[kept.index.to_numpy()])
