"""A first dataset spec for a new model, drafted from a sample of its events (what `dg scaffold defs` writes).

The draft is a starting point a person reviews: types are guessed from the sample's values, the label is the
column named (or the last one), the id and time columns by their names, and what needs a look (a time format two
patterns read, a column whose name cannot be a feature's, a column whose every value differs) is written as a comment
at its top. A column the spec would refuse as a feature (its name, a twin by case or by spaces) is left out, saying why, so the
draft loads; a sample with no column left to be a feature is refused.
"""

from __future__ import annotations

import gzip
import re
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mlplatform.domain.spec import feature_name_problem, twin_key, twin_problem
from mlplatform.domain.threshold import BEST_F1
from mlplatform.domain.timeformat import ISO, parse_event_times
from mlplatform.domain.validation import csv_separator

SAMPLE_ROWS = 5000
LABEL_CHUNK_ROWS = 500_000  # the label column is read over the whole file in chunks this size
MAX_DISTINCT_LABELS = 1000  # more distinct labels than this: no classification, the reading stops
MAX_CLASSES = 20
RARE_POSITIVE_SHARE = 0.1  # a positive class rarer than this in the sample is drafted with decision_threshold best_f1
UNREAD_TIMES_MAX = 0.05  # values of the time column no format reads, up to which the best format is drafted and they are named
ID_NAMES = re.compile(r"^(id|.*_id|event_id|uuid)$", re.IGNORECASE)
TIME_NAMES = re.compile(r"^(time|timestamp|date|datetime|ts|dteday|epoch|created|updated|modified|occurred)$|^(timestamp|datetime|ts|epoch)_"
                        r"|_(time|at|date|ts|ms|timestamp|datetime|epoch)$", re.IGNORECASE)
LAST_CHANGE_NAMES = re.compile(r"updated|modified", re.IGNORECASE)
HOUR_NAMES = re.compile(r"^(hr|hour|hour_of_day)$", re.IGNORECASE)
# Patterns a sample's time column is tried in when ISO 8601 does not read it; the first that reads every value wins
# (day first before month first: a sample whose days are all 12 or less reads both ways, and the draft says so).
# A 12-hour clock (`12/06/2026 04:54 AM`, a US export's) was drafted a categorical feature (the new-user probe).
STRFTIME_GUESSES = ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%Y%m%d", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M",
                    "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%Y/%m/%d %H:%M:%S",
                    "%m/%d/%Y %I:%M %p", "%d/%m/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p", "%d/%m/%Y %I:%M:%S %p")
LEADING_ZERO = r"[+-]?0\d+"  # `02134`; not `0`, `0.5` or `-0.25`
EPOCH_FLOORS = (("epoch_ns", 1e17), ("epoch_us", 1e14), ("epoch_ms", 1e11), ("epoch_s", 1e8))  # a median this large: since 1973 in that unit
DAY_US = 86_400_000_000

TEMPLATE = """\
# Dataset spec of model {name}: fill in the label, the task and the feature columns of your event files,
# then `dg check defs`. Every key is described in the README ("Bring your own dataset").
name: {name}
task: binary            # binary | multiclass | regression
label: label            # the column that holds the label
classes: ["no", "yes"]  # classification only; positive_class defaults to the second
positive_class: "yes"
# id_column: event_id   # unique per event; generated from the file and row when absent
# time_column: time     # the event's time; the ingestion time when absent
features:
  feature_a: numeric
  feature_b: categorical
"""


def _read_sample(path: Path) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """The sample's rows, and the columns of a CSV whose digits have leading zeros (`02134`) as the text landing reads:
    read as numbers, a zip code was drafted as a numeric feature, 2134.0, and class `01` as `1`, which no label matched."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path).head(SAMPLE_ROWS), {}
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        # pandas reads "02134" in JSON as the number 2134 unless told not to: the texts are what landing stores.
        texts = pd.read_json(path, lines=True, nrows=SAMPLE_ROWS, dtype=False)
        cells = {str(c): texts[c].dropna() for c in texts.columns if texts[c].dtype == object}
        padded = {c: v for c, v in cells.items() if v.map(lambda value: isinstance(value, str)).all() and v.str.strip().str.fullmatch(LEADING_ZERO).any()}
        return pd.read_json(path, lines=True, nrows=SAMPLE_ROWS), padded
    with gzip.open(path, "rt", encoding="utf-8") if name.endswith(".gz") else path.open(encoding="utf-8") as text:
        header = text.readline().rstrip("\r\n")
    read = partial(pd.read_csv, path, nrows=SAMPLE_ROWS, skipinitialspace=True, sep=csv_separator(header))  # as landing reads it
    texts = read(dtype=str)
    cells = {str(c): texts[c].dropna().str.strip() for c in texts.columns}
    return read(), {c: v for c, v in cells.items() if v.str.fullmatch(LEADING_ZERO).any()}


def _label_values(path: Path, label: str) -> tuple[pd.Series, dict[str, str]]:
    """The label's distinct values over the whole file, read in chunks and spelt as landing reads them (text; numbers
    without a trailing .0, so a chunk with a gap, read as floats, gives 1, not 1.0), at most MAX_DISTINCT_LABELS + 1:
    from the sample alone, an export in time order whose rare class first came after its 5000th row was drafted without
    it, and landing then quarantined every row of it. Numbers come back as numbers, unless one is spelt with a leading zero,
    with the texts landing would not take as their class (a CSV's `1.0` is not class `1`) mapped to it: drafted without
    the map, every labelled row of a pandas export of a 0/1 label with gaps was quarantined."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        chunks = (batch.column(0).to_pandas() for batch in pq.ParquetFile(path).iter_batches(batch_size=LABEL_CHUNK_ROWS, columns=[label]))
    elif name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):  # every field of a record is parsed: smaller chunks
        chunks = (part[label] for part in pd.read_json(path, lines=True, dtype=False, chunksize=LABEL_CHUNK_ROWS // 10) if label in part)
    else:
        with gzip.open(path, "rt", encoding="utf-8") if name.endswith(".gz") else path.open(encoding="utf-8") as text:
            header = text.readline().rstrip("\r\n")
        chunks = (part[label] for part in pd.read_csv(path, usecols=[label], skipinitialspace=True, sep=csv_separator(header), dtype=str,
                                                      chunksize=LABEL_CHUNK_ROWS))
    distinct: set[str] = set()
    for chunk in chunks:
        distinct |= {_spelt(v) for v in chunk.dropna().unique()} - {""}
        if len(distinct) > MAX_DISTINCT_LABELS:
            break
    values = pd.Series(sorted(distinct), dtype=object)
    numbers = pd.to_numeric(values, errors="coerce")
    # Beyond 2**53 a float is no longer the integer written: such labels stay text, as landing keeps them.
    if len(values) and numbers.notna().all() and numbers.abs().lt(2**53).all() and not values.str.fullmatch(LEADING_ZERO).any():
        return numbers.drop_duplicates(), {text: _spelt(number) for text, number in zip(values, numbers) if _spelt(number) != text}
    return values, {}


def _spelt(value: object) -> str:
    """One label as text: 1.0 as 1, as landing spells a class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _classes(values: pd.Series) -> list[str]:
    """Class names as landing spells them (`_spelt`)."""
    return sorted({_spelt(v) for v in values.dropna()})


def _task(values: pd.Series) -> str:
    """Two values: binary; text, or a few whole numbers: multiclass; other numbers: regression (text labels were drafted
    as a regression once there were more than MAX_CLASSES of them, which no landed label could then be)."""
    distinct = values.dropna().nunique()
    if distinct == 2:
        return "binary"
    if not pd.api.types.is_numeric_dtype(values):
        return "multiclass"
    return "multiclass" if distinct <= MAX_CLASSES and (values.dropna() % 1 == 0).all() else "regression"


def _time_format(values: pd.Series) -> tuple[str | None, str]:
    """The time_format that reads every value of the sample (None: `iso`, the default, or nothing found), and a sentence
    for the draft's header when the guess needs a look."""
    values = values.dropna()
    if values.empty:
        return None, ""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        whole = bool((values % 1 == 0).all())
        if whole and values.between(1000, 9999).all():
            return "year", ""
        if whole and values.between(19_000_101, 21_001_231).all() and parse_event_times(values.astype("int64").astype(str), "%Y%m%d").notna().all():
            return "%Y%m%d", ""
        magnitude = float(values.abs().median())
        unit = next((unit for unit, floor in EPOCH_FLOORS if magnitude >= floor), None)
        return unit, "" if unit else f"time_format: the numbers of {values.name!r} are no year, date or epoch the draft knows: set it"
    read = {ISO: parse_event_times(values, ISO).notna()}
    if read[ISO].all():
        return None, ""
    read |= {pattern: parse_event_times(values, pattern).notna() for pattern in STRFTIME_GUESSES}
    readable = [pattern for pattern in STRFTIME_GUESSES if read[pattern].all()]
    if readable:
        return readable[0], f"time_format {readable[0]!r} guessed; {readable[1]!r} reads the sample too: check" if len(readable) > 1 else ""
    best = max(read, key=lambda pattern: int(read[pattern].sum()))  # a few values that are no time at all do not make the format wrong
    unread = values[~read[best]]
    if len(unread) <= len(values) * UNREAD_TIMES_MAX:
        return (None if best == ISO else best), (f"time_format {best!r} reads {len(values) - len(unread)} of the {len(values)} values of {values.name!r}; "
                                                 f"{len(unread)} {'is' if len(unread) == 1 else 'are'} no time in it (e.g. {str(unread.iloc[0])!r}): landing quarantines those rows")
    return None, f"time_format: no format the draft knows reads {values.name!r} (e.g. {str(unread.iloc[0])!r}): set it"


def _hour_column(times: pd.Series, frame: pd.DataFrame, columns: list[str]) -> str | None:
    """A column of whole hours 0-23 beside a time column of dates only (every time at midnight): the two make the
    events' hourly clock."""
    if times.isna().any() or (times % DAY_US != 0).any():
        return None
    for column in columns:
        values = frame[column].dropna()
        if HOUR_NAMES.match(column) and pd.api.types.is_numeric_dtype(values) and ((values % 1 == 0) & values.between(0, 23)).all():
            return column
    return None


def _matched(pattern: re.Pattern[str], column: str) -> bool:
    """A name pattern written with '_' also matches the same name with spaces, dots or dashes (`lot id`, `bottled-at`)."""
    return bool(pattern.search(re.sub(r"[\s.\-]+", "_", column.strip())))


def _an_id(values: pd.Series) -> bool:
    """A column named like an id is the event id only if it could be one: every row has a value, and no value repeats."""
    return bool(values.notna().all() and values.is_unique)


def _all_distinct(values: pd.Series) -> bool:
    """Text whose every value in the sample differs (and there are enough to say so): an id more likely than a feature."""
    values = values.dropna()
    return len(values) >= 20 and not pd.api.types.is_numeric_dtype(values) and values.nunique() == len(values)


def _record_number(values: pd.Series) -> bool:
    """Whole numbers counting up by 1 in every row (0, 1, 2, … or 1, 2, 3, …): a record number, an export's row index.
    Drafted as a numeric feature it told the model each row's position, never a value seen again (the River probe's `rid`)."""
    if len(values) < 20 or values.isna().any() or not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    steps = np.diff(values.to_numpy(dtype="float64"))
    return bool((steps == 1).all())


def _reads_as_times(values: pd.Series) -> bool:
    """Timestamps already, or text that reads as times (ISO 8601, or a format the draft guesses, e.g. `01/01/2024 00:00`):
    a time column under a name the draft does not know. Only ISO before: such a column became a categorical feature."""
    values = values.dropna()
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if values.empty or pd.api.types.is_numeric_dtype(values):
        return False
    text = values.astype(str)
    return any(bool(parse_event_times(text, pattern).notna().all()) for pattern in (ISO, *STRFTIME_GUESSES))


def draft_spec(name: str, sample: Path | None, label: str | None = None, task: str | None = None, retrain_every_n: int | None = None) -> str:
    """YAML text of a spec for `name`: drafted from `sample` when given, else a commented template. `retrain_every_n`
    (the setting in force): a whole sample with fewer rows is said to be a stream its count of new labels never retrains."""
    if sample is None:
        return TEMPLATE.format(name=name)
    frame, padded = _read_sample(sample)
    if frame.empty or len(frame.columns) < 2:
        raise ValueError(f"{sample}: needs a header and at least one row with a feature and a label column")
    label = label or str(frame.columns[-1])
    if label not in frame.columns:
        raise ValueError(f"{sample}: no column {label!r} (columns: {', '.join(map(str, frame.columns))})")
    notes: list[str] = []
    labels = frame[label]
    respelt: dict[str, str] = {}
    if (task or _task(labels)) != "regression":
        labels, respelt = _label_values(sample, label)
        if len(labels) > MAX_DISTINCT_LABELS and not pd.api.types.is_numeric_dtype(labels):
            raise ValueError(f"{sample}: label {label!r} has more than {MAX_DISTINCT_LABELS} distinct values, and not all are numbers: "
                             "no classification, and no regression either")
        if len(labels) > frame[label].nunique():
            notes.append(f"{len(labels)} distinct labels in the whole file, {frame[label].nunique()} in its first {len(frame)} rows: "
                         "classes are the whole file's")
    spec: dict[str, object] = {"name": name, "task": task or _task(labels), "label": label}
    if spec["task"] != "regression":
        classes = _classes(labels)
        alike: dict[str, list[str]] = {}
        for spelt in classes:
            alike.setdefault(spelt.casefold(), []).append(spelt)
        cased = [group for group in alike.values() if len(group) > 1]
        if cased and len(alike) > 1:  # one class each, the others mapped to it: 'Yes', 'YES', 'no', 'No' were a 4-class multiclass (the new-user probe)
            merged = {spelt: group[-1] for group in cased for spelt in group[:-1]}
            classes = [group[-1] for group in alike.values()]
            respelt = {**{spelt: merged.get(to, to) for spelt, to in respelt.items()}, **merged}
            spec["task"] = task or ("binary" if len(classes) == 2 else "multiclass")
            notes += [f"classes {' and '.join(map(repr, group))} differ only in case: drafted as one class, {group[-1]!r}, label_map mapping "
                      "the others to it; if they are different classes, list each in classes and take them out of label_map" for group in cased]
        else:
            notes += [f"classes {' and '.join(map(repr, group))} differ only in case: if they are one class, keep one in classes and map the "
                      f"others to it in label_map (e.g. {{{group[0]!r}: {group[-1]!r}}})" for group in cased]
        spec["classes"] = classes
        if spec["task"] == "binary":
            spec["positive_class"] = classes[-1]
            sampled = frame[label].dropna().map(_spelt).map(lambda spelt: respelt.get(spelt, spelt))
            share = float((sampled == classes[-1]).mean()) if len(sampled) else 1.0
            if share < RARE_POSITIVE_SHARE:  # at 0.5 the model would seldom or never predict it (the new-user probe)
                spec["decision_threshold"] = BEST_F1
                notes.append(f"positive_class {classes[-1]!r} is {share:.1%} of the sample's labels: decision_threshold {BEST_F1}, so the "
                             "model predicts it where F1 is best on each training's validation part; at 0.5 a rare class is seldom predicted")
        if respelt:
            spec["label_map"] = respelt
            notes.append(f"labels spelt {', '.join(sorted(respelt))} in the file: label_map maps them to their classes (in a CSV, 1.0 is not class 1)")
        whole = sorted(int(c) for c in classes if re.fullmatch(r"-?\d+", c))
        if task is None and spec["task"] == "multiclass" and len(whole) == len(classes):  # a count drafted as classes (the third new-user probe)
            gaps = sorted(set(range(whole[0], whole[-1] + 1)) - set(whole))
            notes.append(f"label {label!r} holds whole numbers {whole[0]} to {whole[-1]}: drafted as {len(classes)} classes; if it counts or "
                         "measures something, task: regression predicts the values between and beyond them"
                         + (f" (as classes, a label of {', '.join(map(str, gaps[:5]))}, which the file lacks, is refused)" if gaps else ""))
    rest = [str(c) for c in frame.columns if c != label]
    named_ids = [c for c in rest if _matched(ID_NAMES, c)]
    id_column = next((c for c in named_ids if _an_id(frame[c])), None)
    keys = [c for c in named_ids if frame[c].dropna().duplicated().any()]  # named like ids, with repeated values: an entity's key
    notes += [f"{key!r} is named like an id but has {frame[key].nunique()} distinct values in {len(frame)} rows: not the event id "
              "(landing would refuse every repeat); kept as a categorical feature: check, and make it `key` if only history features `by:` it should read it"
              for key in keys]
    notes += [f"{c!r} is named like an id but {int(frame[c].isna().sum())} of the sample's {len(frame)} rows have none: not the event id "
              "(landing would refuse an event without one); kept as a feature: check" for c in named_ids if c not in keys and frame[c].isna().any()]
    # A last change's time (updated, modified) only where no other name says when the event happened.
    time_column = next((c for c in sorted(rest, key=lambda c: bool(LAST_CHANGE_NAMES.search(c))) if c != id_column and _matched(TIME_NAMES, c)), None)
    time_format, time_note = _time_format(frame[time_column]) if time_column is not None else (None, "")
    named = frame[time_column].dropna() if time_column is not None else frame.iloc[:0, 0]
    # No format guessed and ISO (the default) reads too few: a format found reads them its own way (20240101 in a column of
    # floats, one cell empty, is `%Y%m%d` of the integers, and was dropped when its floats were parsed: the review).
    if len(named) and time_format is None and parse_event_times(named, ISO).notna().mean() < 1 - UNREAD_TIMES_MAX:
        # Drafted, landing quarantined every row and the first materialize failed on "0 labelled events" (the history probe: a day number)
        notes.append(f"{time_column!r} is named like a time, but no time_format the draft knows reads its values (e.g. {str(named.iloc[0])!r}): kept as a "
                     "feature, not the time column; a count of days or hours since a start is a time with time_offset (the start's date as "
                     f"time_column, and time_offset: {{column: {time_column}, unit: days}})")
        time_column, time_format, time_note = None, None, ""
    if time_column is None and (time_column := next((c for c in rest if c != id_column and _reads_as_times(frame[c])), None)) is not None:
        notes.append(f"time_column {time_column!r} guessed: its values read as times; check")
        time_format, time_note = _time_format(frame[time_column])
    if id_column is None:  # times are distinct too: only a column that is neither the time column nor read as times
        untimed = [c for c in rest if c != time_column and not _reads_as_times(frame[c])]
        id_column = next((c for c in untimed if _all_distinct(frame[c]) and _an_id(frame[c])), None)
        if id_column is not None:
            notes.append(f"id_column {id_column!r} guessed: its every value in the sample differs; check")
    if id_column:
        spec["id_column"] = id_column
    if time_column is None:
        notes.append("no time column found (by name, or by values that read as times): events would be timed as they land, "
                     "in file order; name yours in time_column (with time_format: epoch_s or epoch_ms for numbers)")
    if time_column:
        spec["time_column"] = time_column
        notes += [time_note] if time_note else []
        if time_format:
            spec["time_format"] = time_format
        hour = _hour_column(parse_event_times(frame[time_column].dropna(), time_format or ISO), frame, rest)
        if hour:
            spec["time_offset"] = {"column": hour, "unit": "hours"}
    features: dict[str, str] = {}
    twins: dict[str, str] = {}
    left_out: list[str] = []  # dropped, so a record sent as it appears in the data (with them) is served, not refused
    for column in (c for c in rest if c not in (id_column, time_column)):
        problem = feature_name_problem(column)
        if problem is None and twins.setdefault(twin_key(column), column) != column:
            problem = f"it {twin_problem(column, twins[twin_key(column)])}"
        if problem is not None:
            notes.append(f"left out {column!r} (in drop): {problem}; rename the column in your export to use it as a feature")
            left_out.append(column)
            continue
        if _record_number(frame[column]):
            notes.append(f"{column!r}: whole numbers counting up by 1 in every row (a record number?); kept as a numeric feature, which tells "
                         "the model each row's position, a value never seen again: if it numbers the rows, make it id_column (or put it in drop)")
        if _all_distinct(frame[column]):
            notes.append(f"{column!r}: every value in the sample differs (an id?); kept as a categorical feature: check")
        numeric = pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]) and column not in keys
        if numeric and column in padded:
            notes.append(f"{column!r}: digits with leading zeros (a code?): categorical, so '02134' stays '02134'; check")
            numeric = False
        features[column] = "numeric" if numeric else "categorical"
    if not features:
        raise ValueError(f"{sample}: no column can be a feature ({'; '.join(notes) or 'only the label, id and time columns'}); a series "
                         "predicted from its own past needs one its events carry, e.g. a calendar field (month, hour) added to the "
                         "sample as a number, then history features of the label (README, History features)")
    spec["features"] = features
    if left_out:
        spec["drop"] = left_out
    if retrain_every_n is not None and len(frame) < min(SAMPLE_ROWS, retrain_every_n):  # the whole file read, and small
        # The new-user probe: a 2,000-event stream never retrained on its own, and nothing said why.
        every = max(100, len(frame) // 200 * 100)
        notes.append(f"the sample has {len(frame)} rows, fewer than the {retrain_every_n} new labelled events that retrain a model by their "
                     f"count (retrain_every_n): if the stream is this size, set in this model's defs.yaml loop: {{retrain_every_n: {every}}} "
                     "(drift and quality drops retrain it either way)")
    header = (f"# Dataset spec of model {name}, drafted from {sample.name} ({len(frame)} rows read): review the task, the label\n"
              "# and each feature's type, then `dg check defs`. Keys are described in the README (\"Bring your own dataset\").\n")
    return header + "".join(f"# {note}\n" for note in notes) + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
