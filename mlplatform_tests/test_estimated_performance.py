"""estimated_performance and the estimated_drop trigger against a real Dagster instance, event log and MLflow store."""

from collections.abc import Iterator

import mlflow
import pandas as pd
import pytest

from mlplatform.domain.estimation import CBPE, ClassificationEstimator
from mlplatform.domain.keys import (TRUST_VERDICT, ESTIMATE_TAG, ESTIMATED_METRIC_TAG, ESTIMATED_REFERENCE_TAG, ESTIMATOR, NO_ESTIMATOR_PREFIX, REASON_TAG, RECENT_ESTIMATE,
                                   RECENT_ESTIMATED_PREFIX, RECENT_EVENTS, RECENT_LABELLED,
                                   SKIP_REASON, SKIPPED)
from mlplatform.domain.policy import ESTIMATED_DROP
from mlplatform.domain.predictor import ESTIMATOR_FILE, ESTIMATOR_NOT_FITTED, NO_ESTIMATOR
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_ID
from mlplatform.domain.training import TrainingConfig, fit_performance_estimator, train
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.names import ESTIMATE_FLOOR_CHECK, ESTIMATE_TRUST_CHECK, ESTIMATED_PERFORMANCE, ModelNames
from mlplatform.pipeline.replay import DriftScenario, canonical_labels, inject_drift
from mlplatform_tests.monitoring_support import CHAMPION_ROWS, Platform, trained_platform

ADULT = ModelNames("adult")
CHUNK = 500


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> Iterator[Platform]:
    env = {
        "MLPLATFORM_ESTIMATION_CHUNK_EVENTS": str(CHUNK),
        "MLPLATFORM_ESTIMATION_CHUNKS": "3",
        "MLPLATFORM_ESTIMATION_MIN_EVENTS": "100",
        "MLPLATFORM_ESTIMATED_DROP_EVENTS": str(CHUNK),
        "MLPLATFORM_ESTIMATED_DROP_MARGIN": "0.05",
        "MLPLATFORM_RETRAIN_EVERY_N": "100000",
    }
    with trained_platform(tmp_path_factory.mktemp("estimation") / "state", adult_spec, adult_rows, **env) as platform:
        yield platform


def _estimate(platform: Platform) -> tuple[dict[str, object], dict[str, object]]:
    """Materialize estimated_performance: its metadata and its checks' results by name."""
    result = platform.materialize(ESTIMATED_PERFORMANCE)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    return latest_metadata(platform.instance, ADULT.asset(ESTIMATED_PERFORMANCE)) or {}, checks  # type: ignore[return-value]


def test_the_champion_is_logged_with_its_estimator_recorded_in_mlflow(platform: Platform) -> None:
    registry = platform.model.registry
    estimator = registry.load_predictor(1).estimator
    assert isinstance(estimator, ClassificationEstimator) and estimator.method == CBPE and estimator.holdout_rows > 0
    run = mlflow.MlflowClient(platform.settings.tracking_uri).get_run(registry.get_version(1).run_id)
    assert run.data.params["estimator"] == CBPE and run.data.params["estimator_fitted_on"] == "holdout"
    assert run.data.metrics["estimator_reference_roc_auc"] == pytest.approx(estimator.reference["roc_auc"])
    assert registry.holdout_reference(1) == pytest.approx(estimator.reference), "live_quality's reference, read without loading the model"
    assert registry.get_version(1).tags[ESTIMATOR] == CBPE


def test_estimates_unlabelled_events_and_puts_realized_beside_where_labels_came_back(platform: Platform) -> None:
    own, own_checks = _estimate(platform)  # only the champion's own training rows: no reading at all (it had read them, in-sample)
    assert own[RECENT_EVENTS] == 0 and RECENT_ESTIMATE not in own
    assert own["chunks"] == 0 and "estimated_roc_auc" not in own, "the chunks plotted its in-sample scores on its training rows"
    assert own[TRUST_VERDICT] == "nothing to check the estimate against yet: no chunk has labels from after the champion's cut-off", \
        "it said realized performance was inside the band, with nothing realized"
    assert own_checks[ESTIMATE_TRUST_CHECK].passed
    platform.replay(platform.next_rows(CHUNK))
    platform.replay(platform.next_rows(CHUNK), with_labels=False)
    meta, checks = _estimate(platform)
    assert meta[RECENT_EVENTS] == CHUNK
    assert meta[SKIPPED] is False and meta["estimated_metric"] == "roc_auc" and meta["chunks"] == 2, "the two new chunks, not its training rows"
    assert float(str(meta["estimated_roc_auc_lower"])) <= float(str(meta["estimated_roc_auc"])) <= float(str(meta["estimated_roc_auc_upper"]))
    assert "realized_roc_auc" in meta and "estimated_roc_auc_on_labelled" in meta, "the labelled chunk before the unlabelled one"
    assert abs(float(str(meta["realized_accuracy"])) - float(str(meta["estimated_accuracy"]))) < 0.05
    table = str(meta["chunk_table"])
    assert table.count("\n") == 1 + 2 and "| 0 |" in table, "the newest chunk has no labels: estimated, not realized"
    assert checks[ESTIMATE_TRUST_CHECK].passed and checks[ESTIMATE_FLOOR_CHECK].passed
    judged = checks[ESTIMATE_FLOOR_CHECK].metadata  # the estimation probe: its estimated_roc_auc was the recent one, the asset's the newest chunk's
    assert judged[f"{RECENT_ESTIMATED_PREFIX}roc_auc"].value == pytest.approx(float(str(meta[RECENT_ESTIMATE]))) and judged[RECENT_EVENTS].value == CHUNK
    assert not [k for k in judged if k.startswith("estimated_")], "one name, one meaning: estimated_* is the newest chunk's"
    assert meta["untrusted_chunks"] == 0 and float(str(meta[RECENT_ESTIMATE])) > 0.6
    assert meta[TRUST_VERDICT] == "realized performance inside the estimate's band on the 1 chunk where labels came back"


def test_flipped_labels_are_invisible_to_the_estimate_and_flagged_where_labels_exist(platform: Platform) -> None:
    flipped = inject_drift(platform.next_rows(CHUNK * 2), platform.spec, DriftScenario(flip_labels=1.0))
    platform.replay(flipped)
    meta, checks = _estimate(platform)
    assert float(str(meta["realized_roc_auc"])) < 0.3 < float(str(meta["estimated_roc_auc"])), "concept change: the estimate stays put"
    assert not checks[ESTIMATE_TRUST_CHECK].passed and "P(y|x) has probably changed" in (checks[ESTIMATE_TRUST_CHECK].description or "")
    assert meta["untrusted_chunks"] == 2 and "realized outside the band" in str(meta["chunk_table"])
    # Where the labels of the recent events came back, realized performance supersedes the estimate: the concept change
    # the estimate cannot see is a drop (the drift bar's labels are in: the flipped events brought them).
    concept = platform.tick(ADULT.retraining_sensor, None)
    assert [r.tags[REASON_TAG] for r in concept.run_requests or []] == [ESTIMATED_DROP], concept.skip_message
    assert float(str(meta["recent_realized"])) < 0.3 and meta[RECENT_LABELLED] == CHUNK


def test_an_estimated_drop_on_unlabelled_events_triggers_one_retraining(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    platform.replay(platform.next_rows(CHUNK), with_labels=False)  # the latest events again ordinary ones, not yet labelled
    _estimate(platform)
    quiet = platform.tick(ADULT.retraining_sensor, None)
    assert not quiet.run_requests and "estimated roc_auc" in (quiet.skip_message or ""), quiet.skip_message
    # Covariate shift into the champion's hard cases: the events it is least sure about, without their labels.
    candidates = platform.rows.iloc[platform.replayed : platform.replayed + 8000]
    proba = platform.model.registry.load_predictor(1).predict(candidates)["probability"]
    hard = candidates[proba.between(0.25, 0.75).to_numpy()].head(2 * CHUNK)
    assert len(hard) == 2 * CHUNK
    platform.replayed += 8000
    platform.replay(hard, with_labels=False)
    meta, checks = _estimate(platform)
    # A challenger trained on no new label would be the champion again: the drop waits for the drift bar's labels, here
    # CHUNK more than the earlier tests of this module brought.
    record = platform.model.registry.champion_record()
    assert record is not None
    new = platform.model.event_log.counts().label_watermark - record.label_seq_cutoff
    monkeypatch.setenv("MLPLATFORM_MIN_NEW_LABELLED_FOR_DRIFT", str(new + CHUNK))
    waiting = platform.tick(ADULT.retraining_sensor, None)
    says = f"estimated drop, waiting for labels: {new} new labelled events of {new + CHUNK} needed"
    assert not waiting.run_requests and (waiting.skip_message or "").startswith(says), waiting.skip_message
    first = hard.head(CHUNK)  # their labels come back; the latest events, the drop's, still have none
    assert not platform.model.event_log.add_labels(first[EVENT_ID].tolist(), canonical_labels(first, platform.spec).tolist()).conflicts
    assert float(str(meta[RECENT_ESTIMATE])) < 0.8 * float(str(meta["reference"]))
    assert not checks[ESTIMATE_FLOOR_CHECK].passed, "below the AUC floor 0.6 or the live precision/recall floors"
    monkeypatch.setenv("MLPLATFORM_RETRAIN_ON_ESTIMATED_DROP", "false")
    off = platform.tick(ADULT.retraining_sensor, None)
    assert not off.run_requests and "estimated drop: off" in (off.skip_message or "")
    monkeypatch.delenv("MLPLATFORM_RETRAIN_ON_ESTIMATED_DROP")
    tick = platform.tick(ADULT.retraining_sensor, None)
    assert len(tick.run_requests or []) == 1, tick.skip_message
    tags = (tick.run_requests or [])[0].tags
    assert tags[REASON_TAG] == ESTIMATED_DROP and tags[ESTIMATED_METRIC_TAG] == "roc_auc"
    assert float(tags[ESTIMATED_REFERENCE_TAG]) == pytest.approx(float(str(meta["reference"])), abs=1e-4)
    again = platform.tick(ADULT.retraining_sensor, tick.cursor)
    assert not again.run_requests and "is from before the latest retraining" in (again.skip_message or ""), again.skip_message
    assert tags[ESTIMATE_TAG] in (tick.cursor or "")


def test_labels_of_the_recent_events_supersede_an_estimated_drop_they_contradict(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Realized performance supersedes the estimate where labels came back (the estimation probe: an estimated 6 % fall
    retrained though the labels of the same events, already in, said 3.8 %). The champion's hard cases again, each
    labelled as it predicted: estimated as a drop, realized as none."""
    candidates = platform.rows.iloc[platform.replayed : platform.replayed + 8000]
    predicted = platform.model.registry.load_predictor(1).predict(candidates)
    hard = candidates[predicted["probability"].between(0.25, 0.75).to_numpy()].head(CHUNK).copy()
    hard[platform.spec.label] = predicted["prediction"][predicted["probability"].between(0.25, 0.75).to_numpy()].head(CHUNK).to_numpy()
    platform.replayed += 8000
    platform.replay(hard)
    meta, _ = _estimate(platform)
    assert meta[RECENT_LABELLED] == CHUNK and float(str(meta[RECENT_ESTIMATE])) < 0.8 * float(str(meta["reference"]))
    assert float(str(meta["recent_realized"])) > float(str(meta["reference"])), "right on every one of them"
    monkeypatch.setenv("MLPLATFORM_MIN_NEW_LABELLED_FOR_DRIFT", "1")  # labels enough: a drop the labels did not withdraw would fire
    tick = platform.tick(ADULT.retraining_sensor, None)
    assert not tick.run_requests, "an estimated drop the labels contradict"
    said = tick.skip_message or ""
    assert f"labels came back for {CHUNK} of these events, where realized roc_auc is" in said and "not a drop once realized performance supersedes" in said, said


def test_a_champion_logged_without_an_estimator_is_skipped_with_the_reason(platform: Platform) -> None:
    registry = platform.model.registry
    window = platform.model.event_log.labelled_window(CHAMPION_ROWS)
    old = train(window, platform.spec, TrainingConfig(min_rows=100, trials=1, num_boost_round=50))  # no estimator attached: a pre-estimation model
    version = int(registry.log_model(old, window, {}, {}).version)
    registry.promote(version, "test: a model from before estimation")
    assert registry.load_predictor(version).estimator is None
    meta, checks = _estimate(platform)
    assert meta[SKIPPED] is True and NO_ESTIMATOR in str(meta[SKIP_REASON])
    assert all(c.passed and "no estimate" in (c.description or "") for c in checks.values())
    tick = platform.tick(ADULT.retraining_sensor, None)
    assert not tick.run_requests and "latest performance estimate was skipped" in (tick.skip_message or "")


def test_an_unreadable_estimator_leaves_the_model_serving_and_estimation_says_why(platform: Platform) -> None:
    """The estimator is a monitoring extra: one damaged estimator.json made the champion unloadable (serving answered
    "no champion", every retraining failed) and estimated_performance failed three retries without naming it (the
    estimation probe). A version logged without one for a small hold-out says so, not "before estimation existed"."""
    registry = platform.model.registry
    window = platform.model.event_log.labelled_window(CHAMPION_ROWS)
    fitted = train(window.iloc[:-300], platform.spec, TrainingConfig(min_rows=100, trials=1, num_boost_round=50))
    small = int(registry.log_model(fitted, window, {}, {ESTIMATOR: f"{NO_ESTIMATOR_PREFIX}only 15 hold-out events; at least 20 are needed"}).version)
    assert registry.load_predictor(small).no_estimator == f"{ESTIMATOR_NOT_FITTED}: only 15 hold-out events; at least 20 are needed"
    fitted.predictor.estimator = fit_performance_estimator(fitted.predictor, window.iloc[-300:], platform.spec, seed=7)
    before = set(platform.settings.state_dir.rglob(ESTIMATOR_FILE))
    version = int(registry.log_model(fitted, window, {}, {}).version)
    [damaged] = set(platform.settings.state_dir.rglob(ESTIMATOR_FILE)) - before
    registry.promote(version, "test: a champion whose estimator file is damaged")
    damaged.write_text('{"method": "cbpe", "task": "binary"', encoding="utf-8")  # cut short
    loaded = registry.load_predictor(version)
    assert loaded.estimator is None and f"({ESTIMATOR_FILE}) cannot be read (JSONDecodeError" in loaded.no_estimator
    assert len(loaded.predict(window.head(5))) == 5, "the model itself serves"
    meta, checks = _estimate(platform)
    assert meta[SKIPPED] is True and f"champion v{version}: its performance estimator ({ESTIMATOR_FILE}) cannot be read" in str(meta[SKIP_REASON])
    assert all(c.passed for c in checks.values())
    damaged.unlink()
    assert "FileNotFoundError" in registry.load_predictor(version).no_estimator
