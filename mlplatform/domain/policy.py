"""When to retrain: the retraining sensor's decision as a pure function, reused by the benchmarks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from mlplatform.domain.keys import CHAMPION_CUTOFF_TAG, DRIFT_REPORT_TAG, DRIFT_SHARE_TAG, LABEL_WATERMARK_TAG, NEW_LABELLED_TAG, REASON_TAG

NEW_OBSERVATIONS = "new_observations"
DRIFT = "drift"


@dataclass(frozen=True)
class PolicyConfig:
    every_n: int
    min_new_for_drift: int
    cooldown_seconds: float


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

    def drift_summary(self, cursor: "Cursor") -> str:
        """The drift half of a skip reason."""
        if self.drift_detected is None:
            return self.drift_note or "no drift verdict"
        if not self.drift_detected:
            return f"latest drift report: no dataset drift (share {self.drift_share or 0.0:.2f})"
        if self.drift_report_id == cursor.last_drift_report:
            return "the latest drift report's drift already triggered a retraining"
        return f"latest drift report: drift (share {self.drift_share or 0.0:.2f})"


@dataclass
class Cursor:
    """Survives restarts as JSON in the sensor's cursor."""

    last_trigger_seq: int = 0
    last_trigger_time: float = 0.0
    last_drift_report: str | None = None
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
    if new >= config.every_n:
        trigger = Trigger(NEW_OBSERVATIONS, f"{NEW_OBSERVATIONS}-{obs.label_watermark}", new, obs.label_watermark)
    elif obs.drift_detected and obs.drift_report_id and obs.drift_report_id != cursor.last_drift_report:
        if new >= config.min_new_for_drift:
            trigger = Trigger(DRIFT, f"{DRIFT}-{obs.drift_report_id}", new, obs.label_watermark, obs.drift_share)
        else:
            return None, cursor, f"drift detected, waiting for labels: {new} new labelled events of {config.min_new_for_drift} needed"
    if trigger is None:
        return None, cursor, (
            f"{new} new labelled events since the last trigger ({since_champion} since the champion's cut-off); "
            f"{config.every_n} needed; {obs.drift_summary(cursor)}"
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
    trigger = Trigger(trigger.reason, trigger.run_key, trigger.new_labelled, trigger.label_watermark, trigger.drift_share, tags)
    next_cursor = Cursor(
        last_trigger_seq=obs.label_watermark,
        last_trigger_time=obs.now,
        last_drift_report=obs.drift_report_id if obs.drift_report_id else cursor.last_drift_report,
    )
    return trigger, next_cursor, f"retrain: {trigger.reason} ({new} new labelled events)"
