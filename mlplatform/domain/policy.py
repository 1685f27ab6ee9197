"""When to retrain: the retraining sensor's decision as a pure function, reused by the benchmarks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from mlplatform.domain.estimation import HIGHER_IS_BETTER, worse_by
from mlplatform.domain.keys import (CHAMPION_CUTOFF_TAG, DRIFT_REPORT_TAG, DRIFT_SHARE_TAG, ESTIMATE_TAG, ESTIMATED_BAND_TAG, ESTIMATED_EVENTS_TAG,
                                   ESTIMATED_METRIC_TAG, ESTIMATED_REFERENCE_TAG, ESTIMATED_VALUE_TAG, LABEL_WATERMARK_TAG, NEW_LABELLED_TAG,
                                   PROMOTED, REASON_TAG, REJECTED)

NEW_OBSERVATIONS = "new_observations"
DRIFT = "drift"
ESTIMATED_DROP = "estimated_drop"


@dataclass(frozen=True)
class PolicyConfig:
    every_n: int
    min_new_for_drift: int
    cooldown_seconds: float
    estimated_drop_margin: float | None = None  # relative: 0.05 = estimate 5 % worse than the reference; None: off
    estimated_drop_events: int = 0  # the estimate must cover at least this many recent events


RECORD_SIZE = 5  # the latest retrainings the policy learns from: a bar that doubles reaches every_n in a few steps


@dataclass(frozen=True)
class RetrainOutcome:
    """One retraining the policy triggered and what its evaluation decided: True promoted, False rejected, None not known
    (still running, failed before its evaluation, waiting for shadow evidence, or nothing readable recorded)."""

    reason: str
    promoted: bool | None
    label_watermark: int  # the trigger's: one at or below the champion's cut-off predates the champion

    @classmethod
    def recorded(cls, reason: object, decision: object, label_watermark: object) -> "RetrainOutcome":
        """From what a trigger run and its evaluation recorded; anything unreadable is an unknown outcome, never a failure."""
        verdict = {PROMOTED: True, REJECTED: False}.get(decision) if isinstance(decision, str) else None
        try:
            watermark = max(0, int(str(label_watermark)))
        except ValueError:
            watermark, verdict = 0, None
        return cls(reason if isinstance(reason, str) else "", verdict, watermark)


@dataclass(frozen=True)
class DriftBar:
    """The new labelled events a drift trigger needs now, learnt from the policy's own record.

    A drift retraining whose challenger is not promoted was a false alarm for this stream (drift the champion copes with,
    or one the labels cannot yet teach): each one since the latest promotion doubles the bar, up to every_n, where drift
    no longer triggers before the label count does. A promotion resets the bar, whatever triggered it, and so does a
    champion set by hand (retrainings triggered at or before its cut-off do not count). On a stream that drifts all the
    time this stops the policy from retraining at every report while its challengers keep losing."""

    labels: int
    unpromoted: int  # drift retrainings not promoted since the latest promotion, within the record

    @classmethod
    def of(cls, record: Sequence[RetrainOutcome], config: PolicyConfig, champion_cutoff: int) -> "DriftBar":
        """`record`: the latest retrainings the policy triggered, newest first (only the first RECORD_SIZE count)."""
        unpromoted = 0
        for outcome in list(record)[:RECORD_SIZE]:
            if outcome.promoted or outcome.label_watermark <= champion_cutoff:
                break
            unpromoted += outcome.reason == DRIFT and outcome.promoted is False
        base = config.min_new_for_drift
        labels = base if unpromoted == 0 else max(base, min(config.every_n, max(base, 1) << unpromoted))
        return cls(labels, unpromoted)

    def summary(self, config: PolicyConfig) -> str:
        """Why the bar is where it is, for the skip and trigger sentences."""
        if self.unpromoted == 0:
            return f"drift bar {self.labels} new labelled events (no unpromoted drift retraining since the latest promotion)"
        runs = "retraining was" if self.unpromoted == 1 else "retrainings were"
        paused = f", the label count's: drift waits for the every-{config.every_n} retraining" if self.labels >= config.every_n else ""
        return (f"drift bar {self.labels} new labelled events{paused} (doubled from {config.min_new_for_drift}: {self.unpromoted} drift "
                f"{runs} not promoted since the latest promotion)")


@dataclass(frozen=True)
class EstimatedPerformance:
    """The latest estimate of the champion's performance over its most recent events (no labels needed)."""

    report_id: str
    metric: str
    estimate: float
    lower: float
    upper: float
    reference: float  # the champion's realized performance on its own hold-out
    events: int

    def summary(self) -> str:
        worse = worse_by(self.metric, self.estimate, self.reference)
        return (f"estimated {self.metric} {self.estimate:.4f} (95 % band {self.lower:.4f}-{self.upper:.4f}, {self.events} events) "
                f"vs reference {self.reference:.4f}: {worse:.1%} worse")

    def dropped(self, margin: float) -> bool:
        """Worse than the reference by `margin` (relative), with the reference outside the band."""
        outside = self.upper < self.reference if HIGHER_IS_BETTER[self.metric] else self.lower > self.reference
        return outside and worse_by(self.metric, self.estimate, self.reference) >= margin


@dataclass(frozen=True)
class Observation:
    """What one tick knows: counts and the latest drift verdict, nothing that needs a scan."""

    label_watermark: int
    champion_cutoff: int | None  # None: there is no champion yet
    now: float
    drift_detected: bool | None = None
    drift_share: float | None = None
    drift_report_id: str | None = None
    drift_note: str = ""  # why the drift verdict is unknown (no report, skipped, about an older champion)
    estimate: EstimatedPerformance | None = None
    estimate_note: str = ""  # why there is no usable estimate (none yet, skipped, no estimator, about an older champion)
    record: tuple[RetrainOutcome, ...] = ()  # the latest retrainings the policy triggered, newest first (DriftBar)

    def drift_summary(self, cursor: "Cursor", bar: DriftBar, config: PolicyConfig) -> str:
        """The drift half of a skip reason."""
        if self.drift_detected is None:
            verdict = self.drift_note or "no drift verdict"
        elif not self.drift_detected:
            verdict = f"latest drift report: no dataset drift (share {self.drift_share or 0.0:.2f})"
        elif self.drift_report_id == cursor.last_drift_report:
            verdict = "the latest drift report's drift already triggered a retraining"
        else:
            verdict = f"latest drift report: drift (share {self.drift_share or 0.0:.2f})"
        return f"{verdict}; {bar.summary(config)}"

    def estimate_summary(self, cursor: "Cursor", config: PolicyConfig) -> str:
        """The estimated-drop half of a skip reason."""
        if config.estimated_drop_margin is None:
            return "estimated drop: off"
        if self.estimate is None:
            return self.estimate_note or "no performance estimate"
        if self.estimate.report_id == cursor.last_estimate:
            return "the latest performance estimate already triggered a retraining"
        if self.estimate.events < config.estimated_drop_events:
            return f"performance estimate over {self.estimate.events} events; {config.estimated_drop_events} needed"
        return f"{self.estimate.summary()} (a drop is {config.estimated_drop_margin:.0%} worse, outside the band)"

    def estimated_drop(self, cursor: "Cursor", config: PolicyConfig) -> bool:
        e = self.estimate
        return (config.estimated_drop_margin is not None and e is not None and e.report_id != cursor.last_estimate
                and e.events >= config.estimated_drop_events and e.dropped(config.estimated_drop_margin))


@dataclass
class Cursor:
    """Survives restarts as JSON in the sensor's cursor."""

    last_trigger_seq: int = 0
    last_trigger_time: float = 0.0
    last_drift_report: str | None = None
    last_estimate: str | None = None
    version: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> tuple["Cursor", bool]:
        """The cursor, and whether it had to be reset (absent, corrupt or of an older format)."""
        if not text:
            return cls(), False
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != 1:
                raise ValueError("old or unknown cursor format")
            return cls(
                last_trigger_seq=int(data["last_trigger_seq"]),
                last_trigger_time=float(data["last_trigger_time"]),
                last_drift_report=None if data.get("last_drift_report") is None else str(data["last_drift_report"]),
                last_estimate=None if data.get("last_estimate") is None else str(data["last_estimate"]),
            ), False
        except (ValueError, KeyError, TypeError):
            return cls(), True


@dataclass(frozen=True)
class Trigger:
    reason: str
    run_key: str
    new_labelled: int
    label_watermark: int
    drift_share: float | None = None
    tags: dict[str, str] = field(default_factory=dict)


def decide(obs: Observation, cursor: Cursor, config: PolicyConfig) -> tuple[Trigger | None, Cursor, str]:
    """A trigger (or None), the next cursor and a sentence that says why."""
    if obs.champion_cutoff is None:
        return None, cursor, "no champion yet: train and promote a first model (make demo, or materialize the retraining assets)"
    base = max(obs.champion_cutoff, cursor.last_trigger_seq)
    new = max(0, obs.label_watermark - base)
    since_champion = max(0, obs.label_watermark - obs.champion_cutoff)
    if cursor.last_trigger_time and obs.now - cursor.last_trigger_time < config.cooldown_seconds:
        left = config.cooldown_seconds - (obs.now - cursor.last_trigger_time)
        return None, cursor, f"cool-down: {left:.0f}s left before another retraining may start"
    trigger = None
    bar = DriftBar.of(obs.record, config, obs.champion_cutoff)
    if new >= config.every_n:
        trigger = Trigger(NEW_OBSERVATIONS, f"{NEW_OBSERVATIONS}-{obs.label_watermark}", new, obs.label_watermark)
    elif obs.drift_detected and obs.drift_report_id and obs.drift_report_id != cursor.last_drift_report:
        if new >= bar.labels:
            trigger = Trigger(DRIFT, f"{DRIFT}-{obs.drift_report_id}", new, obs.label_watermark, obs.drift_share)
        else:
            return None, cursor, f"drift detected, waiting for labels: {new} new labelled events of {bar.labels} needed; {bar.summary(config)}"
    elif obs.estimate is not None and obs.estimated_drop(cursor, config):
        trigger = Trigger(ESTIMATED_DROP, f"{ESTIMATED_DROP}-{obs.estimate.report_id}", new, obs.label_watermark)
    if trigger is None:
        return None, cursor, (
            f"{new} new labelled events since the last trigger ({since_champion} since the champion's cut-off); "
            f"{config.every_n} needed; {obs.drift_summary(cursor, bar, config)}; {obs.estimate_summary(cursor, config)}"
        )
    tags = {
        REASON_TAG: trigger.reason,
        NEW_LABELLED_TAG: str(new),
        LABEL_WATERMARK_TAG: str(obs.label_watermark),
        CHAMPION_CUTOFF_TAG: str(obs.champion_cutoff),
    }
    if trigger.reason == DRIFT:
        tags[DRIFT_SHARE_TAG] = f"{trigger.drift_share or 0.0:.4f}"
    if obs.drift_report_id:  # consumed by this trigger; kept on the run so a lost cursor is rebuilt exactly
        tags[DRIFT_REPORT_TAG] = obs.drift_report_id
    if obs.estimate is not None:  # likewise
        tags[ESTIMATE_TAG] = obs.estimate.report_id
    if trigger.reason == ESTIMATED_DROP and obs.estimate is not None:
        e = obs.estimate
        tags.update({ESTIMATED_METRIC_TAG: e.metric, ESTIMATED_VALUE_TAG: f"{e.estimate:.4f}", ESTIMATED_BAND_TAG: f"{e.lower:.4f}-{e.upper:.4f}",
                     ESTIMATED_REFERENCE_TAG: f"{e.reference:.4f}", ESTIMATED_EVENTS_TAG: str(e.events)})
    trigger = Trigger(trigger.reason, trigger.run_key, trigger.new_labelled, trigger.label_watermark, trigger.drift_share, tags)
    next_cursor = Cursor(
        last_trigger_seq=obs.label_watermark,
        last_trigger_time=obs.now,
        last_drift_report=obs.drift_report_id if obs.drift_report_id else cursor.last_drift_report,
        last_estimate=obs.estimate.report_id if obs.estimate is not None else cursor.last_estimate,
    )
    detail = (f"; {obs.estimate.summary()}" if trigger.reason == ESTIMATED_DROP and obs.estimate is not None
              else f"; {bar.summary(config)}" if trigger.reason == DRIFT else "")
    return trigger, next_cursor, f"retrain: {trigger.reason} ({new} new labelled events){detail}"
