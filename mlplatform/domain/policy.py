"""When to retrain: the retraining sensor's decision as a pure function, reused by the benchmarks."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from mlplatform.domain.estimation import HIGHER_IS_BETTER, worse_by, worse_or_better
from mlplatform.domain.keys import (CHAMPION_CUTOFF_TAG, DRIFT_REPORT_TAG, DRIFT_SHARE_TAG, ESTIMATE_TAG, LABEL_WATERMARK_TAG, NEW_LABELLED_TAG,
                                   PROMOTED, QUALITY_TAG, REASON_TAG, REJECTED, reading_tags)

NEW_OBSERVATIONS = "new_observations"
DRIFT = "drift"
ESTIMATED_DROP = "estimated_drop"
QUALITY_DROP = "quality_drop"
EVIDENCE_DRIVEN = (DRIFT, QUALITY_DROP, ESTIMATED_DROP)  # the reasons the drift bar gates and raises: see DriftBar
BY_HAND = "by_hand"  # the reason a retraining a person started records: it consumes evidence, and is no false alarm


@dataclass(frozen=True)
class PolicyConfig:
    every_n: int
    min_new_for_drift: int
    cooldown_seconds: float
    estimated_drop_margin: float | None = None  # relative: 0.05 = estimate 5 % worse than the reference; None: off
    estimated_drop_events: int = 0  # the estimate must cover at least this many recent events
    quality_drop_margin: float | None = None  # relative: 0.05 = realized 5 % worse than the reference; None: off
    quality_drop_events: int = 0  # the realized value must cover at least this many labelled served predictions

    def drop_rule(self, watch: "DropWatch") -> tuple[float | None, int]:
        """The margin (None: off) and the events a reading of `watch` needs."""
        if watch.reason == ESTIMATED_DROP:
            return self.estimated_drop_margin, self.estimated_drop_events
        return self.quality_drop_margin, self.quality_drop_events


RECORD_SIZE = 5  # the latest retrainings the policy learns from: a bar that doubles reaches every_n in a few steps


@dataclass(frozen=True)
class RetrainOutcome:
    """One retraining the policy triggered and what its evaluation decided: True promoted, False rejected, None not known
    (still running, failed before its evaluation, waiting for shadow evidence, or nothing readable recorded)."""

    reason: str
    promoted: bool | None
    label_watermark: int  # the trigger's: one at or below the champion's cut-off predates the champion
    triggered_at: float = 0.0  # epoch seconds; one before the champion took over was about another champion (0: unknown)

    @classmethod
    def recorded(cls, reason: object, decision: object, label_watermark: object, triggered_at: object = None) -> "RetrainOutcome":
        """From what a trigger run and its evaluation recorded; anything unreadable is an unknown outcome, never a failure
        (an unreadable trigger time: as old as can be)."""
        verdict = {PROMOTED: True, REJECTED: False}.get(decision) if isinstance(decision, str) else None
        try:
            watermark = max(0, int(str(label_watermark)))
        except ValueError:
            watermark, verdict = 0, None
        try:
            at = float(str(triggered_at))
        except ValueError:
            at = 0.0
        return cls(reason if isinstance(reason, str) else "", verdict, watermark, at if math.isfinite(at) else 0.0)


@dataclass(frozen=True)
class DriftBar:
    """The new labelled events a drift, quality_drop or estimated_drop trigger needs now, learnt from the policy's own record.

    All three are evidence-driven retrainings (a drift verdict, a realized or an estimated drop) that can only help once
    the labels can teach the change. An estimated drop counts as the others do (the estimation probe: a population grown
    harder, whose estimate was right and which no retraining could fix, retrained every 500 labels, five challengers
    rejected in a row, while the bar stayed at 500). One whose challenger is not promoted was a false alarm for this stream (drift the champion copes with,
    a drop the labels cannot yet fix): each one since the latest promotion doubles the bar, up to every_n, where neither
    triggers before the label count does. One that won on the scores and was kept out only by a person (a pinned
    champion, a champion moved by hand meanwhile) was no false alarm, and does not count (the operator probe: four
    challengers kept out by a pin put the bar at 5000 after the pin was gone). A promotion resets the bar, whatever triggered it, and so does a champion set
    by hand: retrainings triggered before it took over, or at or before its cut-off, were about another champion (the
    operator probe: after a rollback to an older version, the rejections of challengers against the version rolled back
    from kept the bar raised). On a stream that drifts all the time, or whose
    concept keeps moving, this stops the policy from retraining at every reading while its challengers keep losing."""

    labels: int
    unpromoted: int  # evidence-driven retrainings not promoted since the latest promotion, within the record

    @classmethod
    def of(cls, record: Sequence[RetrainOutcome], config: PolicyConfig, champion_cutoff: int, champion_since: float = 0.0) -> "DriftBar":
        """`record`: the latest retrainings the policy triggered, newest first (only the first RECORD_SIZE count);
        `champion_since`: when the champion took over (0: not known)."""
        unpromoted = 0
        for outcome in list(record)[:RECORD_SIZE]:
            if outcome.promoted or outcome.label_watermark <= champion_cutoff or outcome.triggered_at < champion_since:
                break
            unpromoted += outcome.reason in EVIDENCE_DRIVEN and outcome.promoted is False
        base = config.min_new_for_drift
        labels = base if unpromoted == 0 else max(base, min(config.every_n, max(base, 1) << unpromoted))
        return cls(labels, unpromoted)

    def summary(self, config: PolicyConfig) -> str:
        """Why the bar is where it is, for the skip and trigger sentences."""
        if self.unpromoted == 0:
            return f"drift bar {self.labels} new labelled events (no unpromoted drift, quality_drop or estimated_drop retraining since the latest promotion)"
        runs = "retraining was" if self.unpromoted == 1 else "retrainings were"
        paused = f", the label count's: drift and drops wait for the every-{config.every_n} retraining" if self.labels >= config.every_n else ""
        return (f"drift bar {self.labels} new labelled events{paused} (doubled from {config.min_new_for_drift}: {self.unpromoted} drift, "
                f"quality_drop or estimated_drop {runs} not promoted since the latest promotion)")


@dataclass(frozen=True)
class LabelledPart:
    """The events of an estimated reading whose labels came back: the estimate on them alone and the realized value."""

    events: int
    estimate: float
    lower: float
    upper: float
    realized: float


@dataclass(frozen=True)
class PerformanceReading:
    """The latest reading of the champion's performance over its most recent events, with its 95 % band: estimated
    without labels (estimated_performance) or realized on its labelled served predictions (live_quality)."""

    report_id: str
    metric: str
    value: float
    lower: float
    upper: float
    reference: float  # the champion's realized performance on its own hold-out
    events: int
    labelled: LabelledPart | None = None  # an estimate's events whose labels came back (enough for an estimate on them)

    def summary(self, kind: str) -> str:
        """`kind`: what the value is, "estimated" or "realized"."""
        said = (f"{kind} {self.metric} {self.value:.4f} (95 % band {self.lower:.4f}-{self.upper:.4f}, {self.events} events) "
                f"vs reference {self.reference:.4f}: {worse_or_better(self.metric, self.value, self.reference)}")
        part = self.labelled
        if part is not None:
            value = self.superseded()[0]
            said += (f"; labels came back for {part.events} of these events, where realized {self.metric} is {part.realized:.4f} against "
                     f"an estimate of {part.estimate:.4f} there: realized where known, {value:.4f} "
                     f"({worse_or_better(self.metric, value, self.reference)})")
        return said

    def superseded(self) -> tuple[float, float, float]:
        """The value and band with realized performance superseding the estimate where labels came back (as in NannyML):
        the estimate's error on the labelled events, weighted by their share of the events, moves the whole reading. The
        estimation probe retrained on an estimated 6 % fall that the labels of nine tenths of its events, already in, put
        at 3.8 %; a few older labelled events barely move an estimate of newer, unlabelled ones (the review: 300 of 2000
        vetoed an estimated 22 % fall)."""
        part = self.labelled
        if part is None or self.events <= 0:
            return self.value, self.lower, self.upper
        shift = min(1.0, part.events / self.events) * (part.realized - part.estimate)
        return self.value + shift, self.lower + shift, self.upper + shift

    def _falls(self, value: float, lower: float, upper: float, margin: float) -> bool:
        outside = upper < self.reference if HIGHER_IS_BETTER[self.metric] else lower > self.reference
        return outside and worse_by(self.metric, value, self.reference) >= margin

    def dropped(self, margin: float) -> bool:
        """Worse than the reference by `margin` (relative), with the reference outside the band, realized performance
        superseding the estimate where labels came back."""
        return self._falls(*self.superseded(), margin)

    def estimate_alone_drops(self, margin: float) -> bool:
        """The estimate alone is a drop, but not with realized performance where it is known."""
        return self.labelled is not None and self._falls(self.value, self.lower, self.upper, margin) and not self.dropped(margin)

    def tags(self, watch: "DropWatch") -> dict[str, str]:
        """What the run carrying the trigger records about the reading."""
        metric, value, band, reference, events = reading_tags(watch.kind)
        return {metric: self.metric, value: f"{self.value:.4f}", band: f"{self.lower:.4f}-{self.upper:.4f}", reference: f"{self.reference:.4f}",
                events: str(self.events)}


@dataclass(frozen=True)
class DropWatch:
    """A reason that fires when a reading of the champion's performance dropped below its hold-out reference: what the
    sentences call the reading and which run tags record it."""

    reason: str
    kind: str  # the reading's value, "estimated" or "realized": its run tags are keys.reading_tags(kind)
    noun: str
    consumed_tag: str  # the reading's id, kept on the run so a lost cursor is rebuilt exactly


ESTIMATE_WATCH = DropWatch(ESTIMATED_DROP, "estimated", "performance estimate", ESTIMATE_TAG)
QUALITY_WATCH = DropWatch(QUALITY_DROP, "realized", "realized quality reading", QUALITY_TAG)
WATCHES = {w.reason: w for w in (ESTIMATE_WATCH, QUALITY_WATCH)}


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
    estimate: PerformanceReading | None = None
    estimate_note: str = ""  # why there is no usable estimate (none yet, skipped, no estimator, about an older champion)
    quality: PerformanceReading | None = None  # realized on the champion's labelled served predictions
    quality_note: str = ""  # why there is no usable realized reading (none yet, too few, no reference, about an older champion)
    record: tuple[RetrainOutcome, ...] = ()  # the latest retrainings the policy triggered, newest first (DriftBar)
    champion_since: float = 0.0  # when the champion took over, epoch seconds (0: not known)
    champion_registered_at: float = 0.0  # when the champion's version was registered, epoch seconds (0: not known)

    def drift_summary(self, cursor: "Cursor", bar: DriftBar, config: PolicyConfig) -> str:
        """The drift half of a skip reason."""
        if self.drift_detected is None:
            verdict = self.drift_note or "no drift verdict"
        elif not self.drift_detected:
            verdict = f"latest drift report: no dataset drift (share {self.drift_share or 0.0:.2f})"
        elif self.drift_report_id == cursor.last_drift_report:
            verdict = "the latest drift report is from before the latest retraining (whatever triggered it): waiting for the next one"
        else:
            verdict = f"latest drift report: drift (share {self.drift_share or 0.0:.2f})"
        return f"{verdict}; {bar.summary(config)}"

    def reading(self, watch: DropWatch) -> tuple[PerformanceReading | None, str]:
        """The reading `watch` reads and, without one, why."""
        return (self.estimate, self.estimate_note) if watch.reason == ESTIMATED_DROP else (self.quality, self.quality_note)

    def drop_summary(self, watch: DropWatch, cursor: "Cursor", config: PolicyConfig, bar: DriftBar) -> str:
        """The `watch` part of a skip reason."""
        margin, needed = config.drop_rule(watch)
        reading, note = self.reading(watch)
        if margin is None:
            return f"{watch.reason.replace('_', ' ')}: off"
        if reading is None:
            return note or f"no {watch.noun}"
        if reading.report_id == cursor.consumed(watch):
            return f"the latest {watch.noun} is from before the latest retraining (whatever triggered it): waiting for the next one"
        if reading.events < needed:
            return f"{watch.noun} over {reading.events} events; {needed} needed"
        waiting = f"; waiting for labels: {bar.labels} new labelled events needed (the drift bar)" if watch.reason in EVIDENCE_DRIVEN and reading.dropped(margin) else ""
        not_a_drop = "; not a drop once realized performance supersedes the estimate where it is known" if reading.estimate_alone_drops(margin) else ""
        return f"{reading.summary(watch.kind)} (a drop is {margin:.0%} worse, outside the band{waiting}){not_a_drop}"

    def dropped(self, watch: DropWatch, cursor: "Cursor", config: PolicyConfig) -> bool:
        """A new reading of `watch`, over enough events, that dropped."""
        margin, needed = config.drop_rule(watch)
        reading, _ = self.reading(watch)
        return (margin is not None and reading is not None and reading.report_id != cursor.consumed(watch)
                and reading.events >= needed and reading.dropped(margin))


@dataclass
class Cursor:
    """Survives restarts as JSON in the sensor's cursor."""

    last_trigger_seq: int = 0
    last_trigger_time: float = 0.0
    last_drift_report: str | None = None
    last_estimate: str | None = None
    last_quality: str | None = None
    version: int = 1

    def consumed(self, watch: DropWatch) -> str | None:
        """The id of the latest reading of `watch` a trigger consumed."""
        return self.last_estimate if watch.reason == ESTIMATED_DROP else self.last_quality

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
                last_quality=None if data.get("last_quality") is None else str(data["last_quality"]),
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
    # The labels a trigger took are new again to an older version that took over after it (a rollback): it waited for N
    # more labels though thousands since its cut-off were new to it (the probe: realized AUC 0.21, 23,000 labels since
    # its cut-off, "0 new labelled events since the last trigger"). A version registered after the trigger is its
    # retraining's, or a later one's: the trigger's labels were offered to it, even where its window left some out
    # (labels of events older than the window: the review).
    moved_since_trigger = (cursor.last_trigger_time > 0 and obs.champion_since > cursor.last_trigger_time
                           and 0 < obs.champion_registered_at < cursor.last_trigger_time)
    base = obs.champion_cutoff if moved_since_trigger else max(obs.champion_cutoff, cursor.last_trigger_seq)
    new = max(0, obs.label_watermark - base)
    since_champion = max(0, obs.label_watermark - obs.champion_cutoff)
    if cursor.last_trigger_time and obs.now - cursor.last_trigger_time < config.cooldown_seconds:
        left = config.cooldown_seconds - (obs.now - cursor.last_trigger_time)
        return None, cursor, f"cool-down: {left:.0f}s left before another retraining may start"
    trigger = None
    bar = DriftBar.of(obs.record, config, obs.champion_cutoff, obs.champion_since)
    if new >= config.every_n:
        trigger = Trigger(NEW_OBSERVATIONS, f"{NEW_OBSERVATIONS}-{obs.label_watermark}", new, obs.label_watermark)
    elif obs.quality is not None and obs.dropped(QUALITY_WATCH, cursor, config) and new >= bar.labels:
        trigger = Trigger(QUALITY_DROP, f"{QUALITY_DROP}-{obs.quality.report_id}", new, obs.label_watermark)
    else:
        drifted = bool(obs.drift_detected and obs.drift_report_id and obs.drift_report_id != cursor.last_drift_report)
        dropped = obs.estimate if obs.dropped(ESTIMATE_WATCH, cursor, config) else None
        if (drifted or dropped) and new < bar.labels:  # a challenger trained on no new labels is the champion again
            seen = " and ".join([*(["drift detected"] if drifted else []), *(["estimated drop"] if dropped else [])])
            estimate = f"{dropped.summary(ESTIMATE_WATCH.kind)}; " if dropped else ""
            return None, cursor, f"{seen}, waiting for labels: {new} new labelled events of {bar.labels} needed; {estimate}{bar.summary(config)}"
        if drifted:
            trigger = Trigger(DRIFT, f"{DRIFT}-{obs.drift_report_id}", new, obs.label_watermark, obs.drift_share)
        elif dropped:
            trigger = Trigger(ESTIMATED_DROP, f"{ESTIMATED_DROP}-{dropped.report_id}", new, obs.label_watermark)
    if trigger is None:
        return None, cursor, (
            (f"{new} new labelled events since the champion's cut-off (an older version, it took over after the last trigger); " if moved_since_trigger else
             f"{new} new labelled events since the last trigger ({since_champion} since the champion's cut-off); ") +
            f"{config.every_n} needed; {obs.drift_summary(cursor, bar, config)}; "
            f"{'; '.join(obs.drop_summary(w, cursor, config, bar) for w in (QUALITY_WATCH, ESTIMATE_WATCH))}"
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
    for watch in WATCHES.values():  # likewise
        reading, _ = obs.reading(watch)
        if reading is not None:
            tags[watch.consumed_tag] = reading.report_id
            if trigger.reason == watch.reason:
                tags.update(reading.tags(watch))
    trigger = Trigger(trigger.reason, trigger.run_key, trigger.new_labelled, trigger.label_watermark, trigger.drift_share, tags)
    next_cursor = Cursor(
        last_trigger_seq=obs.label_watermark,
        last_trigger_time=obs.now,
        last_drift_report=obs.drift_report_id if obs.drift_report_id else cursor.last_drift_report,
        last_estimate=obs.estimate.report_id if obs.estimate is not None else cursor.last_estimate,
        last_quality=obs.quality.report_id if obs.quality is not None else cursor.last_quality,
    )
    watched = WATCHES.get(trigger.reason)
    reading = None if watched is None else obs.reading(watched)[0]
    detail = (f"; {reading.summary(watched.kind)}" if watched is not None and reading is not None else "") + \
        (f"; {bar.summary(config)}" if trigger.reason in EVIDENCE_DRIVEN else "")
    return trigger, next_cursor, f"retrain: {trigger.reason} ({new} new labelled events){detail}"
