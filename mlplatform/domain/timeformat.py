"""Event times: the one parser of a time column, for replay, landing validation and serving.

A dataset spec says how its time column is written (`time_format`); guessing is what read an integer
year 2015 as nanoseconds in one place and as seconds in another. Every parsed time is microseconds
since 1970-01-01 UTC (the event log's unit); naive times are UTC. Values that do not fit the format
are NA, and the caller says why (quarantine reason, replay error) naming the format.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform.domain.features import as_text

ISO = "iso"
EPOCH_UNITS_PER_SECOND = {"epoch_s": 1, "epoch_ms": 1_000, "epoch_us": 1_000_000, "epoch_ns": 1_000_000_000}
YEAR = "year"
TIME_FORMATS = (ISO, *EPOCH_UNITS_PER_SECOND, YEAR)
MAX_EPOCH_SECONDS = 1e11  # about year 5000 either side of 1970; beyond, the arithmetic overflows
OFFSET_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3_600, "days": 86_400}  # a spec's time_offset.unit
_UTC_US = pa.timestamp("us", tz="UTC")
# An ISO time of day that ends in an offset (Z, +02, +0200, +02:00). pandas reads a column of ISO text with one offset
# rule for all: a value without an offset after one with it took that offset (10:00 read as 08:00 UTC after a +02:00).
_ENDS_IN_OFFSET = r"[Tt ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$"


def check_time_format(time_format: str) -> str:
    """`time_format` if it is a named format or a strftime pattern that can be read back; else ValueError saying which are allowed."""
    if time_format in TIME_FORMATS:
        return time_format
    if "%" not in time_format:
        raise ValueError(f"{time_format!r} is not one of {list(TIME_FORMATS)} nor a strftime pattern such as '%d/%m/%Y %H:%M'")
    sample = datetime(2001, 2, 3, 4, 5, 6)
    try:
        datetime.strptime(sample.strftime(time_format), time_format)
    except ValueError as exc:
        raise ValueError(f"{time_format!r} is not a usable strftime pattern ({exc})") from None
    return time_format


def column_format(values: pd.Series) -> str:
    """The format of the platform's own `event_time` column: ISO 8601 text, or seconds since 1970 when it holds numbers."""
    return "epoch_s" if _is_number_column(values) else ISO


def _is_number_column(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _numbers(values: pd.Series) -> pd.Series:
    """Floats (NaN where missing or not a number), from number columns or numeric text."""
    if _is_number_column(values):
        return values.astype("float64")
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index)
    return pd.to_numeric(as_text(values), errors="coerce").astype("float64")


def _micros(parsed: pd.Series) -> pd.Series:
    """Timestamps (NaT where invalid) as Int64 microseconds since 1970."""
    micros = parsed.to_numpy(dtype="datetime64[us]", na_value=np.datetime64("NaT")).astype("int64")
    return pd.Series(micros, index=parsed.index).astype("Int64").where(parsed.notna().to_numpy())


def _from_text(values: pd.Series, time_format: str) -> pd.Series:
    text = as_text(values)
    if time_format == ISO:
        try:
            micros = pc.cast(pc.cast(pa.array(text, type=pa.string(), from_pandas=True), _UTC_US), pa.int64())
            return pd.Series(micros.to_numpy(zero_copy_only=False), index=values.index).astype("Int64")
        except pa.ArrowInvalid:
            with_offset = text.str.contains(_ENDS_IN_OFFSET, na=False)
            groups = [text[mask].astype(object) for mask in (with_offset, ~with_offset) if mask.any()]
            parsed = pd.concat([pd.to_datetime(group, utc=True, errors="coerce", format="ISO8601") for group in groups])
            return _micros(parsed.reindex(values.index))
    return _micros(pd.to_datetime(text.astype(object), utc=True, errors="coerce", format=time_format))


PLAUSIBLE_US = (pd.Timestamp("1990-01-01", tz="UTC").value // 1000, pd.Timestamp("2100-01-01", tz="UTC").value // 1000)
FORMAT_SAMPLE = 1000  # refused values another format is tried on: a batch refused whole is not parsed five times more


def format_that_reads(refused: pd.Series, time_format: str) -> str | None:
    """The other time format that reads nine in ten of `refused` (values `time_format` did not read; the first
    FORMAT_SAMPLE of them) as times between 1990 and 2100, if one does: epoch milliseconds under epoch_s were
    quarantined with no word of the unit (the new-user probe)."""
    values = refused.dropna().head(FORMAT_SAMPLE)
    if values.empty:
        return None
    for other in TIME_FORMATS:
        if other != time_format:
            read = parse_event_times(values, other)
            if read.between(*PLAUSIBLE_US).fillna(False).mean() >= 0.9:
                return other
    return None


def parse_event_times(values: pd.Series, time_format: str = ISO) -> pd.Series:
    """Int64 microseconds since 1970 UTC for each value, NA where missing or not written in `time_format`.

    `iso`: ISO 8601 text (a date, a date-time, with or without offset; "2015" is 2015-01-01); numbers are refused.
    `epoch_s|ms|us|ns`: numbers (or numeric text) of that unit since 1970. `year`: a whole year, read as 1 January.
    Any other value is a strftime pattern (e.g. `%d/%m/%Y`). A column that already holds timestamps is taken as it is.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        return _micros(pd.to_datetime(values, utc=True))
    if time_format in EPOCH_UNITS_PER_SECOND:
        per_second = EPOCH_UNITS_PER_SECOND[time_format]
        numbers = _numbers(values)
        fits = np.isfinite(numbers) & (numbers.abs() < MAX_EPOCH_SECONDS * per_second)
        micros = (numbers.where(fits, 0.0) * (1_000_000 / per_second)).round().astype("int64")
        return micros.astype("Int64").where(fits)
    if time_format == YEAR:
        numbers = _numbers(values)
        fits = (numbers % 1 == 0) & numbers.between(1, 9999)
        years = numbers.where(fits, 1970).astype("int64").to_numpy() - 1970
        micros = years.astype("datetime64[Y]").astype("datetime64[us]").astype("int64")
        return pd.Series(micros, index=values.index).astype("Int64").where(fits)
    if (_is_number_column(values) and time_format == ISO) or pd.api.types.is_bool_dtype(values):
        return pd.Series(pd.NA, index=values.index, dtype="Int64")
    parsed = _from_text(values, time_format)
    if time_format == ISO and pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        # A JSON number among texts (a JSON Lines file, a batch of records) is refused as a column of numbers is: 2015
        # read as text would be 2015-01-01 in one file and refused in the next.
        parsed = parsed.mask(values.map(lambda v: isinstance(v, (bool, int, float, np.number, np.bool_))).to_numpy(dtype=bool))
    return parsed


def offset_event_times(micros: pd.Series, offsets: pd.Series, unit: str) -> pd.Series:
    """`micros` moved by `offsets`, numbers of `unit` (a date column plus an hour column is an hourly clock): NA where
    the time is NA, or the offset is missing, not a finite number, or moves the time out of range."""
    numbers = _numbers(offsets)
    shift = numbers * OFFSET_UNIT_SECONDS[unit]
    fits = np.isfinite(shift) & (shift.abs() < MAX_EPOCH_SECONDS) & micros.notna().to_numpy()
    moved = micros.fillna(0).astype("int64") + (shift.where(fits, 0.0) * 1_000_000).round().astype("int64")
    fits &= moved.abs() < MAX_EPOCH_SECONDS * 1_000_000
    return moved.astype("Int64").where(fits)


def iso_text(micros: np.ndarray) -> list[str]:
    """Microseconds since 1970 as ISO 8601 UTC text (what replay writes; `parse_event_times` reads it back exactly)."""
    return list(np.datetime_as_string(np.asarray(micros, dtype="int64").astype("datetime64[us]"), timezone="UTC"))


def iso_time(micros: int) -> str:
    """One event time as pandas' ISO 8601 UTC text (`2026-01-01T00:00:00+00:00`): how windows are named in MLflow."""
    return pd.Timestamp(int(micros), unit="us", tz="UTC").isoformat()


def naive_utc(micros: int) -> datetime:
    """One event time as a naive UTC datetime: how Evidently's local storage compares snapshot timestamps."""
    return datetime.fromtimestamp(micros / 1e6, tz=timezone.utc).replace(tzinfo=None)
