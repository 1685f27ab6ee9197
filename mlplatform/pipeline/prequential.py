"""Prequential (test-then-train) evaluation of retraining policies on a replayed stream.

Each event is predicted by the model in service at that moment, then its label is revealed. Batch
policies may refit between blocks of events (a block is one sensor tick); the online reference learns
after every event. The platform's policy is not re-implemented here: it calls the sensor's decision
(`policy.decide`), the features step (`retraining.prepare_window`), training (`retraining.train_on_best_window`,
the trained_model step's choice among candidate windows and its refit on the hold-out) and the promotion rule (`retraining.judge`,
on the validation model's hold-out predictions) — the code the assets run.
Its quality_drop reading is live_quality's (`live_quality.realized_reading`) on the blocks the champion served.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.domain.correction import ResidualCorrector
from mlplatform.pipeline.drift import compare
from mlplatform.domain.evaluation import score
from mlplatform.domain.history import history_frame
from mlplatform.domain.policy import DRIFT, QUALITY_DROP, RECORD_SIZE, Cursor, Observation, PerformanceReading, RetrainOutcome, decide
from mlplatform.pipeline.live_quality import realized_reading
from mlplatform.domain.predictor import PREDICTION, PROBABILITY, Predictor
from mlplatform.pipeline.replay import DriftScenario, read_source, select_stream
from mlplatform.pipeline.retraining import change_window, evidence_on, judge, prepare_window, train_on_best_window
from mlplatform.settings import Settings
from mlplatform.domain.spec import LABEL_REF, DatasetSpec, Task
from mlplatform.domain.training import TrainingConfig, train
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL, validate_frame

# A drift check: (reference window, current window) -> (drift detected, share of drifted columns).
DriftCheck = Callable[[pd.DataFrame, pd.DataFrame], tuple[bool, float]]


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked (stream too short, bad sizes); the message says why."""


@dataclass
class PolicyStats:
    fits: int = 0
    train_seconds: float = 0.0
    promotions: int = 0
    triggers: Counter[str] = field(default_factory=Counter)
    drift_reports: int = 0  # drift reports made: with none, "0 drift-triggered retrains" tested nothing


def stream_events(spec: DatasetSpec, *, order: str = "time", seed: int = 0, count: int = 0, scenario: DriftScenario | None = None, drift_from: int = 0,
                  notes: list[str] | None = None) -> pd.DataFrame:
    """The replayed rows as validated events (canonical columns, event_time in µs), in stream order.

    Events are stamped with the stream's times in arrival order (the sorted times: in time order, their own), as a live
    stream's would be. Shuffled, the source's times would jump back and forth, and the platform's clock (`now`, its
    cool-down) with them, holding retrainings in cool-down at random. With `notes`, source rows landing would quarantine
    are left out and said there (`replay.read_source`)."""
    rows = select_stream(read_source(spec, notes), spec, order=order, seed=seed, count=count, scenario=scenario, drift_from=drift_from)
    validated = validate_frame(rows, spec, generated_id_prefix=spec.name, generated_time_start_us=0)
    events = validated.events
    events = events[events[LABEL].notna()].reset_index(drop=True)
    return events.assign(**{EVENT_TIME: np.sort(events[EVENT_TIME].to_numpy())})


def with_stream_history(events: pd.DataFrame, spec: DatasetSpec, label_delay: int = 0) -> pd.DataFrame:
    """`events` (stream order) with the spec's history columns, each label known `label_delay` events after its own event
    (0: right after its prediction, the classic protocol), by the platform's point-in-time rule (`history.history_frame`).

    The clock is the stream's own (`stream_events`' arrival-stamped times), so time windows (`window: 24h`) and `since`
    mean what the spec says. A label is known 1 µs after the event `label_delay` events later: never before an event
    of the same time (ties reveal it later, never early), and labels due after the stream's end are never known in it.
    """
    if spec.history is None:
        return events
    if label_delay < 0:
        raise BenchmarkError(f"label delay must be ≥ 0 events, got {label_delay}")
    n = len(events)
    position = np.arange(n, dtype="int64")
    times = events[EVENT_TIME].to_numpy(dtype="int64")
    due = position + label_delay
    known = np.where(due < n, times[np.minimum(due, max(n - 1, 0))] + 1, times[-1] + 2 if n else 0)
    log = events.assign(seq=position + 1, ingested_at=times, source="landing", label_time=known, label_seq=position + 1)
    return events.join(history_frame(log, spec))


def evidently_drift_check(spec: DatasetSpec, settings: Settings, report_path: Path) -> DriftCheck:
    """The drift report's Evidently comparison (`drift.compare`) on samples of the two windows, and its
    dataset-drift rule: at least `drift_share_threshold` of the feature columns drifted.

    Verdicts are remembered by the windows' event-id spans: policies that hold the same champion at the
    same moment (the platform variants usually do) share one report instead of recomputing it.
    """
    seen: dict[tuple[str, ...], tuple[bool, float]] = {}

    def check(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[bool, float]:
        key = tuple(str(frame[EVENT_ID].iloc[i]) for frame in (reference, current) for i in (0, -1))
        if key not in seen:
            seen[key] = verdict(reference, current)
        return seen[key]

    def verdict(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[bool, float]:
        n = settings.drift_sample_rows
        ref = reference.sample(n, random_state=settings.seed) if len(reference) > n else reference
        cur = current.sample(n, random_state=settings.seed) if len(current) > n else current
        columns, _, _, _ = compare(spec, ref, cur, settings.drift_share_threshold, report_path)
        share = sum(c.drifted for c in columns) / len(columns) if columns else 0.0
        return bool(columns) and share >= settings.drift_share_threshold, share

    return check


class Policy(ABC):
    """Something that serves predictions on a stream and may learn from the labels it is shown."""

    name: str

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.stats = PolicyStats()

    @abstractmethod
    def start(self, warmup: pd.DataFrame) -> None:
        """Learn from the first window, before evaluation starts."""

    @abstractmethod
    def serve(self, block: pd.DataFrame) -> pd.DataFrame:
        """Predict every event of `block`, in order; labels of the block may be used only after each prediction."""

    def observe(self, history: pd.DataFrame) -> None:
        """All labelled events up to the end of the last block are known now (a sensor tick)."""


class BatchPolicy(Policy):
    """A LightGBM model in service, refitted by the subclass's rule."""

    def __init__(self, spec: DatasetSpec, config: TrainingConfig) -> None:
        super().__init__(spec)
        self.config = config
        self.predictor: Predictor | None = None

    def fit(self, window: pd.DataFrame) -> Predictor:
        started = time.perf_counter()
        result = train(window, self.spec, self.config)
        self.stats.fits += 1
        self.stats.train_seconds += time.perf_counter() - started
        return result.predictor

    def start(self, warmup: pd.DataFrame) -> None:
        self.predictor = self.fit(warmup)

    def serve(self, block: pd.DataFrame) -> pd.DataFrame:
        assert self.predictor is not None
        return self.predictor.predict(block)


class StaticPolicy(BatchPolicy):
    name = "static (first window)"


class IntervalPolicy(BatchPolicy):
    """Retrain every `every` labelled events, on all data so far or on the latest `window` events."""

    def __init__(self, spec: DatasetSpec, config: TrainingConfig, every: int, window: int | None = None) -> None:
        super().__init__(spec, config)
        if every < 1 or (window is not None and window < config.min_rows):
            raise BenchmarkError(f"retrain interval must be ≥ 1 and the window ≥ {config.min_rows} rows (got {every}, {window})")
        self.every, self.window = every, window
        self.name = f"every {every}, " + ("all data" if window is None else f"last {window}")
        self.last_fit = 0

    def start(self, warmup: pd.DataFrame) -> None:
        super().start(warmup)
        self.last_fit = len(warmup)

    def observe(self, history: pd.DataFrame) -> None:
        if len(history) - self.last_fit >= self.every:
            self.predictor = self.fit(history if self.window is None else history.iloc[-self.window :])
            self.last_fit = len(history)


class NoChangePolicy(Policy):
    """The baseline that needs no model: predict the last label revealed (`label_delay` events back), of the stream or,
    with `key`, of the event's own key (the last count of this store); a platform that loses to it is not adapting."""

    def __init__(self, spec: DatasetSpec, label_delay: int = 0, key: str | None = None) -> None:
        super().__init__(spec)
        self.delay = label_delay
        self.key = key
        self.name = f"no-change (last label known{f' per {key}' if key else ''})"
        self.labels: list[Any] = []
        self.keys: list[Any] = []
        self._last: dict[Any, Any] = {}  # each key's last revealed label
        self._revealed = 0  # labels of events [0, _revealed) are in _last

    def start(self, warmup: pd.DataFrame) -> None:
        self.labels, self.keys, self._last, self._revealed = [], [], {}, 0
        self._take(warmup)

    def _take(self, block: pd.DataFrame) -> None:
        self.labels += block[LABEL].tolist()
        self.keys += [None] * len(block) if self.key is None else [None if pd.isna(k) else k for k in block[self.key].tolist()]

    def serve(self, block: pd.DataFrame) -> pd.DataFrame:
        """Event i gets the last label of its key among events up to i - 1 - delay; a key with none yet, the stream's
        (at the very start, the first label)."""
        first = len(self.labels)
        self._take(block)
        predictions = []
        stream_last = self.labels[0] if self.labels else None
        for i in range(first, len(self.labels)):
            while self._revealed <= i - 1 - self.delay:
                self._last[self.keys[self._revealed]] = self._last[_STREAM] = self.labels[self._revealed]
                self._revealed += 1
            predictions.append(self._last.get(self.keys[i], self._last.get(_STREAM, stream_last)))
        frame = pd.DataFrame({PREDICTION: predictions}, index=block.index)
        if self.spec.task is Task.binary:
            frame[PROBABILITY] = (frame[PREDICTION] == self.spec.positive_class).astype("float64")
        elif self.spec.task is Task.multiclass:
            frame[PROBABILITY] = 1.0
            for c in self.spec.classes or []:
                frame[f"proba_{c}"] = (frame[PREDICTION] == c).astype("float64")
        return frame


_STREAM = object()  # NoChangePolicy's key for the stream's own last label


def label_keys(spec: DatasetSpec) -> list[str]:
    """The keys the spec's history reads labels by: each one's no-change baseline is the fair one for its entities."""
    features = spec.history.features if spec.history is not None else []
    return list(dict.fromkeys(f.by for f in features if f.by is not None and f.source == LABEL_REF))


class PlatformPolicy(Policy):
    """The sensor's decision, the assets' training and promotion, on a simulated clock (event time).

    Optional additions (step 3): `half_life` weights training rows by recency (weight ½ per `half_life`
    events of age); `correction` serves the champion through an online ResidualCorrector fed by labels.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        settings: Settings,
        drift_check: DriftCheck | None = None,
        half_life: float | None = None,
        correction: ResidualCorrector | None = None,
        name: str = "platform policy",
    ) -> None:
        super().__init__(spec)
        if half_life is not None and half_life <= 0:
            raise BenchmarkError(f"recency half-life must be > 0 events, got {half_life}")
        self.settings = settings
        self.config = settings.policy_config(estimated_drop=False)
        self.drift_check = drift_check
        self.half_life = half_life
        self.correction = correction
        self.name = name
        self.champion: Predictor | None = None
        self.champion_cutoff: int | None = None
        self.decided = ""  # the latest decision's reason: why a first model was refused, said
        self.champion_refit = False  # refit on its hold-out: judged against on the rows after its cut-off (retraining.judge)
        self.champion_evidence: pd.DataFrame | None = None  # a refit champion's validation predictions on its hold-out, by event id
        self.reference: pd.DataFrame | None = None
        self.cursor = Cursor()
        self.record: tuple[RetrainOutcome, ...] = ()  # the policy's own record, newest first, as trigger.policy_record reads it
        self.last_report = 0
        self.drift: tuple[bool | None, float | None, str | None] = (None, None, None)
        self.served: list[tuple[int | None, pd.Series, pd.DataFrame]] = []  # (the champion's cut-off, labels, what it served) per block
        self.holdout_reference: dict[str, float] = {}  # the champion's validation model's metrics on its hold-out (live_quality's reference)

    def _weights(self, n: int) -> np.ndarray | None:
        if self.half_life is None:
            return None
        return np.power(0.5, (n - 1 - np.arange(n)) / self.half_life)

    def _retrain(self, history: pd.DataFrame) -> bool:
        """features → trained_model → evaluation_report (promotion), as the assets do it, on the latest window; promoted?"""
        window = history.iloc[-self.settings.training_window :]
        started = time.perf_counter()
        train_part, holdout, transformer = prepare_window(self.settings, self.spec, window)
        unseen = None if self.champion_cutoff is None else np.arange(len(history) - len(window), len(history)) >= self.champion_cutoff
        since_change = change_window(self.settings, window.reset_index(drop=True), self.champion, unseen)
        fit = train_on_best_window(self.settings, self.spec, train_part, holdout, transformer, weights=self._weights, since_change=since_change)
        unseen = None if not self.champion_refit else np.arange(len(history) - len(holdout), len(history)) >= self.champion_cutoff
        evidence = fit.validation.predictor.predict(holdout)
        recorded = None if self.champion_evidence is None else evidence_on(self.champion_evidence, holdout)
        verdict = judge(self.settings, self.spec, holdout, evidence, self.champion, unseen, recorded, train_part[LABEL])
        self.stats.fits += 1
        self.stats.train_seconds += time.perf_counter() - started
        self.decided = verdict.decision.reason
        if verdict.decision.promote:
            self.stats.promotions += 1
            self.champion = fit.served.predictor
            self.champion_refit = fit.refit_rows > 0
            self.champion_evidence = evidence.set_axis(holdout[EVENT_ID]) if self.champion_refit else None  # as trained_model records it
            self.champion_cutoff = len(history)
            self.holdout_reference = score(self.spec, holdout[LABEL], evidence)  # as the asset's estimator: out of sample, refit or not
            self.reference = train_part
            self.last_report = len(history)
            self.drift = (None, None, None)
            if self.correction is not None:
                self.correction.reset()
        return verdict.decision.promote

    def start(self, warmup: pd.DataFrame) -> None:
        self._retrain(warmup)
        if self.champion is None:
            raise BenchmarkError(f"the first model on the warm-up window was not promoted: {self.decided}")

    def serve(self, block: pd.DataFrame) -> pd.DataFrame:
        assert self.champion is not None
        predicted = self.champion.predict(block)
        served = predicted if self.correction is None else self.correction.apply(block, predicted, block[LABEL], self.champion.threshold)
        self.served.append((self.champion_cutoff, block[LABEL], served))
        return served

    def _realized(self, history: pd.DataFrame) -> tuple[PerformanceReading | None, str]:
        """The reading live_quality makes: the champion's latest `quality_drop_events` served predictions whose labels are
        known, against its hold-out reference."""
        self.served = [(cutoff, labels, served) for cutoff, labels, served in self.served if cutoff == self.champion_cutoff]
        if not self.served:
            return None, "no labelled served predictions of the champion yet"
        labels, served = pd.concat([s[1] for s in self.served]), pd.concat([s[2] for s in self.served])
        known = labels.index < len(history)
        n = self.settings.quality_drop_events
        reading = realized_reading(self.spec, labels[known].iloc[-n:], served[known].iloc[-n:], self.holdout_reference)
        return (None, reading) if isinstance(reading, str) else (reading.as_reading(f"quality-{len(history)}"), "")

    def _drift_report(self, history: pd.DataFrame) -> None:
        """A new drift report every `drift_every_n_events` events, as the drift sensor requests them."""
        assert self.champion_cutoff is not None and self.reference is not None
        current = history.iloc[self.champion_cutoff :]
        if self.drift_check is None or len(history) - self.last_report < self.settings.drift_every_n_events:
            return
        if len(current) < self.settings.drift_min_current_rows:
            return
        self.last_report = len(history)
        self.stats.drift_reports += 1
        detected, share = self.drift_check(self.reference, current)
        self.drift = (detected, share, f"report-{self.last_report}")

    def observe(self, history: pd.DataFrame) -> None:
        self._drift_report(history)
        detected, share, report_id = self.drift
        now = float(history[EVENT_TIME].iloc[-1]) / 1e6
        quality, quality_note = self._realized(history)
        observation = Observation(len(history), self.champion_cutoff, now, detected, share, report_id, quality=quality, quality_note=quality_note,
                                  record=self.record)
        trigger, self.cursor, _ = decide(observation, self.cursor, self.config)
        if trigger is not None:
            self.stats.triggers[trigger.reason] += 1
            self.record = (RetrainOutcome(trigger.reason, self._retrain(history), trigger.label_watermark), *self.record)[:RECORD_SIZE]


class RiverPolicy(Policy):
    """River's Adaptive Random Forest: predict, then learn, one event at a time (the online reference)."""

    def __init__(self, spec: DatasetSpec, n_models: int = 10, seed: int = 7) -> None:
        super().__init__(spec)
        try:
            from river import forest
        except ImportError:
            raise BenchmarkError("the online reference needs River: install the 'bench' extra (make install does)") from None
        self.name = f"River ARF ({n_models} trees)"
        self.model: Any = (forest.ARFRegressor if spec.task is Task.regression else forest.ARFClassifier)(n_models=n_models, seed=seed)

    def _records(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Dicts of what a platform model reads (the features and the spec's history columns) without missing values; for
        regression categoricals are one-hot (its leaves are linear models). With the features alone, the ARF row beside a
        history spec's rows scored as if the spec had none (the history probe)."""
        numeric, categorical_inputs = self.spec.model_inputs
        columns = {name: frame[name].tolist() for name in (*numeric, *categorical_inputs)}
        one_hot = self.spec.task is Task.regression
        categorical = set(categorical_inputs)
        records = []
        for values in zip(*columns.values()):
            record: dict[str, Any] = {}
            for name, value in zip(columns, values):
                if pd.isna(value):
                    continue
                if one_hot and name in categorical:
                    record[f"{name}={value}"] = 1.0
                else:
                    record[name] = value
            records.append(record)
        return records

    def _learn(self, x: dict[str, Any], y: Any) -> None:
        started = time.perf_counter()
        self.model.learn_one(x, float(y) if self.spec.task is Task.regression else str(y))
        self.stats.train_seconds += time.perf_counter() - started

    def start(self, warmup: pd.DataFrame) -> None:
        for x, y in zip(self._records(warmup), warmup[LABEL]):
            self._learn(x, y)

    def serve(self, block: pd.DataFrame) -> pd.DataFrame:
        rows: list[dict[str, Any]] = []
        classes = self.spec.classes or []
        for x, y in zip(self._records(block), block[LABEL]):
            if self.spec.task is Task.regression:
                rows.append({PREDICTION: float(self.model.predict_one(x) or 0.0)})
            else:
                proba = self.model.predict_proba_one(x)
                probs = {c: float(proba.get(c, 0.0)) for c in classes}
                best = max(classes, key=lambda c: probs[c])
                row: dict[str, Any] = {PREDICTION: best}
                if self.spec.task is Task.binary:
                    row[PROBABILITY] = probs[self.spec.positive_class or ""]
                else:
                    row[PROBABILITY] = probs[best]
                    row.update({f"proba_{c}": probs[c] for c in classes})
                rows.append(row)
            self._learn(x, y)
        return pd.DataFrame(rows, index=block.index)


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    metrics: dict[str, float]
    fits: int
    train_seconds: float
    promotions: int
    triggers: dict[str, int]
    wall_seconds: float
    drift_reports: int = 0

    @property
    def drift_triggers(self) -> int:
        return self.triggers.get(DRIFT, 0)

    @property
    def quality_triggers(self) -> int:
        return self.triggers.get(QUALITY_DROP, 0)


def run_prequential(events: pd.DataFrame, spec: DatasetSpec, policy: Policy, warmup: int, block: int, label_delay: int = 0) -> PolicyResult:
    """Warm up on the first `warmup` events, then predict block by block; after each block, the labels of all but
    the last `label_delay` events are revealed to the policy's training (0: every label of the block)."""
    if warmup < 1 or block < 1:
        raise BenchmarkError(f"warm-up and block must be ≥ 1 (got {warmup}, {block})")
    if len(events) <= warmup:
        raise BenchmarkError(f"the stream has {len(events)} labelled events; more than the warm-up ({warmup}) are needed")
    started = time.perf_counter()
    policy.start(events.iloc[:warmup])
    predictions = []
    for start in range(warmup, len(events), block):
        chunk = events.iloc[start : start + block]
        predictions.append(policy.serve(chunk))
        policy.observe(events.iloc[: max(warmup, start + len(chunk) - label_delay)])
    predicted = pd.concat(predictions)
    metrics = score(spec, events[LABEL].iloc[warmup:], predicted)
    stats = policy.stats
    return PolicyResult(policy.name, metrics, stats.fits, stats.train_seconds, stats.promotions, dict(stats.triggers), time.perf_counter() - started,
                        stats.drift_reports)
