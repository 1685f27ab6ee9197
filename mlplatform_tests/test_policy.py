"""The retraining policy (pure): its drift bar, learnt from its own record of evidence-driven retrainings and their
outcomes, and its quality_drop reason, read from the champion's realized performance on its labelled served predictions."""

import json
import math

import pytest

from mlplatform.domain.keys import (AWAITING_SHADOW, DRIFT_REPORT_TAG, PROMOTED, QUALITY_TAG, REALIZED_BAND_TAG, REALIZED_EVENTS_TAG, REALIZED_METRIC_TAG,
                                   REALIZED_REFERENCE_TAG, REALIZED_VALUE_TAG, REASON_TAG, REJECTED)
from mlplatform.domain.policy import (DRIFT, ESTIMATED_DROP, NEW_OBSERVATIONS, QUALITY_DROP, RECORD_SIZE, Cursor, DriftBar, Observation, PerformanceReading,
                                      PolicyConfig, RetrainOutcome, decide)

CONFIG = PolicyConfig(every_n=3000, min_new_for_drift=500, cooldown_seconds=0)
CUTOFF = 1000  # the champion's
REJECTED_DRIFT = RetrainOutcome(DRIFT, False, 1500)
PROMOTED_DRIFT = RetrainOutcome(DRIFT, True, 1500)


def _drift(new: int, record: tuple[RetrainOutcome, ...], report: str = "r9") -> Observation:
    """A fresh drift verdict with `new` labelled events since the champion's cut-off (1000)."""
    return Observation(label_watermark=1000 + new, champion_cutoff=1000, now=10_000.0, drift_detected=True, drift_share=0.7,
                       drift_report_id=report, record=record)


@pytest.mark.parametrize(("record", "labels", "unpromoted"), [
    ((), 500, 0),
    ((REJECTED_DRIFT,), 1000, 1),
    ((REJECTED_DRIFT, REJECTED_DRIFT), 2000, 2),
    ((REJECTED_DRIFT,) * 3, 3000, 3),  # 4000 capped at every_n
    ((REJECTED_DRIFT,) * 5, 3000, 5),
    ((PROMOTED_DRIFT, REJECTED_DRIFT, REJECTED_DRIFT), 500, 0),  # the latest promotion reset it
    ((RetrainOutcome(NEW_OBSERVATIONS, True, 1500), REJECTED_DRIFT), 500, 0),  # whatever triggered the promotion
    ((REJECTED_DRIFT, RetrainOutcome(NEW_OBSERVATIONS, True, 1500), REJECTED_DRIFT), 1000, 1),
    ((RetrainOutcome(NEW_OBSERVATIONS, False, 1500), REJECTED_DRIFT), 1000, 1),  # not the label count's
    ((RetrainOutcome(ESTIMATED_DROP, False, 1500), REJECTED_DRIFT), 2000, 2),  # an estimated drop retrained in vain raises it too (the estimation probe)
    ((RetrainOutcome(QUALITY_DROP, False, 1500), REJECTED_DRIFT), 2000, 2),  # a realized drop retrained in vain raises it like drift
    ((RetrainOutcome(DRIFT, None, 1500), REJECTED_DRIFT), 1000, 1),  # an unknown outcome neither raises nor resets it
    ((REJECTED_DRIFT, RetrainOutcome(DRIFT, False, CUTOFF), REJECTED_DRIFT), 1000, 1),  # a champion set by hand at 1000 reset it
    ((RetrainOutcome(DRIFT, False, 900),), 500, 0),  # about an older champion
])
def test_each_unpromoted_drift_retraining_doubles_the_bar_and_a_promotion_resets_it(record: tuple[RetrainOutcome, ...], labels: int,
                                                                                    unpromoted: int) -> None:
    assert DriftBar.of(record, CONFIG, CUTOFF) == DriftBar(labels, unpromoted)


def test_retrainings_triggered_before_the_champion_took_over_do_not_count() -> None:
    """A rollback to an older version: its cut-off is before the rejections, its time after them."""
    rejected_at = [RetrainOutcome(DRIFT, False, 1500, at) for at in (400.0, 200.0, 100.0)]  # newest first
    assert DriftBar.of(rejected_at, CONFIG, CUTOFF, champion_since=300.0) == DriftBar(1000, 1)
    assert DriftBar.of(rejected_at, CONFIG, CUTOFF, champion_since=500.0) == DriftBar(500, 0)
    assert DriftBar.of(rejected_at, CONFIG, CUTOFF) == DriftBar(3000, 3), "a champion with no recorded take-over: as before"


def test_only_the_latest_record_counts_and_odd_configs_keep_the_bar_sane() -> None:
    assert DriftBar.of((REJECTED_DRIFT,) * (RECORD_SIZE + 10), PolicyConfig(10**9, 1, 0), CUTOFF).unpromoted == RECORD_SIZE
    assert DriftBar.of((REJECTED_DRIFT,) * 3, PolicyConfig(every_n=300, min_new_for_drift=500, cooldown_seconds=0), CUTOFF).labels == 500, \
        "never below the configured bar, even when every_n is smaller"
    assert DriftBar.of((REJECTED_DRIFT,), PolicyConfig(every_n=3000, min_new_for_drift=0, cooldown_seconds=0), CUTOFF).labels == 2


def test_the_skip_and_trigger_sentences_say_the_bar_and_why() -> None:
    record = (REJECTED_DRIFT, REJECTED_DRIFT)
    held, cursor, why = decide(_drift(1999, record), Cursor(), CONFIG)
    assert held is None and cursor == Cursor()
    assert why == ("drift detected, waiting for labels: 1999 new labelled events of 2000 needed; drift bar 2000 new labelled events "
                   "(doubled from 500: 2 drift, quality_drop or estimated_drop retrainings were not promoted since the latest promotion)")
    trigger, _, why = decide(_drift(2000, record), Cursor(), CONFIG)
    assert trigger is not None and trigger.reason == DRIFT and "drift bar 2000" in why and "2 drift, quality_drop or estimated_drop retrainings were not promoted" in why
    fresh, _, why = decide(_drift(500, ()), Cursor(), CONFIG)
    assert fresh is not None and fresh.reason == DRIFT and "drift bar 500 new labelled events (no unpromoted drift, quality_drop or estimated_drop retraining" in why


def test_at_every_n_drift_waits_for_the_label_count_and_says_so() -> None:
    record = (REJECTED_DRIFT,) * 3
    held, _, why = decide(_drift(2999, record), Cursor(), CONFIG)
    assert held is None and "the label count's: drift and drops wait for the every-3000 retraining" in why and "3 drift, quality_drop or estimated_drop retrainings" in why
    counted, _, _ = decide(_drift(3000, record), Cursor(), CONFIG)
    assert counted is not None and counted.reason == NEW_OBSERVATIONS
    quiet = Observation(label_watermark=1100, champion_cutoff=1000, now=10_000.0, drift_detected=False, drift_share=0.1, record=(REJECTED_DRIFT,))
    _, _, why = decide(quiet, Cursor(), CONFIG)
    assert "no dataset drift (share 0.10); drift bar 1000 new labelled events (doubled from 500: 1 drift, quality_drop or estimated_drop retraining was not promoted" in why


@pytest.mark.parametrize(("reason", "decision", "watermark", "outcome"), [
    (DRIFT, PROMOTED, "1500", RetrainOutcome(DRIFT, True, 1500)),
    (DRIFT, REJECTED, "1500", RetrainOutcome(DRIFT, False, 1500)),
    (DRIFT, AWAITING_SHADOW, "1500", RetrainOutcome(DRIFT, None, 1500)),  # not decided yet
    (DRIFT, None, "1500", RetrainOutcome(DRIFT, None, 1500)),  # no evaluation found (running, failed, too old)
    (DRIFT, "PROMOTED", "1500", RetrainOutcome(DRIFT, None, 1500)),
    (DRIFT, 1, "1500", RetrainOutcome(DRIFT, None, 1500)),
    (DRIFT, ["promoted"], "1500", RetrainOutcome(DRIFT, None, 1500)),
    (None, REJECTED, "1500", RetrainOutcome("", False, 1500)),  # a run without a reason tag: its rejection raises no drift bar
    (42, REJECTED, "1500", RetrainOutcome("", False, 1500)),
    (DRIFT, REJECTED, None, RetrainOutcome(DRIFT, None, 0)),  # no watermark tag: unknown
    (DRIFT, REJECTED, "12x", RetrainOutcome(DRIFT, None, 0)),
    (DRIFT, REJECTED, "-5", RetrainOutcome(DRIFT, False, 0)),  # before any champion's cut-off: never counts
    (DRIFT, REJECTED, "9" * 400, RetrainOutcome(DRIFT, False, int("9" * 400))),
])
def test_a_missing_or_corrupt_record_is_an_unknown_outcome_not_an_error(reason: object, decision: object, watermark: object,
                                                                        outcome: RetrainOutcome) -> None:
    assert RetrainOutcome.recorded(reason, decision, watermark) == outcome


@pytest.mark.parametrize(("at", "read"), [("1765000000.125", 1765000000.125), (None, 0.0), ("soon", 0.0), ("nan", 0.0), ("inf", 0.0), ("-inf", 0.0)])
def test_a_trigger_time_unreadable_is_as_old_as_can_be(at: object, read: float) -> None:
    assert RetrainOutcome.recorded(DRIFT, REJECTED, "1500", at) == RetrainOutcome(DRIFT, False, 1500, read)


def test_a_corrupt_record_never_raises_the_bar() -> None:
    record = tuple(RetrainOutcome.recorded(reason, decision, watermark) for reason, decision, watermark in
                   [(None, REJECTED, "1500"), (DRIFT, "nonsense", "1500"), ("x" * 10_000, REJECTED, "1500"), (DRIFT, REJECTED, "oops")])
    assert DriftBar.of(record, CONFIG, CUTOFF) == DriftBar(500, 0)


# ---- quality_drop: the champion's realized performance on its labelled served predictions ----------------------------

QUALITY = PolicyConfig(every_n=3000, min_new_for_drift=500, cooldown_seconds=0, quality_drop_margin=0.05, quality_drop_events=1000)


def _realized(value: float, lower: float, upper: float, events: int = 1000, new: int = 600, reading: str = "q7", metric: str = "roc_auc",
              reference: float = 0.90, record: tuple[RetrainOutcome, ...] = (), **drift: object) -> Observation:
    """A realized reading of the champion (cut-off 1000) with `new` labelled events since it."""
    return Observation(label_watermark=CUTOFF + new, champion_cutoff=CUTOFF, now=10_000.0, quality=PerformanceReading(reading, metric, value, lower, upper,
                       reference, events), record=record, **drift)  # type: ignore[arg-type]


def test_a_regression_champion_without_error_on_its_hold_out_still_sees_a_drop() -> None:
    """The review: from a reference of 0 (mae 0.0 on the hold-out), `worse_by` answered 0 for any value, so neither
    quality_drop nor estimated_drop could ever fire, and the reason read "0.0% worse"."""
    from mlplatform.domain.estimation import worse_or_better

    trigger, _, _ = decide(_realized(0.5, 0.4, 0.6, metric="mae", reference=0.0), Cursor(), QUALITY)
    assert trigger is not None and trigger.reason == QUALITY_DROP
    assert worse_or_better("mae", 0.5, 0.0) == "worse than a reference of 0" and worse_or_better("mae", 0.0, 0.0) == "0.0% worse"
    assert decide(_realized(0.0, 0.0, 0.0, metric="mae", reference=0.0), Cursor(), QUALITY)[0] is None


def test_a_realized_drop_outside_the_band_triggers_once_and_says_why() -> None:
    trigger, cursor, why = decide(_realized(0.80, 0.78, 0.82), Cursor(), QUALITY)
    assert trigger is not None and trigger.reason == QUALITY_DROP and trigger.run_key == "quality_drop-q7" and trigger.new_labelled == 600
    assert {k: trigger.tags[k] for k in (REASON_TAG, QUALITY_TAG, REALIZED_METRIC_TAG, REALIZED_VALUE_TAG, REALIZED_BAND_TAG, REALIZED_REFERENCE_TAG,
                                         REALIZED_EVENTS_TAG)} == {REASON_TAG: QUALITY_DROP, QUALITY_TAG: "q7", REALIZED_METRIC_TAG: "roc_auc",
                                                                   REALIZED_VALUE_TAG: "0.8000", REALIZED_BAND_TAG: "0.7800-0.8200",
                                                                   REALIZED_REFERENCE_TAG: "0.9000", REALIZED_EVENTS_TAG: "1000"}
    assert why == ("retrain: quality_drop (600 new labelled events); realized roc_auc 0.8000 (95 % band 0.7800-0.8200, 1000 events) vs reference "
                   "0.9000: 11.1% worse; drift bar 500 new labelled events (no unpromoted drift, quality_drop or estimated_drop retraining since the latest promotion)")
    assert cursor.last_quality == "q7" and Cursor.from_json(cursor.to_json()) == (cursor, False)
    again, kept, why = decide(_realized(0.80, 0.78, 0.82, new=2000), cursor, QUALITY)
    assert again is None and kept == cursor and "the latest realized quality reading is from before the latest retraining (whatever triggered it)" in why, why
    lost = Cursor(cursor.last_trigger_seq, cursor.last_trigger_time)  # a cursor rebuilt without the reading: it fires again
    assert decide(_realized(0.80, 0.78, 0.82, new=2000), lost, QUALITY)[0] is not None


@pytest.mark.parametrize(("observation", "config", "says"), [
    (_realized(0.86, 0.84, 0.88), QUALITY, "realized roc_auc 0.8600 (95 % band 0.8400-0.8800, 1000 events) vs reference 0.9000: 4.4% worse "
                                           "(a drop is 5% worse, outside the band)"),  # below the reference by less than the margin
    (_realized(0.84, 0.78, 0.91), QUALITY, "6.7% worse"),  # a wide band holds the reference: could be chance
    (_realized(0.95, 0.93, 0.97), QUALITY, "vs reference 0.9000: 5.6% better (a drop"),  # the operator probe read "-5.6% worse"
    (_realized(0.80, 0.78, 0.82, events=999), QUALITY, "realized quality reading over 999 events; 1000 needed"),
    (_realized(0.80, 0.78, 0.82, new=499), QUALITY, "11.1% worse (a drop is 5% worse, outside the band; waiting for labels: 500 new labelled events "
                                                     "needed (the drift bar))"),
    (_realized(0.80, 0.78, 0.82, new=999, record=(REJECTED_DRIFT,)), QUALITY, "waiting for labels: 1000 new labelled events needed"),
    (_realized(0.80, 0.78, 0.82), PolicyConfig(3000, 500, 0), "quality drop: off"),
    (Observation(1600, CUTOFF, 10_000.0, quality_note="12 labelled served predictions of the champion"), QUALITY,
     "12 labelled served predictions of the champion"),
    (Observation(1600, CUTOFF, 10_000.0), QUALITY, "no realized quality reading"),
    (_realized(math.nan, math.nan, math.nan), QUALITY, "realized roc_auc nan"),  # unreadable numbers never fire, never raise
    (_realized(0.80, 0.78, 0.82, reference=math.nan), QUALITY, "vs reference nan"),
])
def test_no_quality_drop_without_a_clear_drop_on_enough_events_and_labels(observation: Observation, config: PolicyConfig, says: str) -> None:
    trigger, cursor, why = decide(observation, Cursor(), config)
    assert trigger is None and cursor == Cursor() and says in why, why


def test_a_regression_quality_drop_is_a_rise_of_the_realized_error() -> None:
    assert decide(_realized(120.0, 115.0, 125.0, metric="mae", reference=100.0), Cursor(), QUALITY)[0] is not None
    assert decide(_realized(80.0, 75.0, 85.0, metric="mae", reference=100.0), Cursor(), QUALITY)[0] is None


def test_a_realized_drop_goes_before_a_drift_verdict_and_consumes_both() -> None:
    observation = _realized(0.80, 0.78, 0.82, drift_detected=True, drift_share=0.7, drift_report_id="r9")
    trigger, cursor, _ = decide(observation, Cursor(), QUALITY)
    assert trigger is not None and trigger.reason == QUALITY_DROP and trigger.tags[DRIFT_REPORT_TAG] == "r9"
    assert (cursor.last_drift_report, cursor.last_quality) == ("r9", "q7")
    counted, _, _ = decide(_realized(0.80, 0.78, 0.82, new=3000), Cursor(), QUALITY)
    assert counted is not None and counted.reason == NEW_OBSERVATIONS, "the label count goes first, as for every reason"


def test_an_older_cursor_without_the_reading_is_read_not_reset() -> None:
    old = json.dumps({"last_trigger_seq": 10, "last_trigger_time": 5.0, "last_drift_report": "7", "last_estimate": "41", "version": 1})
    assert Cursor.from_json(old) == (Cursor(10, 5.0, "7", "41", None), False)
    assert Cursor.from_json(json.dumps({**json.loads(old), "last_quality": 12})) == (Cursor(10, 5.0, "7", "41", "12"), False)


def test_labels_a_trigger_took_are_new_to_an_older_version_that_took_over_after_it() -> None:
    """The probe: rolled back to v1 (and unpinned), a champion at realized AUC 0.21 with 23,000 labels since its cut-off
    waited for 3000 more, "0 new labelled events since the last trigger". A version registered after the trigger is its
    retraining's (or a later one's), whose window was offered the trigger's labels, even where it left some out: labels
    of events older than the window put its cut-off below them, and counting from there retrained again (the review)."""
    took = Cursor(last_trigger_seq=24_000, last_trigger_time=5_000.0)
    rolled_back = Observation(label_watermark=24_000, champion_cutoff=CUTOFF, now=10_000.0, champion_since=6_000.0, champion_registered_at=100.0)
    trigger, _, why = decide(rolled_back, took, CONFIG)
    assert trigger is not None and trigger.reason == NEW_OBSERVATIONS and trigger.new_labelled == 23_000, why
    before = Observation(label_watermark=24_000, champion_cutoff=CUTOFF, now=10_000.0, champion_since=4_000.0, champion_registered_at=100.0)
    trigger, _, why = decide(before, took, CONFIG)  # it served when the trigger came
    assert trigger is None and why.startswith("0 new labelled events since the last trigger (23000 since the champion's cut-off)"), why
    promoted = Observation(label_watermark=24_100, champion_cutoff=19_000, now=10_000.0, champion_since=6_000.0, champion_registered_at=5_500.0)
    trigger, _, why = decide(promoted, took, CONFIG)  # the trigger's own retraining, its window short of the trigger's labels
    assert trigger is None and why.startswith("100 new labelled events since the last trigger (5100 since the champion's cut-off)"), why
    unknown = Observation(label_watermark=24_000, champion_cutoff=CUTOFF, now=10_000.0, champion_since=6_000.0)
    assert decide(unknown, took, CONFIG)[0] is None, "a version whose registration time is unknown counts as before"
