"""The dataset spec: what a user writes (YAML) to point the platform at their own data."""

from __future__ import annotations

import re
import unicodedata
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlplatform.domain.threshold import BEST_F1
from mlplatform.domain.timeformat import ISO, OFFSET_UNIT_SECONDS, check_time_format

# PostgreSQL holds 63 bytes of a column's name, and the event log's column of a feature is its name after "f_".
FEATURE_NAME_MAX = 61
_NAME = re.compile(rf"^[A-Za-z0-9_](?:[A-Za-z0-9_.\- ]{{0,{FEATURE_NAME_MAX - 2}}}[A-Za-z0-9_.\-])?$")  # no space at either end: headers are stripped
EVENT_ID, EVENT_TIME, LABEL = "event_id", "event_time", "label"  # the platform's own columns of every validated frame
# The event log's own columns beside the features, which it reads back under their names: no feature may take one.
EVENT_LOG_COLUMNS = [EVENT_ID, EVENT_TIME, "ingested_at", "source", LABEL, "label_seq", "label_time", "model_version", "prediction", "probability"]
RESERVED_NAMES = ("seq", *EVENT_LOG_COLUMNS)
NAME_RULE = f"1-{FEATURE_NAME_MAX} ASCII letters, digits, '_', '-', '.' or spaces, with no space at either end"


def twin_key(name: str) -> str:
    """Feature names with one key would be one column somewhere: the event log's SQLite columns ignore case, and
    LightGBM reads a space in a name as '_' (two such names failed every training with "appears more than one time")."""
    return name.replace(" ", "_").lower()


def twin_problem(name: str, first: str) -> str:
    """Why `name` cannot be a feature beside `first`, the feature of the same twin_key."""
    if name.lower() == first.lower():
        return "differs only in case from " + repr(first) + ": the event log's column names do not"
    if name.replace(" ", "_") == first.replace(" ", "_"):
        return "is " + repr(first) + " to LightGBM, which reads a space in a name as '_'"
    return ("is one column with " + repr(first) + " once case is ignored (as the event log's column names do) and a space read "
            "as '_' (as LightGBM does)")


def feature_name_problem(name: str) -> str | None:
    """Why `name` cannot be a feature's name (the spec refuses it; the spec draft leaves such a column out), or None."""
    if not _NAME.match(name):
        return f"feature name {name!r} must be {NAME_RULE}"
    if name in RESERVED_NAMES:
        return f"{name!r} is a name of the platform's own columns ({', '.join(RESERVED_NAMES)})"
    return None


MODEL_NAME = r"[a-z0-9][a-z0-9_\-]{0,62}"  # a spec's name: it names files, the MLflow model and (with '_' for '-') Dagster's asset prefix
MODEL_NAME_RULE = ("must be 1 to 63 lower-case letters, digits, '_' or '-', the first a letter or digit (it names files and the "
                   "MLflow model)")


def model_name_like(text: str) -> str:
    """A model name close to `text` that `MODEL_NAME` takes (accents dropped, other characters made '_', cut to 63), for
    the suggestion beside a refused one: `ünï` suggested `n`, and 70 letters suggested the same 70 letters."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9_-]+", "_", ascii_text).strip("_-")[:63].rstrip("_-") or "my_model"


def dagster_name(model: str) -> str:
    """The model's name as Dagster accepts it in asset keys, job, sensor and group names (`bike-sharing` -> `bike_sharing`)."""
    return model.replace("-", "_")


class SpecError(ValueError):
    """A dataset spec that cannot be used; the message names the field."""


class Task(str, Enum):
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


class FeatureType(str, Enum):
    numeric = "numeric"
    categorical = "categorical"
    key = "key"  # an entity's key: sent with every event, read by history features `by:` it, never a model input


def _label_text(value: object) -> object:
    """Labels are compared as text, so YAML numbers are taken as their text (1 and 1.0 → "1", 0.5 → "0.5").

    Booleans are refused: YAML reads unquoted yes/no/on/off/true/false as booleans, and guessing which
    spelling the files use would mis-match every label.
    """
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a YAML boolean (unquoted yes/no/on/off/true/false); quote the label as it is written in your files, e.g. \"yes\"")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value


LabelText = Annotated[str, BeforeValidator(_label_text)]


class TimeOffset(BaseModel):
    """A column of numbers added to `time_column`: an export that writes the day in one column and the hour in another
    (`dteday`, `hr`) is an hourly clock only once both are read; windows in hours and "time since" need that clock."""

    model_config = ConfigDict(extra="forbid")

    column: str
    unit: Literal[tuple(OFFSET_UNIT_SECONDS)]  # type: ignore[valid-type]


class SourceSpec(BaseModel):
    """How `replay` reads the dataset's original files; relative `files` resolve against the spec file's folder."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    files: list[str] = Field(min_length=1)
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    header: bool = True
    columns: list[str] | None = None
    separator: str = Field(default=",", validation_alias=AliasChoices("separator", "sep"), description="`sep` (pandas' name) is accepted too.")
    na_values: list[str] = Field(default_factory=list)
    skipinitialspace: bool = False
    comment: str | None = None


# How CSV exports write a missing value (pandas, R, Excel, databases): read as missing in every column, quoted or not,
# unless the spec says otherwise (`csv_missing`). A CSV has no other way to say null; JSON Lines and Parquet do, and there
# (as in a request) "NA" is text.
CSV_MISSING = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null")

HISTORY_PREFIX = "hist__"
LABEL_REF = "label"  # `of: label` names the label whatever its column is called
ROLLING = ("mean", "sum", "count", "min", "max")
MAX_LAGS = 100  # k: a typo's k = 100000 made as many columns
MAX_ROLLING_N = 100_000  # n: the values serving keeps per key; longer memories are a time window
_DURATION = re.compile(r"(-?[0-9]{1,12})([smhd])")
_UNIT_S = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
MAX_WINDOW_S = 36_500 * 86_400  # a century: beyond any sensible warm-up, and its microseconds stay far inside int64
# Why a history feature that reads event times needs the spec's time_column: without one each path times events its own way
# (mlplatform.domain.validation.generated_keys, serving's clock), and `since` or `window: 6h` meant three things, silently.
UNTIMED_HISTORY = ("without one, an event's time is the way it came (a landed file: its ingestion time, 1 µs a row; replay and the "
                   "benchmarks: 2026-01-01, a minute a row; serving: the clock), so time would mean one thing in training, another "
                   "in the benchmarks and in serving")


def duration_seconds(text: str) -> int:
    """The seconds of a checked window (`6h`, `90m`); `HistoryFeature.window` holds only such text."""
    match = _DURATION.fullmatch(text)
    assert match is not None, text
    return int(match[1]) * _UNIT_S[match[2]]


def _window_text(value: object) -> object:
    """A time window: a whole number and a unit, kept as written (it is part of the feature's name)."""
    if value is None:
        return None
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}…"
        raise ValueError(f"{shown} is not a duration: a whole number and a unit s, m, h or d, e.g. 90s, 30m, 6h, 7d")
    seconds = int(match[1]) * _UNIT_S[match[2]]
    if seconds <= 0:
        raise ValueError(f"{value!r}: a window must be longer than 0")
    if seconds > MAX_WINDOW_S:
        raise ValueError(f"{value!r}: a window is at most {MAX_WINDOW_S // 86_400}d")
    return match[0]


class HistoryFeature(BaseModel):
    """One declared history feature (or k lags): what it summarises (`of`), over what (`n`, `window`, `k`) and per which key (`by`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["lag", "mean", "sum", "count", "min", "max", "diff", "since", "events"]
    of: str | None = Field(default=None, description="`label` or a numeric feature; lag and diff default to the label.")
    k: int | None = Field(default=None, ge=1, le=MAX_LAGS, strict=True, description="lag: how many previous values (lag1..lagk), a column each.")
    n: int | None = Field(default=None, ge=1, le=MAX_ROLLING_N, strict=True, description="mean/sum/count/min/max: over the key's last n values, which serving keeps per key.")
    window: Annotated[str | None, BeforeValidator(_window_text)] = Field(
        default=None, description="mean/sum/count/min/max, instead of n: over the key's values of the last time span, e.g. 6h (s, m, h, d)."
    )
    by: str | None = Field(default=None, description="The key: a feature (of type key, or one the model also reads); omitted, the whole stream is one key.")

    @property
    def source(self) -> str | None:
        """What the feature reads: LABEL_REF, a feature name, or None (event times and counts)."""
        if self.kind in ("since", "events"):
            return None
        return self.of or LABEL_REF

    @property
    def reads_time(self) -> bool:
        """Whether it reads event times (`since`, a time window), not counts of events: such a feature needs a time column."""
        return self.kind == "since" or self.window is not None

    @property
    def names(self) -> list[str]:
        """The generated column names, e.g. hist__label_lag1__by_station."""
        suffix = f"__by_{self.by}" if self.by else ""
        what = self.source
        if self.kind == "lag":
            return [f"{HISTORY_PREFIX}{what}_lag{i}{suffix}" for i in range(1, (self.k or 1) + 1)]
        if self.kind in ROLLING:
            over = f"_{self.window}" if self.window else str(self.n)
            return [f"{HISTORY_PREFIX}{what}_{self.kind}{over}{suffix}"]
        if self.kind == "diff":
            return [f"{HISTORY_PREFIX}{what}_diff{suffix}"]
        return [f"{HISTORY_PREFIX}{self.kind}{suffix}"]

    @property
    def window_us(self) -> int | None:
        """The time window in microseconds (the event log's clock), or None for a window of the last n values."""
        return None if self.window is None else duration_seconds(self.window) * 1_000_000


class HistorySpec(BaseModel):
    """Point-in-time features from the event log; `warmup_events` is how far before a training window they are read from."""

    model_config = ConfigDict(extra="forbid")

    features: list[HistoryFeature] = Field(min_length=1)
    warmup_events: int = Field(default=10_000, ge=0, strict=True)  # strict: YAML's `true` or `2.5` is no count

    @property
    def longest_window_us(self) -> int:
        """The widest time window (0 without one): a warm-up reads at least that span, whatever `warmup_events` says."""
        return max((f.window_us or 0 for f in self.features), default=0)


class DatasetSpec(BaseModel):
    """Name, task, label, optional id and time columns, typed features and columns to drop."""

    model_config = ConfigDict(extra="forbid")

    name: str
    task: Task
    label: str
    positive_class: LabelText | None = None
    classes: list[LabelText] | None = None
    label_map: dict[LabelText, LabelText] = Field(default_factory=dict, description="Source spellings of labels mapped to the canonical ones.")
    id_column: str | None = None
    time_column: str | None = None
    time_format: str | None = Field(default=None, description="How time_column is written: iso (default), epoch_s/ms/us/ns, year or a strftime pattern.")
    time_offset: TimeOffset | None = Field(default=None, description="A column of seconds/minutes/hours/days added to time_column's time.")
    features: dict[str, FeatureType]
    drop: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list, description="Features a file or a request may leave out: read as missing there, not refused.")
    crosses: list[tuple[str, str]] = Field(default_factory=list, description="Pairs of categorical features crossed into one more feature.")
    csv_missing: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=100,
        description="How CSV landing files (and a CSV source) spell a missing value; default CSV_MISSING. [\"\"]: only an empty field, so a category spelt NA stays text.")
    decision_threshold: float | Literal[BEST_F1] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="Binary: the positive class's probability at and above which it is predicted (default 0.5); best_f1: the threshold "
                    "that maximises F1 on each training's validation part, for a rare positive class the model would otherwise never predict.")
    source: SourceSpec | None = None
    history: HistorySpec | None = None
    base_dir: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, value: str) -> str:
        if not re.fullmatch(MODEL_NAME, value):
            raise ValueError(MODEL_NAME_RULE)
        return value

    @field_validator("decision_threshold", mode="before")
    @classmethod
    def _a_threshold(cls, value: object) -> object:
        """One message for what is neither kind (a union's reads each of its parts' refusals)."""
        if value is None or value == BEST_F1 or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1):
            return value
        raise ValueError(f"{value!r} is neither a probability between 0 and 1 (both excluded) nor {BEST_F1}")

    @field_validator("time_format")
    @classmethod
    def _known_time_format(cls, value: str | None) -> str | None:
        return None if value is None else check_time_format(value)

    @field_validator("features")
    @classmethod
    def _feature_names(cls, value: dict[str, FeatureType]) -> dict[str, FeatureType]:
        if not value:  # a file of ids and labels alone is a label file: an event carries at least one column of its own
            raise ValueError("at least one is needed (a file of ids and labels alone is a label file); a stream predicted from its "
                             "history alone declares a column its events carry, e.g. a calendar field (month, hour) as numeric")
        twins: dict[str, str] = {}
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"feature name {name!r} must be {NAME_RULE}")
            first = twins.setdefault(twin_key(name), name)
            if first != name:
                raise ValueError(f"feature name {name!r} {twin_problem(name, first)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetSpec":
        if self.time_format is not None and self.time_column is None:
            raise ValueError("time_format: says how time_column is written, but the spec has no time_column")
        self._check_time_offset()
        special = {c for c in (self.label, self.id_column, self.time_column) if c}
        clash = special & set(self.features)
        if clash:
            raise ValueError(f"features: {sorted(clash)} is also the label, id or time column")
        reserved = set(RESERVED_NAMES) & set(self.features)
        if reserved:
            raise ValueError(f"features: {sorted(reserved)} is a name of the platform's own columns ({', '.join(RESERVED_NAMES)}), whose "
                             "values a feature of that name would overwrite; rename that column in your data")
        dropped_used = set(self.drop) & (set(self.features) | special)
        if dropped_used:
            raise ValueError(f"drop: {sorted(dropped_used)} is also used as a feature, label, id or time column")
        not_features = [c for c in self.optional if c not in self.features]
        if not_features:
            raise ValueError(f"optional: {not_features} is not a feature; optional names features a file or a request may leave out")
        if set(self.features) <= set(self.optional):
            raise ValueError("optional: every feature is optional; at least one is required (a file of ids and labels alone is a label file)")
        if self.task in (Task.binary, Task.multiclass):
            if not self.classes or len(set(self.classes)) < 2:
                raise ValueError(f"classes: task {self.task.value} needs at least two distinct classes")
            if len(set(self.classes)) != len(self.classes):
                twice = sorted({c for c in self.classes if self.classes.count(c) > 1})
                raise ValueError(f"classes: {', '.join(map(repr, twice))} given more than once (numbers are read as their text: 1 and 1.0 are one class)")
            if self.task is Task.binary:
                if len(self.classes) != 2:
                    raise ValueError("classes: a binary task has exactly two classes")
                if self.positive_class not in self.classes:
                    raise ValueError(f"positive_class: {self.positive_class!r} is not one of classes {self.classes}")
            elif self.positive_class is not None:
                raise ValueError("positive_class: only for task binary (a multiclass model reports a probability per class)")
        elif self.positive_class is not None or self.classes:
            raise ValueError("positive_class/classes: only for classification tasks")
        if self.decision_threshold is not None and self.task is not Task.binary:
            raise ValueError(f"decision_threshold: only for task binary (a {self.task.value} model predicts without one)")
        for a, b in self.crosses:
            for col in (a, b):
                if self.features.get(col) is not FeatureType.categorical:
                    raise ValueError(f"crosses: {col!r} is not a categorical feature")
        for target in self.label_map.values():
            if self.classes and target not in self.classes:
                raise ValueError(f"label_map: {target!r} is not one of classes {self.classes}")
        if self.history is not None:
            self._check_history(self.history)
        unread = [k for k in self.entity_keys if k not in {f.by for f in self.history_features}]
        if unread:
            raise ValueError(f"features: {unread} is of type key, which only history features read (`by:` it), and none does: "
                             "make it categorical for the model to read it, or key a history feature by it")
        return self

    def _check_time_offset(self) -> None:
        """The offset column is read beside time_column: a numeric feature (hr) or a column of its own, nothing else."""
        if self.time_offset is None:
            return
        column = self.time_offset.column
        if self.time_column is None:
            raise ValueError("time_offset: is added to time_column's time, but the spec has no time_column")
        if column in (self.label, self.id_column, self.time_column):
            raise ValueError(f"time_offset.column: {column!r} is the label, id or time column")
        if column in self.features and self.features[column] is not FeatureType.numeric:
            raise ValueError(f"time_offset.column: {column!r} is a {self.features[column].value} feature; an offset is a number of {self.time_offset.unit}")
        if column in self.drop:
            raise ValueError(f"time_offset.column: {column!r} is in drop; an offset column is read")

    def _check_history(self, history: HistorySpec) -> None:
        """Every reference of every history feature resolves; messages name the entry and its field."""
        seen: set[str] = set()
        for i, feature in enumerate(history.features):
            where = f"history.features.{i}"
            if feature.of == self.label:
                feature.of = LABEL_REF
            if feature.by is not None and feature.by not in self.features:
                raise ValueError(f"{where}.by: {feature.by!r} is not a feature of the spec {list(self.features)}: a key is sent with every event and "
                                 f"request; declare it under features as `{feature.by}: key` (history reads it, the model does not) or categorical")
            if feature.by in self.optional:
                raise ValueError(f"{where}.by: {feature.by!r} is optional, and a key must be sent with every request: take it out of optional")
            source = feature.source
            if source is None and feature.of is not None:
                raise ValueError(f"{where}.of: {feature.kind} reads event times, not a column; remove 'of'")
            if source not in (None, LABEL_REF) and source not in self.features:
                raise ValueError(f"{where}.of: {source!r} is neither 'label' nor a feature of the spec")
            if source in self.features and self.features[source] is not FeatureType.numeric:
                raise ValueError(f"{where}.of: {source!r} is {self.features[source].value}; {feature.kind} needs a numeric feature or the label")
            if feature.kind == "events" and history.warmup_events == 0:
                raise ValueError(f"{where}.kind: events counts a key's events among the last warmup_events; warmup_events is 0")
            if feature.k is not None and feature.kind != "lag":
                raise ValueError(f"{where}.k: only for kind lag")
            if feature.kind in ROLLING and feature.n is None and feature.window is None:
                raise ValueError(f"{where}.n: kind {feature.kind} needs n, the number of last values it summarises, or window, the time span")
            if feature.n is not None and feature.window is not None:
                raise ValueError(f"{where}.window: give n (the last n values) or window (a time span), not both")
            for name, value in (("n", feature.n), ("window", feature.window)):
                if feature.kind not in ROLLING and value is not None:
                    raise ValueError(f"{where}.{name}: only for kinds {', '.join(ROLLING)}")
            if feature.reads_time and self.time_column is None:
                if feature.window is not None:
                    raise ValueError(f"{where}.window: {feature.window} is a time span and needs the spec's time_column; {UNTIMED_HISTORY}. "
                                     "Name the events' time column, or give n (the key's last n values) instead")
                raise ValueError(f"{where}.kind: since (time since the key's previous event) needs the spec's time_column; {UNTIMED_HISTORY}. "
                                 "Name the events' time column, or count events instead (lag, n, events)")
            if source == LABEL_REF and feature.kind in (*ROLLING, "diff") and self.task is not Task.regression:
                if feature.kind == "diff" or self.task is Task.multiclass:
                    raise ValueError(f"{where}.kind: {feature.kind} of a {self.task.value} label is not defined; use lag (or a window of a binary label)")
            clash = (seen | set(self.features)) & set(feature.names)
            if clash:
                raise ValueError(f"{where}: {sorted(clash)} is declared twice (or is a feature's name)")
            seen.update(feature.names)

    @property
    def numeric_features(self) -> list[str]:
        return [n for n, t in self.features.items() if t is FeatureType.numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [n for n, t in self.features.items() if t is FeatureType.categorical]

    @property
    def entity_keys(self) -> list[str]:
        """Features of type key: landed, validated and sent with every request, read by history `by:` them, not by the model."""
        return [n for n, t in self.features.items() if t is FeatureType.key]

    @property
    def modelled_features(self) -> list[str]:
        """The features a model reads (and drift compares): all but the entity keys."""
        return [n for n, t in self.features.items() if t is not FeatureType.key]

    @property
    def history_features(self) -> list[HistoryFeature]:
        return self.history.features if self.history is not None else []

    @property
    def history_categorical(self) -> list[str]:
        """History columns the model takes as categories: lags of a classification label."""
        return [n for f in self.history_features if f.kind == "lag" and f.source == LABEL_REF and self.is_classification for n in f.names]

    @property
    def history_numeric(self) -> list[str]:
        categorical = set(self.history_categorical)
        return [n for f in self.history_features for n in f.names if n not in categorical]

    @property
    def model_inputs(self) -> tuple[list[str], list[str]]:
        """The columns a model of this spec reads, numeric then categorical: the features, then the history columns."""
        return [*self.numeric_features, *self.history_numeric], [*self.categorical_features, *self.history_categorical]

    @property
    def is_classification(self) -> bool:
        return self.task is not Task.regression

    @property
    def online_correction_problem(self) -> str | None:
        """Why the online correction cannot serve this dataset, or None when it can."""
        if self.task is Task.multiclass:
            return "it is multiclass: the online correction supports binary and regression tasks"
        if self.history is not None:
            return "it declares history features, which the online correction cannot recompute for past events"
        return None

    @property
    def required_features(self) -> list[str]:
        """The features every events file and request carries (`optional` ones may be left out: missing there)."""
        return [c for c in self.features if c not in self.optional]

    @property
    def csv_missing_values(self) -> list[str]:
        """How a CSV landing file spells a missing value: the spec's `csv_missing`, else the exports' usual spellings."""
        return list(CSV_MISSING if self.csv_missing is None else self.csv_missing)

    @property
    def key_columns(self) -> list[str]:
        """The id, time and time offset columns the spec names that are not features: read by landing, never served."""
        offset = self.time_offset.column if self.time_offset is not None else None
        return [c for c in dict.fromkeys((self.id_column, self.time_column, offset)) if c is not None and c not in self.features]

    @property
    def event_time_format(self) -> str:
        """The format `time_column` is parsed with (`iso` unless the spec says otherwise)."""
        return self.time_format or ISO

    @property
    def negative_class(self) -> str | None:
        if self.task is not Task.binary or not self.classes:
            return None
        return next(c for c in self.classes if c != self.positive_class)

    @property
    def model_name(self) -> str:
        """The MLflow registered model that holds this dataset's versions."""
        return f"mlplatform-{self.name}"

    def source_paths(self) -> list[Path]:
        if self.source is None:
            raise SpecError(f"dataset {self.name!r}: the spec has no 'source' section to replay from; add the files to replay, e.g. "
                            "`source: {files: [events.csv], format: csv}` (paths relative to the spec's folder; README: Bring your own dataset)")
        base = self.base_dir or Path.cwd()
        return [(base / f).resolve() for f in self.source.files]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """One pydantic error as 'field: what' (whole-spec checks already start with the field they name)."""
    msg = msg.removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in loc)}: {msg}" if loc else msg


def parse_spec(data: Any, base_dir: Path | None = None, origin: str = "spec") -> DatasetSpec:
    """Validate a parsed YAML mapping; errors name the offending field."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        spec = DatasetSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(err["loc"], err["msg"]) for err in exc.errors())
        raise SpecError(f"{origin}: {problems}") from None
    spec.base_dir = base_dir
    return spec


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping: `temp: numeric` then `temp: categorical` kept
    the last one silently."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    lines: dict[Any, int] = {}  # each plain key's first line
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: construct_mapping merges it, keys given here win
            continue
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)):
            line = key_node.start_mark.line + 1
            if key in lines:
                raise yaml.constructor.ConstructorError(problem=f"{key!r} is given twice, on lines {lines[key]} and {line}")
            lines[key] = line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_spec(path: Path | str) -> DatasetSpec:
    """Read and validate a spec file; its `source.files` must exist, so a typo fails here rather than at replay."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"dataset spec {path} is a folder: name the spec's YAML file in it")
    if not path.is_file():
        raise SpecError(f"dataset spec {path} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    spec = parse_spec(data, base_dir=path.resolve().parent, origin=str(path))
    if spec.source is not None:
        missing = [str(p) for p in spec.source_paths() if not p.is_file()]
        if missing:
            raise SpecError(f"{path}: source.files: no such file {', '.join(missing)} (relative paths resolve against the spec's folder, {spec.base_dir})")
    return spec
