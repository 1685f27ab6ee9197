"""promotion_requires_shadow_win on the embedded profile (real Dagster instance, MLflow store, event log): a hold-out winner
waits as @challenger, loses on live events where it errs, and, once its fair shadow evidence is in, the retraining sensor
has evaluation_report run again and it is promoted."""

import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlplatform.domain.keys import AWAITING_SHADOW, DECISION, REASON_TAG, SHADOW_EVIDENCE, SHADOW_METRICS, SHADOW_WAIT_OVER, SNAPSHOT
from mlplatform.domain.spec import DatasetSpec, FeatureType
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL
from mlplatform.orchestration import launch
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.names import EVALUATION_REPORT, FEATURES
from mlplatform.pipeline.replay import write_batches
from mlplatform.pipeline.champion import ChampionRequest, change_champion
from mlplatform.pipeline.retraining import FeatureSnapshot, evaluate_challenger
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import SERVING_SOURCE, EventLog, EventStore
from mlplatform.stores.registry import CHALLENGER, Registry
from mlplatform_tests.serving_support import canonical
from mlplatform_tests.support.loop import LOOP, RETRAIN, failures, materialize, model, names, tick

MIN_EVENTS = 40


def _serve_in_shadow(log: EventStore, spec: DatasetSpec, events: pd.DataFrame, registry: Registry, champion: int, challenger: int) -> None:
    """What serving with the shadow on leaves in the event log: `events` answered by the champion, scored by the challenger
    (both real predictions of the registered versions), then their labels."""
    served, shadow = registry.load_predictor(champion).predict(events), registry.load_predictor(challenger).predict(events)
    features = events[list(spec.features)].astype(object).where(events[list(spec.features)].notna(), None)
    log.append_served([(e, int(t), str(champion), p, q, *f) for e, t, p, q, f in zip(
        events[EVENT_ID], events[EVENT_TIME], served["prediction"], served["probability"], features.itertuples(index=False))], SERVING_SOURCE)
    log.append_shadow([(e, str(challenger), p, q) for e, p, q in zip(events[EVENT_ID], shadow["prediction"], shadow["probability"])])
    log.add_labels(events[EVENT_ID].tolist(), events[LABEL].tolist())


def test_a_hold_out_winner_waits_for_its_shadow_evidence_and_is_promoted_once_it_wins_there(
        state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    reg = model().registry
    adult = names()
    sensor = adult.retraining_sensor

    # v1: a weak champion (a window of 150 events), promoted without a shadow: there was no champion to compare with.
    monkeypatch.setenv("MLPLATFORM_TRAINING_WINDOW", "150")
    write_batches(adult_rows.iloc[:2400], adult_spec, state.landing_dir, 1200)
    result = materialize(instance, LOOP)
    assert result.success, failures(result)
    assert int(reg.champion().version) == 1
    monkeypatch.delenv("MLPLATFORM_TRAINING_WINDOW")

    # v2 wins on the hold-out, but a shadow win is required and there is no evidence yet: it waits as @challenger.
    monkeypatch.setenv("MLPLATFORM_PROMOTION_REQUIRES_SHADOW_WIN", "true")
    monkeypatch.setenv("MLPLATFORM_SHADOW_MIN_EVENTS", str(MIN_EVENTS))
    monkeypatch.setenv("MLPLATFORM_PROMOTION_MARGIN", "0")
    result = materialize(instance, RETRAIN)
    assert result.success, failures(result)
    waiting = latest_metadata(instance, adult.asset(EVALUATION_REPORT))
    assert waiting is not None and (waiting["decision"], waiting["challenger_version"], waiting["champion_version"]) == (AWAITING_SHADOW, 2, 1)
    assert f"awaiting shadow evidence (0 of {MIN_EVENTS} live labelled events" in str(waiting["reason"]) and "beats champion" in str(waiting["reason"])
    assert waiting["shadow_events"] == 0 and waiting["shadow_required"] is True
    assert int(reg.champion().version) == 1 and str(reg.version_by_alias(CHALLENGER).version) == "2"
    assert reg.get_version(2).tags[DECISION] == AWAITING_SHADOW
    waits = tick(instance, sensor, None)
    assert not waits.run_requests  # no evidence yet, and no new labels to retrain on
    assert f"challenger v2 awaits its shadow evidence (0 of {MIN_EVENTS} live labelled events" in str(waits.skip_message)
    assert "serve_shadow_challenger is off" in str(waits.skip_message) and "decided on the hold-out alone in" in str(waits.skip_message)

    live = canonical(adult_rows.iloc[5000:7000], adult_spec).reset_index(drop=True)
    snapshot = FeatureSnapshot.load(Path(str(latest_metadata(instance, adult.asset(FEATURES))[SNAPSHOT])))  # type: ignore[index]

    # The wait is bounded: once shadow_max_wait_seconds passed without the evidence (no serving process scores shadows
    # here), the sensor asks for the evaluation again, and it decides on the hold-out alone, saying why.
    monkeypatch.setenv("MLPLATFORM_SHADOW_MAX_WAIT_SECONDS", "0.001")
    over = tick(instance, sensor, None).run_requests or []
    assert len(over) == 1 and over[0].tags[REASON_TAG] == SHADOW_WAIT_OVER and over[0].run_key == "shadow-wait-over-v2-vs-v1"
    assert over[0].asset_selection == [adult.asset(EVALUATION_REPORT)]
    alone = evaluate_challenger(model().settings, adult_spec, reg, snapshot, 2, model().event_log)
    assert alone.decision.promote and not alone.awaiting_shadow and alone.shadow is not None and alone.shadow.events == 0
    assert alone.decision.reason.startswith("decided on the hold-out alone: shadow evidence still short after shadow_max_wait_seconds"), alone.decision.reason
    # A champion the spec no longer fits (a feature removed since) cannot be served: it is no benchmark to keep.
    narrower = adult_spec.model_copy(update={"features": {k: v for k, v in adult_spec.features.items() if k != "hours-per-week"}})
    misfit = evaluate_challenger(model().settings, narrower, reg, snapshot, 2, model().event_log)
    assert misfit.decision.promote and misfit.champion_metrics is None
    assert "champion v1 does not fit the dataset spec (model inputs are not the features of dataset spec 'adult': the spec has nothing the model lacks, " \
           "the model ['hours-per-week'] the spec lacks), so serving cannot load it: judged as if there were no champion, challenger roc_auc" in misfit.decision.reason
    assert "with the inputs it has" not in misfit.decision.reason, "it lacks an input it reads: not scored"
    # A spec that only gained a feature: still promoted (nothing else could serve), with the champion's score beside it,
    # where before a feature that made the model worse was promoted unseen (probe).
    wider = adult_spec.model_copy(update={"features": {**adult_spec.features, "shoe-size": FeatureType.numeric}})
    gained = evaluate_challenger(model().settings, wider, reg, snapshot, 2, model().event_log)
    assert gained.decision.promote and gained.champion_metrics is None
    said = gained.decision.reason.split("judged as if there were no champion, ")[1]
    assert re.fullmatch(r"challenger roc_auc \d\.\d{4} passes the floor; beside it, the champion with the inputs it has scores roc_auc \d\.\d{4} "
                        r"on the hold-out rows it is judged on, where the challenger scores \d\.\d{4} \(not counted: the champion cannot serve\)", said), said
    monkeypatch.delenv("MLPLATFORM_SHADOW_MAX_WAIT_SECONDS")
    assert not tick(instance, sensor, None).run_requests and int(reg.champion().version) == 1  # a day by default: still waiting

    # Live events where v2 errs and v1 does not (a segment the hold-out missed): v2 loses there and would be rejected.
    p1, p2 = reg.load_predictor(1).predict(live)["prediction"], reg.load_predictor(2).predict(live)["prediction"]
    segment = live[((p1 == live[LABEL]) & (p2 != live[LABEL])).to_numpy()].head(MIN_EVENTS * 2)
    assert len(segment) >= MIN_EVENTS and segment[LABEL].nunique() == 2
    elsewhere = EventLog(tmp_path / "segment.sqlite", adult_spec)
    try:
        _serve_in_shadow(elsewhere, adult_spec, segment, reg, 1, 2)
        lost = evaluate_challenger(model().settings, adult_spec, reg, snapshot, 2, elsewhere)
        # The same with v1 pinned: rejected on its merits (it loses in shadow), not kept out by the pin alone (the review:
        # the pin was applied first, the shadow never looked at, and the drift bar read it as no verdict).
        change_champion(reg, adult_spec, ChampionRequest("held for the test", 1, pin=True), by="test")
        lost_pinned = evaluate_challenger(model().settings, adult_spec, reg, snapshot, 2, elsewhere)
        waiting_pinned = evaluate_challenger(model().settings, adult_spec, reg, snapshot, 2, model().event_log)  # no evidence yet
        reg.unpin("test done", "test")
    finally:
        elsewhere.close()
    # Live events of one class: the live ROC AUC of both is undefined, which read as the challenger's loss ('misses the
    # quality floor (≥ -inf)'); it says nothing, and the evidence is in, so the hold-out decides alone, saying why (the review).
    one_class = live[(live[LABEL] == "<=50K").to_numpy()].head(MIN_EVENTS * 2)
    elsewhere = EventLog(tmp_path / "one-class.sqlite", adult_spec)
    try:
        _serve_in_shadow(elsewhere, adult_spec, one_class, reg, 1, 2)
        silent = evaluate_challenger(model().settings, adult_spec, reg, snapshot, 2, elsewhere)
    finally:
        elsewhere.close()
    assert silent.decision.promote and not silent.awaiting_shadow and silent.shadow is not None and silent.shadow.undefined == "roc_auc"
    assert silent.decision.reason.startswith(f"decided on the hold-out alone: roc_auc is undefined on the {MIN_EVENTS * 2} live labelled events "
                                             "scored by both (one class only, say); on the hold-out: challenger roc_auc"), silent.decision.reason
    assert not lost.decision.promote and not lost.awaiting_shadow and lost.verdict == "rejected"
    assert lost.shadow is not None and lost.shadow.events == len(segment) and "loses in shadow on" in lost.decision.reason
    assert (lost_pinned.verdict, lost_pinned.kept_by_person, lost.kept_by_person) == ("rejected", False, False)
    assert "is pinned (held for the test): kept; on the scores alone: loses in shadow on" in lost_pinned.decision.reason
    assert (waiting_pinned.verdict, waiting_pinned.awaiting_shadow, waiting_pinned.kept_by_person) == ("rejected", False, True)

    # Fewer shared labelled events than needed in the real log: the sensor still waits.
    log = model().event_log
    _serve_in_shadow(log, adult_spec, live.iloc[:MIN_EVENTS - 1], reg, 1, 2)
    assert not tick(instance, sensor, None).run_requests

    # The fair evidence is in: the sensor requests evaluation_report alone, which promotes v2 on both counts.
    _serve_in_shadow(log, adult_spec, live.iloc[MIN_EVENTS - 1 : 1000], reg, 1, 2)
    requests = tick(instance, sensor, None).run_requests or []
    assert len(requests) == 1 and requests[0].tags[REASON_TAG] == SHADOW_EVIDENCE
    assert requests[0].asset_selection == [adult.asset(EVALUATION_REPORT)] and requests[0].run_key == "shadow-evaluation-v2-vs-v1"
    launch.launch(instance, "adult", requests[0])
    promoted = latest_metadata(instance, adult.asset(EVALUATION_REPORT))
    assert promoted is not None and (promoted["decision"], promoted["challenger_version"], promoted["champion_version"]) == ("promoted", 2, 2), promoted
    assert promoted["shadow_events"] == 1000 and "roc_auc" in promoted["shadow_challenger_metrics"]  # type: ignore[operator]
    assert int(reg.champion().version) == 2
    v2 = reg.get_version(2)
    assert v2.tags[DECISION] == "promoted" and '"events": 1000' in v2.tags[SHADOW_METRICS]
    assert "shadow_roc_auc" in reg.client.get_run(v2.run_id).data.metrics
    after = tick(instance, sensor, None).run_requests or []  # v2 is the champion: nothing awaits (the 1000 new labels may ask for a retraining)
    assert [r.tags[REASON_TAG] for r in after if r.tags[REASON_TAG] == SHADOW_EVIDENCE] == []
