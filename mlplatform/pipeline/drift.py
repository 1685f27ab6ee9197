"""Drift of the live stream against the champion's training window, measured with Evidently.

Reference = the champion's training window (its MLflow `window.*` tags); current = the events the champion
never saw: after its whole window in event time, or arrived after the window's last event whatever their time
(optionally only the last hours). Both sides are uniform samples of at
most `drift_sample_rows` events drawn in SQL, so time and memory stay bounded on any window, and the
reference side (with the champion's predictions on it) is computed once per champion and cached.
Evidently's distance tests (Wasserstein, Jensen-Shannon, chosen above 1000 rows) measure effect size,
not significance, so a large uniform sample reproduces the full-data verdicts (benchmarks/bench_drift.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlplatform.domain.evaluation import score
from mlplatform.domain.features import ARITHMETIC_LIMIT, respelled
from mlplatform.domain.keys import window_tag
from mlplatform.domain.settled import settled
from mlplatform.stores.eventlog import Arrival, EventStore
from mlplatform.domain.predictor import PREDICTION, PROBABILITY, Predictor
from mlplatform.stores.registry import CHALLENGER, Registry
from mlplatform.stores.evidently_workspace import TOP_COLUMNS, WorkspaceEntry, add_drift_snapshot, snapshot_tags
from mlplatform.stores.reports import SNAPSHOT_SUFFIX, Pruned, ReportUnreadable, html_path, load_snapshot, prune_drift_reports, save_snapshot
from mlplatform.domain.timeformat import iso_time, naive_utc
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec, Task
from mlplatform.domain.validation import LABEL

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from mlflow.entities.model_registry import ModelVersion

PREDICTION_COLUMN = "champion_prediction"
US_PER_HOUR = 3_600_000_000
LIVE_METRICS: dict[Task, tuple[str, ...]] = {Task.binary: ("precision", "recall"), Task.multiclass: ("precision", "recall"), Task.regression: ("rmse", "mae")}


class DriftError(RuntimeError):
    """The champion's data window cannot be read from its MLflow tags."""


@dataclass(frozen=True)
class DriftConfig:
    sample_rows: int
    share_threshold: float
    min_current_rows: int
    current_hours: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "DriftConfig":
        return cls(settings.drift_sample_rows, settings.drift_share_threshold, settings.drift_min_current_rows, settings.drift_current_hours)


@dataclass(frozen=True)
class ReferenceWindow:
    """The champion's training rows in event time, from its MLflow version tags."""

    version: int
    start_us: int
    train_end_us: int
    end_us: int
    label_seq_cutoff: int
    seq_cutoff: int | None  # the window's last event in order of arrival (None: a version logged before it was recorded)

    @property
    def digest(self) -> str:
        """Eight hex digits naming the window's events (its bounds and cut-offs), for the reference cache's file name."""
        bounds = f"{self.start_us}:{self.train_end_us}:{self.label_seq_cutoff}:{self.seq_cutoff}"
        return hashlib.sha256(bounds.encode()).hexdigest()[:8]

    def span(self) -> dict[str, object]:
        """Which events the reference is, as the champion's window tags say: its training rows' times and label cut-off."""
        return {"reference_from": iso_time(self.start_us), "reference_until": iso_time(self.train_end_us), "reference_label_seq_cutoff": self.label_seq_cutoff}

    @classmethod
    def of(cls, version: ModelVersion) -> "ReferenceWindow":
        tags = version.tags
        seq_cutoff = tags.get(window_tag("seq_cutoff"), "")
        try:
            return cls(
                version=int(version.version),
                start_us=_us(tags[window_tag("start")]),
                train_end_us=_us(tags[window_tag("train_end")]),
                end_us=_us(tags[window_tag("end")]),
                label_seq_cutoff=int(tags[window_tag("label_seq_cutoff")]),
                seq_cutoff=int(seq_cutoff) if seq_cutoff.isdigit() else None,
            )
        except (KeyError, ValueError) as exc:
            raise DriftError(f"champion v{version.version} has no readable data window in its tags ({exc})") from exc


def _us(iso: str) -> int:
    return int(pd.Timestamp(iso).value // 1000)


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # numeric, categorical, prediction or target
    method: str
    score: float
    threshold: float
    drifted: bool

    @property
    def severity(self) -> float:
        """Comparable across methods: how far past (>1) or short of (<1) its threshold the column is."""
        if math.isnan(self.score):
            return 0.0
        if _is_p_value(self.method):
            return self.threshold / max(self.score, 1e-300)
        return self.score / self.threshold if self.threshold else math.inf


@dataclass(frozen=True)
class Side:
    rows: int  # events in the window
    sample: pd.DataFrame  # at most `sample_rows` of them, with PREDICTION_COLUMN added


@dataclass(frozen=True)
class DriftReport:
    champion_version: int
    reference: ReferenceWindow  # the champion's training rows the current events are compared with
    reference_rows: int
    current_rows: int
    reference_sampled: int
    current_sampled: int
    current_labelled: int
    current_until_us: int  # the data time the report reads up to: the event log's newest event
    columns: list[ColumnDrift]
    prediction: ColumnDrift | None
    target: ColumnDrift | None
    live_metrics: dict[str, float]
    share_threshold: float
    evidently_drifted: int  # Evidently's own count over the columns it was given, a cross-check
    report_path: Path  # Evidently's snapshot; its HTML page is rendered on demand (stores/reports.py)
    seconds: float
    pruned: Pruned  # what retention removed after this report
    features_only: bool = False  # a champion with history features: no prediction drift nor live metrics (FEATURES_ONLY)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def drift_share(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.columns) and self.drift_share >= self.share_threshold

    def summary(self) -> dict[str, object]:
        """The verdicts in a few kB: what MLflow keeps next to the champion (the snapshot stays in the reports folder)."""
        return {"champion_version": self.champion_version, "drift_share": self.drift_share, "dataset_drift": self.dataset_drift,
                "share_threshold": self.share_threshold, **self.reference.span(), "reference_rows": self.reference_rows, "current_rows": self.current_rows,
                "current_labelled": self.current_labelled, "current_until": iso_time(self.current_until_us), "live_metrics": self.live_metrics,
                "columns": [asdict(c) for c in self.columns], "prediction": self.prediction and asdict(self.prediction),
                "target": self.target and asdict(self.target), "report": self.report_path.name}

    def table(self, top: int | None = None) -> pd.DataFrame:
        """Columns, most drifted first."""
        ranked = most_drifted(self.columns)[:top]
        return pd.DataFrame(
            [{"column": c.column, "kind": c.kind, "method": c.method, "score": round(c.score, 4), "threshold": c.threshold, "drift": "yes" if c.drifted else "no"} for c in ranked],
            columns=["column", "kind", "method", "score", "threshold", "drift"],
        )


@dataclass(frozen=True)
class DriftSkipped:
    """No report could be made; `reason` says why in a sentence."""

    reason: str
    champion_version: int | None = None
    current_rows: int = 0


def most_drifted(columns: list[ColumnDrift]) -> list[ColumnDrift]:
    """Drifted columns first, each group by how far past its threshold."""
    return sorted(columns, key=lambda c: (not c.drifted, -c.severity))


def _is_p_value(method: str) -> bool:
    """Evidently's p-value tests (K-S, chi-square, Z) flag drift below the threshold; distances at or above it. A test
    it chose is shown by its display name ("K-S p_value"), one the platform chose by its registered name ("ks")."""
    return "p_value" in method or method == KOLMOGOROV_SMIRNOV


def _prediction_values(spec: DatasetSpec, predicted: pd.DataFrame) -> pd.Series:
    """What prediction drift compares: the positive-class probability, the class, or the predicted value."""
    if spec.task is Task.binary:
        return predicted[PROBABILITY].astype("float64")
    if spec.task is Task.regression:
        return predicted[PREDICTION].astype("float64")
    return predicted[PREDICTION].astype(object)


def _with_predictions(spec: DatasetSpec, frame: pd.DataFrame, predictor: Predictor) -> pd.DataFrame:
    """The sample with the champion's predictions; without them for a model with history features, which a random
    sample cannot give (the live-quality gauges score such a model from what it served)."""
    out = frame.reset_index(drop=True)
    if predictor.transformer.history:
        return out
    predicted = predictor.predict(out)
    out[PREDICTION_COLUMN] = _prediction_values(spec, predicted).to_numpy() if len(out) else pd.Series(dtype="float64")
    return out


def reference_cache_name(spec: DatasetSpec, window: ReferenceWindow, sample_rows: int) -> str:
    """The reference cache's file name without suffix: named by the window too, as another registry's v1 (a new
    MLFLOW_TRACKING_URI, same state folder) read the old v1's (the review)."""
    return f"{spec.name}-v{window.version}-{sample_rows}-{window.digest}"


def reference_side(log: EventStore, spec: DatasetSpec, window: ReferenceWindow, predictor: Predictor, sample_rows: int, cache_dir: Path) -> Side:
    """The champion's training rows (sampled) with its predictions: computed once per champion, then read from cache."""
    stem = cache_dir / reference_cache_name(spec, window, sample_rows)
    parquet, info = stem.with_suffix(".parquet"), stem.with_suffix(".json")
    if parquet.exists() and info.exists():
        return Side(int(json.loads(info.read_text(encoding="utf-8"))["rows"]), pd.read_parquet(parquet))
    end = window.train_end_us + 1
    rows = log.count_between(window.start_us, end, window.label_seq_cutoff)
    sample = _with_predictions(spec, log.sample_between(window.start_us, end, sample_rows, window.label_seq_cutoff), predictor)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written aside, then renamed into place (the info file last): a concurrent report never reads half a cache.
    parquet_tmp, info_tmp = (path.with_name(f".{path.name}.{os.getpid()}.tmp") for path in (parquet, info))
    sample.to_parquet(parquet_tmp, index=False)
    parquet_tmp.replace(parquet)
    info_tmp.write_text(json.dumps({"rows": rows}), encoding="utf-8")
    info_tmp.replace(info)
    return Side(rows, sample)


@dataclass(frozen=True)
class CurrentWindow:
    """The events the champion never saw: timed after its whole window, or arrived after the window's last event (a file
    of older events landed after training, where served events with the server's clock ended the window); optionally
    only those of the last hours."""

    start_us: int
    end_us: int
    arrived_after: Arrival | None

    def count(self, log: EventStore) -> int:
        return log.count_between(self.start_us, self.end_us, arrived_after=self.arrived_after)

    def sample(self, log: EventStore, n: int) -> pd.DataFrame:
        return log.sample_between(self.start_us, self.end_us, n, arrived_after=self.arrived_after)

    def described(self) -> dict[str, str]:
        """The window in words, for the snapshot's metadata. No time range where none is left after the reference window
        (the log's newest event is in it: served with the server's clock, then older events landed): every current event
        arrived late, and the range read 'current_from' after 'current_until' (the new-user probe)."""
        late = {} if self.arrived_after is None else {"current_or_arrived_after_seq": str(self.arrived_after.seq)}
        if self.start_us >= self.end_us:
            return late
        return {"current_from": iso_time(self.start_us), "current_until": iso_time(self.end_us - 1), **late}


def current_window(log: EventStore, window: ReferenceWindow, hours: float | None) -> CurrentWindow | None:
    """The current side of a drift report; None when the log is empty."""
    span = log.time_range()
    if span is None:
        return None
    end = span[1] + 1
    since = span[0] if hours is None else end - int(hours * US_PER_HOUR)
    arrived = None if window.seq_cutoff is None else Arrival(window.seq_cutoff, since)
    return CurrentWindow(max(window.end_us + 1, since), end, arrived)


def _column_types(spec: DatasetSpec, columns: list[str]) -> tuple[list[str], list[str]]:
    numeric = [c for c in columns if c in spec.numeric_features or (c == PREDICTION_COLUMN and spec.task is not Task.multiclass) or (c == LABEL and not spec.is_classification)]
    return numeric, [c for c in columns if c not in numeric]


def _presence(spec: DatasetSpec, reference: pd.DataFrame, current: pd.DataFrame, inputs: Collection[str] | None) -> tuple[list[str], list[ColumnDrift]]:
    """Features Evidently can compare, and verdicts for those missing entirely on one or both sides (Evidently rejects
    empty columns). Only the champion's `inputs` (None: every feature): a feature added to the spec after it was trained
    was "all missing in reference", drifted, and its share could call for a retraining on a spec edit, not on the data.
    Entity keys are no model input: a new customer is no drift."""
    usable, decided = [], []
    for column in [c for c in spec.modelled_features if inputs is None or c in inputs]:
        kind = "numeric" if column in spec.numeric_features else "categorical"
        in_ref, in_cur = bool(reference[column].notna().any()), bool(current[column].notna().any())
        if in_ref and in_cur:
            usable.append(column)
        elif in_ref or in_cur:
            side = "current" if in_ref else "reference"
            decided.append(ColumnDrift(column, kind, f"all missing in {side}", 1.0, 1.0, True))
    return usable, decided


def _bounds(reference: pd.Series) -> tuple[float, float]:
    """Where a numeric column's values stop being data and start being an outlier, for drift: the reference's 1st to 99th
    percentile widened by that spread on each side (by the value's size where the column is constant), within
    ±ARITHMETIC_LIMIT. Beyond them a value counts as at the bound."""
    low, high = reference.quantile([0.01, 0.99]).to_numpy(dtype="float64") if reference.notna().any() else (np.nan, np.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        return -ARITHMETIC_LIMIT, ARITHMETIC_LIMIT
    spread = high - low or max(abs(high), 1.0)
    return max(low - spread, -ARITHMETIC_LIMIT), min(high + spread, ARITHMETIC_LIMIT)


MIN_CATEGORY_ROWS = 5  # rows of a category in one sample or the other for it to be compared on its own (chi-square's usual expected count)
RARE_CATEGORY = "(rare on both sides)"


def _one_spelling(values: pd.Series) -> pd.Series:
    """Each value in one spelling however it came (`spelling_key`): landed from CSV as `0.0` and served as `0`, one
    category's rows were two, and the column drifted on spelling alone (the estimation probe)."""
    changes = respelled(values.dropna().astype(str))
    return values.replace(changes) if changes else values


def _lumped(reference: pd.Series, current: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A categorical column (in one spelling per value) with the categories each sample holds fewer than
    MIN_CATEGORY_ROWS times as one category on both sides. Compared one by one, such categories are sampling noise: a
    store id of 3,000 values, its mix unchanged, drifted in every report (the own-dataset probe); a category common on
    either side, a new one among them, is compared on its own."""
    reference, current = _one_spelling(reference), _one_spelling(current)
    in_reference, in_current = reference.value_counts(), current.value_counts()
    kept = set(in_reference.index[in_reference >= MIN_CATEGORY_ROWS]) | set(in_current.index[in_current >= MIN_CATEGORY_ROWS])
    if kept >= set(in_reference.index) | set(in_current.index):
        return reference, current  # nothing rare on both sides: compared as they are

    def lump(column: pd.Series) -> pd.Series:
        return column.where(column.isna() | column.isin(kept), RARE_CATEGORY)

    return lump(reference), lump(current)


def _comparable(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames with each numeric column clipped to its `_bounds` and `settled` to about 12 digits, and each
    categorical feature's categories rare on both sides lumped (`_lumped`).

    Clipped: Evidently's histograms and distances fail on a range past the float limit; and above 1000 rows its test is
    the Wasserstein distance, which one valid but extreme value (1e308 in 2000 rows) made 5.6e96 standard deviations,
    the column drifted and with it the dataset. A shift stays a shift: the values beyond pile up at the bound, far from
    the reference. Settled: a numeric column of few values is tested value by value (chi-square, Jensen-Shannon), so a
    client's float parser spelling `-0.0446416365069891` for the export's `-0.044641636506989144` made every served
    value new and the column drifted."""
    bounds = {c: _bounds(reference[c]) for c in numeric}

    def prepare(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(**{c: settled(frame[c].clip(*bounds[c]).to_numpy(dtype="float64")) for c in numeric}) if numeric else frame

    reference, current = prepare(reference), prepare(current)
    lumped = {c: _lumped(reference[c], current[c]) for c in categorical}
    if lumped:
        reference = reference.assign(**{c: pair[0] for c, pair in lumped.items()})
        current = current.assign(**{c: pair[1] for c, pair in lumped.items()})
    return reference, current


TWO_SAMPLE_CHI_SQUARE = "chi-square two-sample p_value"  # its registered name, which a chosen method is shown by: a p-value (`_is_p_value`)
SMALL_REFERENCE_ROWS = 1000  # Evidently's own line: at most this many reference rows, few-valued columns get a p-value test, above it a distance
FEW_VALUES = 5  # a numeric column with at most this many values both sides together is tested as categories (Evidently's rule)
KOLMOGOROV_SMIRNOV = "ks"  # Evidently's name of its two-sample K-S test: its choice for a numeric column of a small reference


def _two_sample_chi_square(reference: pd.Series, current: pd.Series, feature_type: object, threshold: float) -> tuple[float, bool]:
    """Chi-square test of homogeneity of the two samples' value counts. Evidently's chi-square tests the current counts
    against the reference's shares as if they were exact: on a 200-row reference of a stationary stream, one column read
    p = 1e-7 where this test gives 0.075 (3 of 8 random splits were dataset drift), and one value only the current side
    has (an expected count of 0) made p = 0 (the estimation probe)."""
    from scipy.stats import chi2_contingency

    counts = pd.concat([reference.value_counts(), current.value_counts()], axis=1).fillna(0).to_numpy(dtype="float64").T
    if counts.shape[1] < 2 or (counts.sum(axis=1) == 0).any():
        return 1.0, False
    p_value = float(chi2_contingency(counts, correction=False).pvalue)
    return p_value, p_value < threshold


@functools.cache
def _registered_two_sample_test() -> str:
    """Registers the test with Evidently's stattest registry, the one its 0.7 presets resolve a method's name in; once."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    test = StatTest(name=TWO_SAMPLE_CHI_SQUARE, display_name=TWO_SAMPLE_CHI_SQUARE, allowed_feature_types=[ColumnType.Categorical, ColumnType.Numerical])
    register_stattest(test, default_impl=_two_sample_chi_square)
    return TWO_SAMPLE_CHI_SQUARE


def _counted(frame: pd.DataFrame, column: str) -> int:
    """A column's values as Evidently counts them: without missing and infinite ones."""
    return int(frame[column].replace([np.inf, -np.inf], np.nan).notna().sum())


def _small_sample_methods(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict[str, str]:
    """The columns whose test is a p-value where Evidently's own choice is not, and the test:

    - a small reference (at most SMALL_REFERENCE_ROWS values, counted per column: a 1,500-row reference of a column half
      missing is small), where Evidently gives categories and a numeric column of few values its one-sample chi-square
      (more than two values; two get its two-sample Z test): the two-sample chi-square;
    - a small current window beside a large reference, where Evidently reads a distance against a fixed 0.1 whatever
      the sample: categories (two values or more) and a few-valued numeric column, the two-sample chi-square; any other
      numeric column, Kolmogorov-Smirnov, Evidently's own small-sample test. A distance on a few hundred rows is mostly
      sampling noise: on a shuffled (stationary) stream, 412 current rows drifted 19 of 103 columns by Wasserstein, and
      200 ids drawn alike throughout drifted by Jensen-Shannon at 1,000 rows (the yeast probe)."""
    methods = {}
    for column in [*numeric, *categorical]:
        small_reference, small_current = _counted(reference, column) <= SMALL_REFERENCE_ROWS, _counted(current, column) <= SMALL_REFERENCE_ROWS
        if not (small_reference or small_current):
            continue
        values = pd.concat([reference[column], current[column]]).nunique()
        few = values <= FEW_VALUES if column in numeric else True
        if values > 2 and few or (small_current and not small_reference and values == 2 and few):
            methods[column] = _registered_two_sample_test()
        elif small_current and not small_reference and values > 2:
            methods[column] = KOLMOGOROV_SMIRNOV
    return methods


def _run_evidently(spec: DatasetSpec, reference: pd.DataFrame, current: pd.DataFrame, features: list[str], extra: list[str], share_threshold: float,
                   tags: list[str], metadata: dict[str, str], timestamp: datetime) -> Snapshot:
    """`timestamp`: UTC, naive, as Evidently's local storage compares them."""
    # Imported here: Evidently is most of the code location's import time, which every Dagster
    # code server and run worker pays, and only drift reports need it.
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    columns = features + extra
    numeric, categorical = _column_types(spec, columns)
    reference, current = _comparable(reference, current, numeric, [c for c in categorical if c in spec.categorical_features])
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    methods = _small_sample_methods(reference, current, numeric, categorical)
    items = [DataDriftPreset(columns=features, drift_share=share_threshold, per_column_method={c: m for c, m in methods.items() if c in features} or None)] if features else []
    items += [ValueDrift(column=c, method=methods.get(c)) for c in extra]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        snapshot = Report(items).run(
            Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
            Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition),
            timestamp=timestamp,
            tags=tags,
            metadata=metadata,
        )
    _drifted_rows_first(snapshot._widgets)  # the rendered tables: the snapshot saves its widgets
    return snapshot


def _drifted_rows_first(widgets: list[Any]) -> None:
    """Evidently's per-column table (10 rows a page) sorts by its raw score, highest first: under p-value tests the
    drifted columns, the lowest, came last, on the second page of a 13-column report. Drifted rows first, the most
    drifted first, as the platform's own drift table lists them."""
    for widget in widgets:
        params = widget.params
        if isinstance(params, dict) and "rowsPerPage" in params and isinstance(params.get("data"), list):
            params["data"].sort(key=lambda row: (row.get("data_drift") != "Detected",
                                                 float(row.get("drift_score") or 0) * (1 if _is_p_value(str(row.get("stattest_name"))) else -1)))
        _drifted_rows_first(list(widget.widgets or []))


def _verdicts(spec: DatasetSpec, snapshot_dict: dict[str, Any]) -> tuple[dict[str, ColumnDrift], int]:
    """Per-column drift from Evidently's ValueDrift results, and its DriftedColumnsCount."""
    found: dict[str, ColumnDrift] = {}
    evidently_count = 0
    for metric in snapshot_dict["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            evidently_count = int(metric["value"]["count"])
        elif config["type"].endswith("ValueDrift"):
            column, method, threshold, value = config["column"], str(config["method"]), float(config["threshold"]), float(metric["value"])
            drifted = value < threshold if _is_p_value(method) else value >= threshold
            kind = {PREDICTION_COLUMN: "prediction", LABEL: "target"}.get(column, "numeric" if column in spec.numeric_features else "categorical")
            found[column] = ColumnDrift(column, kind, method, value, threshold, bool(drifted))
    return found, evidently_count


def compare(spec: DatasetSpec, reference: pd.DataFrame, current: pd.DataFrame, share_threshold: float, report_path: Path,
            tags: list[str] | None = None, inputs: Collection[str] | None = None,
            metadata: dict[str, str] | None = None) -> tuple[list[ColumnDrift], ColumnDrift | None, ColumnDrift | None, int]:
    """Evidently on the two frames: feature verdicts, prediction drift, target drift (if current has labels) and Evidently's
    count; its snapshot (timestamped when it ran, with `tags` and `metadata`) is saved at `report_path` (`<name>.json.xz`, rendered as
    HTML on demand). When it ran, not the data's newest time: with landed and served events on two clocks, a report
    of late-landed older events has no newer data time, and two reports fell on one point of the dashboard. `inputs`:
    the features the champion reads (None: all of the spec's)."""
    features, decided = _presence(spec, reference, current, inputs)
    extra = [c for c in (PREDICTION_COLUMN, LABEL) if c in current and c in reference and current[c].notna().any() and reference[c].notna().any()]
    snapshot = _run_evidently(spec, reference, current, features, extra, share_threshold, tags or [], metadata or {}, naive_utc(time.time_ns() // 1000))
    found, evidently_count = _verdicts(spec, snapshot.dict())
    save_snapshot(snapshot, report_path)
    order = {c: i for i, c in enumerate(spec.features)}
    columns = sorted([found[c] for c in features] + decided, key=lambda c: order[c.column])
    return columns, found.get(PREDICTION_COLUMN), found.get(LABEL), evidently_count


FEATURES_ONLY = ("the model has history features, which a random sample of events has not: the report compares the features (and "
                 "the labels, where they came back), with no prediction drift nor live metrics; live_quality scores what the model served")


def live_metrics(spec: DatasetSpec, current: pd.DataFrame, predictor: Predictor) -> dict[str, float]:
    """The champion's metrics on the labelled part of the current sample; empty without labels."""
    labelled = current[current[LABEL].notna()]
    if labelled.empty or predictor.transformer.history:
        return {}
    return {k: v for k, v in score(spec, labelled[LABEL], predictor.predict(labelled)).items() if not math.isnan(v)}


def snapshot_metadata(model: str, window: ReferenceWindow, bounds: CurrentWindow, reference_rows: int, current_rows: int) -> dict[str, str]:
    """What the Evidently UI shows beside a drift snapshot: which model and champion, and which events each side is (the
    snapshot alone held the samples, not where they came from)."""
    return {"model": model, "champion_version": str(window.version), **{k: str(v) for k, v in window.span().items()},
            "reference_rows": str(reference_rows), "current_rows": str(current_rows), **bounds.described()}


def build_drift_report(settings: Settings, spec: DatasetSpec, log: EventStore, registry: Registry) -> DriftReport | DriftSkipped:
    """The drift report of the current champion, or why there is none (no champion, too few events)."""
    started = time.perf_counter()
    config = DriftConfig.from_settings(settings)
    champion = registry.champion()
    if champion is None:
        return DriftSkipped("no champion yet: drift is measured against the champion's training window; train and promote a first model")
    window = ReferenceWindow.of(champion)
    bounds = current_window(log, window, config.current_hours)
    current_rows = 0 if bounds is None else bounds.count(log)
    if current_rows < config.min_current_rows:
        return DriftSkipped(
            f"{current_rows} events since champion v{window.version}'s data window; at least {config.min_current_rows} are needed for a drift report",
            window.version,
            current_rows,
        )
    assert bounds is not None
    predictor = registry.load_predictor(window.version)
    reference = reference_side(log, spec, window, predictor, config.sample_rows, settings.reports_dir / "drift" / "reference")
    if reference.sample.empty:
        return DriftSkipped(f"champion v{window.version}'s training window holds no events in this event log", window.version, current_rows)
    current = _with_predictions(spec, bounds.sample(log, config.sample_rows), predictor)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 1_000_000_000:09d}"
    drift_dir = settings.reports_dir / "drift"
    path = drift_dir / f"{spec.name}-v{window.version}-{stamp}{SNAPSHOT_SUFFIX}"
    columns, prediction, target, evidently_count = compare(spec, reference.sample, current, config.share_threshold, path,
                                                           snapshot_tags(spec.name, window.version), predictor.transformer.input_columns,
                                                           snapshot_metadata(spec.name, window, bounds, reference.rows, current_rows))
    challenger = registry.version_by_alias(CHALLENGER)
    pruned = prune_drift_reports(drift_dir, spec.name, settings.drift_reports_keep, {window.version, *([int(challenger.version)] if challenger else [])},
                                 in_use=reference_cache_name(spec, window, config.sample_rows))
    return DriftReport(
        champion_version=window.version,
        reference=window,
        reference_rows=reference.rows,
        current_rows=current_rows,
        reference_sampled=len(reference.sample),
        current_sampled=len(current),
        current_labelled=int(current[LABEL].notna().sum()),
        current_until_us=bounds.end_us - 1,
        columns=columns,
        prediction=prediction,
        target=target,
        live_metrics=live_metrics(spec, current, predictor),
        share_threshold=config.share_threshold,
        evidently_drifted=evidently_count,
        report_path=path,
        seconds=time.perf_counter() - started,
        pruned=pruned,
        features_only=bool(predictor.transformer.history),
    )


def publish_drift_report(settings: Settings, spec: DatasetSpec, report_path: Path) -> WorkspaceEntry:
    """Add a stored drift report's snapshot to the model's project in the Evidently workspace, or say why it was not:
    best effort, as the workspace is a view over the reports folder (a report pruned or unreadable by now is not added)."""
    assert settings.evidently_workspace_dir is not None  # resolved by Settings
    try:
        snapshot = load_snapshot(report_path)
    except (OSError, ReportUnreadable) as exc:
        return WorkspaceEntry(error=f"Evidently workspace {settings.evidently_workspace_dir} not updated: {type(exc).__name__}: {exc}"[:500])
    found, _ = _verdicts(spec, snapshot.dict())
    top = [c.column for c in most_drifted([c for name, c in found.items() if name in spec.features])[:TOP_COLUMNS]]
    return add_drift_snapshot(settings.evidently_workspace_dir, spec.name, snapshot, html_path(report_path).stem, top, settings.drift_reports_keep)
