"""The retraining policy's drift bar: learnt from its own record of drift retrainings and their outcomes (pure)."""

import pytest

from mlplatform.domain.keys import AWAITING_SHADOW, PROMOTED, REJECTED
from mlplatform.domain.policy import DRIFT, ESTIMATED_DROP, NEW_OBSERVATIONS, RECORD_SIZE, Cursor, DriftBar, Observation, PolicyConfig, RetrainOutcome, decide

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
    ((RetrainOutcome(NEW_OBSERVATIONS, False, 1500), REJECTED_DRIFT, RetrainOutcome(ESTIMATED_DROP, False, 1500)), 1000, 1),  # only drift raises it
    ((RetrainOutcome(DRIFT, None, 1500), REJECTED_DRIFT), 1000, 1),  # an unknown outcome neither raises nor resets it
    ((REJECTED_DRIFT, RetrainOutcome(DRIFT, False, CUTOFF), REJECTED_DRIFT), 1000, 1),  # a champion set by hand at 1000 reset it
    ((RetrainOutcome(DRIFT, False, 900),), 500, 0),  # about an older champion
])
def test_each_unpromoted_drift_retraining_doubles_the_bar_and_a_promotion_resets_it(record: tuple[RetrainOutcome, ...], labels: int,
                                                                                    unpromoted: int) -> None:
    assert DriftBar.of(record, CONFIG, CUTOFF) == DriftBar(labels, unpromoted)


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
                   "(doubled from 500: 2 drift retrainings were not promoted since the latest promotion)")
    trigger, _, why = decide(_drift(2000, record), Cursor(), CONFIG)
    assert trigger is not None and trigger.reason == DRIFT and "drift bar 2000" in why and "2 drift retrainings were not promoted" in why
    fresh, _, why = decide(_drift(500, ()), Cursor(), CONFIG)
    assert fresh is not None and fresh.reason == DRIFT and "drift bar 500 new labelled events (no unpromoted drift retraining" in why


def test_at_every_n_drift_waits_for_the_label_count_and_says_so() -> None:
    record = (REJECTED_DRIFT,) * 3
    held, _, why = decide(_drift(2999, record), Cursor(), CONFIG)
    assert held is None and "the label count's: drift waits for the every-3000 retraining" in why and "3 drift retrainings" in why
    counted, _, _ = decide(_drift(3000, record), Cursor(), CONFIG)
    assert counted is not None and counted.reason == NEW_OBSERVATIONS
    quiet = Observation(label_watermark=1100, champion_cutoff=1000, now=10_000.0, drift_detected=False, drift_share=0.1, record=(REJECTED_DRIFT,))
    _, _, why = decide(quiet, Cursor(), CONFIG)
    assert "no dataset drift (share 0.10); drift bar 1000 new labelled events (doubled from 500: 1 drift retraining was not promoted" in why


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


def test_a_corrupt_record_never_raises_the_bar() -> None:
    record = tuple(RetrainOutcome.recorded(reason, decision, watermark) for reason, decision, watermark in
                   [(None, REJECTED, "1500"), (DRIFT, "nonsense", "1500"), ("x" * 10_000, REJECTED, "1500"), (DRIFT, REJECTED, "oops")])
    assert DriftBar.of(record, CONFIG, CUTOFF) == DriftBar(500, 0)
