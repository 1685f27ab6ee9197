"""The feature transformer, LightGBM training (and its choice among candidate windows) and the logged model: raw records in,
the same predictions everywhere."""

import json
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlplatform.domain.features import FeatureTransformer, normalise_category
from mlplatform.domain.predictor import BOOSTER_DIGEST, PREDICTION, PROBABILITY, ModelFileDamaged, Predictor
from mlplatform.stores.registry import Registry
from mlplatform.domain.spec import DatasetSpec, parse_spec
from pydantic import ValidationError

from mlplatform.domain.evaluation import classes_training_lacks, decide, default_floor, passes_floor, score
from mlplatform.domain.estimation import load_estimator
from mlplatform.domain.threshold import BEST_F1, MIN_POSITIVES, best_f1_threshold, choose_threshold
from mlplatform.domain.training import (TrainingConfig, TrainingError, TrainingResult, check_window, fit_performance_estimator, fit_transformer, refit, train,
                                       tuned_params)
from mlplatform.domain.window_choice import train_best_window
from mlplatform.pipeline.retraining import change_window, evidence_on, judge, prepare_window, prune_snapshots, train_on_best_window
from mlplatform.settings import Settings
from mlplatform.domain.validation import EVENT_ID, LABEL, validate_frame

FAST = TrainingConfig(min_rows=100, trials=2, seconds=30, num_boost_round=300, early_stopping_rounds=10)


@pytest.fixture(scope="module")
def window(adult_rows: pd.DataFrame, adult_spec: DatasetSpec) -> pd.DataFrame:
    return validate_frame(adult_rows.head(2500), adult_spec, generated_id_prefix="t", generated_time_start_us=0).events


@pytest.fixture(scope="module")
def trained(window: pd.DataFrame, adult_spec: DatasetSpec) -> TrainingResult:
    return train(window, adult_spec, FAST)


def test_categories_are_normalised_the_same_from_every_source() -> None:
    assert normalise_category(pd.Series([1.0, 2.5, np.nan, 3.0])).tolist() == ["1", "2.5", pd.NA, "3"]
    assert normalise_category(pd.Series([" a ", "", None, "b"])).tolist() == ["a", pd.NA, pd.NA, "b"]
    assert normalise_category(pd.Series([1, 2], dtype="int64")).tolist() == ["1", "2"]
    assert normalise_category(pd.Series([1e300, -4.0])).tolist() == ["1e+300", "-4"]
    assert normalise_category(pd.Series([7.0, 5.0], dtype=object)).tolist() == ["7", "5"], "all whole numbers (a review: TypeError)"


def test_unseen_missing_and_absent_values_become_missing_not_errors() -> None:
    fitted = FeatureTransformer(["x"], ["c", "d"], [("c", "d")]).fit(pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"], "d": ["p", "p"]}))
    assert fitted.categories == {"c": ["a", "b"], "d": ["p"], "c × d": ["a × p", "b × p"]}
    raw = pd.DataFrame({"x": ["3", "inf", None], "c": ["a", "zzz", None], "extra": [1, 2, 3]})
    out = fitted.transform(raw)
    assert out.columns.tolist() == ["x", "c", "d", "c × d"]
    assert out["x"].tolist()[0] == 3.0 and math.isnan(out["x"].tolist()[1]) and math.isnan(out["x"].tolist()[2])
    assert out["c"].tolist()[0] == "a" and out["c"].isna().tolist() == [False, True, True]
    assert out["d"].isna().all() and out["c × d"].isna().all()
    assert fitted.unseen_counts(raw) == {"c": 1}
    again = FeatureTransformer.from_dict(fitted.to_dict())
    pd.testing.assert_frame_equal(again.transform(raw), out)


def test_training_uses_the_latest_rows_for_early_stopping(trained: TrainingResult, window: pd.DataFrame) -> None:
    assert trained.train_rows + trained.validation_rows == len(window)
    assert trained.validation_rows == int(len(window) * FAST.validation_fraction)
    assert 1 <= trained.best_iteration < FAST.num_boost_round and trained.trials == 2
    assert trained.importance["gain"].is_monotonic_decreasing
    assert set(trained.importance["feature"]) == {*window.columns[3:], "education × occupation"}, "the spec's names, not LightGBM's (spaces as _)"


def test_predictions_are_deterministic_and_well_formed(trained: TrainingResult, window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    first = trained.predictor.predict(window.head(50))
    again = train(window, adult_spec, FAST).predictor.predict(window.head(50))
    pd.testing.assert_frame_equal(first, again)
    assert set(first[PREDICTION]) <= {"<=50K", ">50K"} and first[PROBABILITY].between(0, 1).all()
    assert trained.predictor.predict(window.head(0)).empty


def test_saved_predictor_loads_back_identical(trained: TrainingResult, window: pd.DataFrame, tmp_path: Path) -> None:
    files = trained.predictor.save(tmp_path)
    loaded = Predictor.load(files["booster"], files["pipeline"])
    pd.testing.assert_frame_equal(loaded.predict(window.head(100)), trained.predictor.predict(window.head(100)))


@pytest.mark.parametrize("digest", [True, False], ids=["digest recorded", "saved before digests"])
def test_a_damaged_booster_file_is_refused_before_lightgbm_reads_it(trained: TrainingResult, tmp_path: Path, digest: bool) -> None:
    """The operator probe: LightGBM reading a booster file cut short killed the process (a segmentation fault), a healthy
    serving process included, where a missing file was a clear error."""
    files = trained.predictor.save(tmp_path)
    booster, pipeline = Path(files["booster"]), Path(files["pipeline"])
    if not digest:
        pipeline.write_text(json.dumps({k: v for k, v in json.loads(pipeline.read_text()).items() if k != BOOSTER_DIGEST}))
    whole = booster.read_bytes()
    booster.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(ModelFileDamaged, match="SHA-256 differs: cut short or changed" if digest else "ends before its trees do"):
        Predictor.load(booster, pipeline)
    booster.write_bytes(whole.replace(b"Tree=0", b"Tree=7", 1))
    if digest:
        with pytest.raises(ModelFileDamaged, match="SHA-256 differs"):
            Predictor.load(booster, pipeline)
    booster.write_bytes(whole)
    assert Predictor.load(booster, pipeline).booster.num_trees() == trained.predictor.booster.num_trees()


def test_the_logged_model_is_self_contained(trained: TrainingResult, window: pd.DataFrame, adult_spec: DatasetSpec, tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "artifacts").as_uri(), adult_spec)
    version = registry.log_model(trained, window, {"valid_roc_auc": 0.9}, {"mlplatform.window.rows": str(len(window))})
    assert str(version.version) == "1" and version.tags["mlplatform.window.rows"] == str(len(window))
    model = mlflow.pyfunc.load_model(f"models:/{registry.name}/1")
    raw = window.drop(columns=[EVENT_ID, LABEL]).head(20).copy()
    raw.loc[0, "workclass"] = "Never-seen-before"
    served = model.predict(raw)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), trained.predictor.predict(raw).reset_index(drop=True))
    # As a client reads a CSV (int64 numbers) or sends JSON (numbers for categoricals, a dict): MLflow's input schema
    # refused int64 for a numeric feature, before the model's own rules.
    as_read = raw.assign(age=raw["age"].astype("int64"), **{"education-num": raw["education-num"].astype("int64")})
    pd.testing.assert_frame_equal(model.predict(as_read).reset_index(drop=True), served.reset_index(drop=True))
    pd.testing.assert_frame_equal(model.predict(raw.head(2).to_dict("records")), served.head(2))
    pd.testing.assert_frame_equal(model.predict(raw.head(2).to_dict("list")), served.head(2))  # what MLflow's scoring server passes on
    assert model.predict([]).empty
    assert model.predict(raw.iloc[0].to_dict())["prediction"].tolist() == served["prediction"].head(1).tolist()
    with pytest.raises(ValueError, match=r"the model needs the feature columns \['age'\]"):
        model.predict(raw.drop(columns="age"))
    run = registry.client.get_run(version.run_id)
    assert run.data.params["num_leaves"] and run.data.metrics["best_iteration"] == trained.best_iteration
    assert run.data.params["decision_threshold"] == "0.5", "the spec sets none: the default"
    assert {a.path for a in registry.client.list_artifacts(version.run_id)} >= {"feature_importance.json", "dataset_spec.yaml"}
    assert registry.versions()[0].aliases == ["challenger"]


def _rare_class(decision_threshold: float | str | None) -> tuple[DatasetSpec, pd.DataFrame]:
    """A stream whose positive class is 1 event in 40, learnable (ROC AUC about 0.88) but never above 0.5 for most of its
    events."""
    spec = parse_spec({"name": "rare", "task": "binary", "label": "y", "classes": ["ok", "fraud"], "positive_class": "fraud",
                       "features": {"x": "numeric", "z": "numeric"}, **({"decision_threshold": decision_threshold} if decision_threshold else {})})
    rng = np.random.default_rng(3)
    x, z = rng.normal(size=6000), rng.normal(size=6000)
    frame = pd.DataFrame({"x": x, "z": z, "y": np.where(rng.random(6000) < 1 / (1 + np.exp(6 - 2.5 * x)), "fraud", "ok")})
    return spec, validate_frame(frame, spec, generated_id_prefix="r", generated_time_start_us=0).events


def test_a_rare_positive_class_is_predicted_at_the_threshold_of_best_f1_which_travels_with_the_model(tmp_path: Path) -> None:
    """The new-user probe: on a 1:40 class the model never predicted the class (every probability below 0.5), so its
    precision and recall read 0 and the live floors on them fired for ever. `decision_threshold: best_f1` chooses the
    threshold on the training's validation part; the saved model, its estimator and a refit read scores with it."""
    plain, events = _rare_class(None)
    tuned_spec, _ = _rare_class(BEST_F1)
    window, holdout = events.iloc[:4000], events.iloc[4000:]
    default, tuned = train(window, plain, FAST), train(window, tuned_spec, FAST)
    at_default, at_best = score(plain, holdout[LABEL], default.predictor.predict(holdout)), score(tuned_spec, holdout[LABEL], tuned.predictor.predict(holdout))
    assert default.predictor.threshold == 0.5 and at_default["recall"] < 0.05, at_default
    assert 0.0 < tuned.predictor.threshold < 0.5 and at_best["f1"] > at_default["f1"] + 0.15, (tuned.predictor.threshold, at_best)
    files = tuned.predictor.save(tmp_path)
    loaded = Predictor.load(files["booster"], files["pipeline"])
    assert loaded.threshold == tuned.predictor.threshold
    pd.testing.assert_frame_equal(loaded.predict(holdout), tuned.predictor.predict(holdout))
    estimator = fit_performance_estimator(tuned.predictor, holdout, tuned_spec, seed=7)
    assert estimator.reference["f1"] == pytest.approx(at_best["f1"]) and estimator.reference["recall"] == pytest.approx(at_best["recall"])
    assert load_estimator(json.loads(json.dumps(estimator.to_dict()))).estimate(*tuned.predictor.features_and_scores(holdout), 100).metrics["recall"] > 0.1
    assert refit(tuned, window, tuned_spec, FAST).predictor.threshold == tuned.predictor.threshold
    fixed_spec, _ = _rare_class(0.3)
    assert train(window, fixed_spec, FAST).predictor.threshold == 0.3


@pytest.mark.parametrize(("recorded", "read"), [(None, 0.5), (0.25, 0.25), (1.5, "threshold 1.5 is not a probability"), ("0.3", "threshold '0.3'")])
def test_the_threshold_a_pipeline_file_records_is_read_or_refused(trained: TrainingResult, tmp_path: Path, recorded: object, read: object) -> None:
    """A model saved before thresholds were kept reads 0.5, as it was trained; a value no threshold can be is a damaged
    file, not a model that would predict one class for ever."""
    files = trained.predictor.save(tmp_path)
    pipeline = Path(files["pipeline"])
    data = {k: v for k, v in json.loads(pipeline.read_text()).items() if k != "threshold"}
    pipeline.write_text(json.dumps(data if recorded is None else {**data, "threshold": recorded}))
    if isinstance(read, float):
        assert Predictor.load(files["booster"], pipeline).threshold == read
    else:
        with pytest.raises(ModelFileDamaged, match=re.escape(str(read))):
            Predictor.load(files["booster"], pipeline)


def test_the_threshold_of_best_f1_lies_between_scores_and_never_splits_a_tie() -> None:
    ten = MIN_POSITIVES

    def rows(*pairs: tuple[float, int]) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat([p for p, _ in pairs], ten), np.repeat([y for _, y in pairs], ten)

    assert best_f1_threshold(*rows((0.9, 1), (0.8, 0), (0.3, 1), (0.2, 0), (0.1, 0))) == pytest.approx(0.25)
    assert best_f1_threshold(*rows((0.5, 1), (0.1, 0), (0.5, 0))) == pytest.approx(0.3), "the 0.5s go together"
    assert best_f1_threshold(*rows((0.7, 1), (0.6, 1))) == pytest.approx(0.6), "every row positive: the lowest score"
    # The diff review: one positive ranked first set the threshold halfway to the next score (0.7 here), and saturated
    # scores set it at 1 (or 0), which loading the model refuses; halfway between two neighbouring floats fell on the lower.
    few = np.array([0.9, *np.linspace(0.5, 0.01, 200)]), np.array([1, *[0] * 200])
    assert best_f1_threshold(*few) is None and choose_threshold(BEST_F1, *few) == 0.5, "too few positives to choose on: the default"
    saturated = best_f1_threshold(np.ones(15), np.array([1] * ten + [0] * 5))
    assert saturated is not None and 0.0 < saturated < 1.0 and 1.0 >= saturated
    lower = np.nextafter(0.3, 0.0)
    neighbours = best_f1_threshold(np.array([0.3] * ten + [lower] * ten), np.array([1] * ten + [0] * ten))
    assert neighbours is not None and lower < neighbours <= 0.3, "the lower score stays below it"
    with_nan = best_f1_threshold(np.array([*np.linspace(0.9, 0.8, ten), *[np.nan] * 5]), np.array([1] * ten + [0] * 5))
    assert with_nan == pytest.approx(0.8), "a NaN score is no cut of its own (the threshold came out NaN)"
    assert choose_threshold(None, np.array([0.9]), np.array([True])) == 0.5 and choose_threshold(0.2, np.array([0.9]), np.array([True])) == 0.2


class Stop(BaseException):
    """What a checkpoint raises: an interrupt is no Exception."""


@pytest.mark.parametrize("stage", ["trial", "refit"])
def test_training_stops_only_at_its_checkpoints(trained: TrainingResult, window: pd.DataFrame, adult_spec: DatasetSpec, stage: str) -> None:
    """A stop lands where LightGBM is whole: before a trial and after every boosting round, of tuning and of the refit
    (interrupted anywhere, its wrapper freed a booster twice, a segfault, or lost the interrupt in a __del__)."""
    calls: list[int] = []

    def checkpoint() -> None:
        calls.append(1)
        if len(calls) == 25:
            raise Stop

    config = replace(FAST, checkpoint=checkpoint)
    with pytest.raises(Stop):
        if stage == "trial":
            train(window, adult_spec, config)
        else:
            refit(trained, window, adult_spec, config)
    assert len(calls) == 25


def test_a_stop_lands_before_tuning_begins(window: pd.DataFrame, adult_spec: DatasetSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second stop probe: a signal as training began was held 6.9 s, through the window's transform and the tuning's
    set-up, until the first trial's checkpoint."""
    import optuna

    studies: list[object] = []
    create_study = optuna.create_study
    monkeypatch.setattr(optuna, "create_study", lambda *args, **kwargs: studies.append(1) or create_study(*args, **kwargs))

    def checkpoint() -> None:
        raise Stop

    with pytest.raises(Stop):
        train(window, adult_spec, replace(FAST, checkpoint=checkpoint))
    assert studies == []


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["<=50K"] * 150, r"one class only \(\['<=50K'\]\)"),
        (["<=50K", ">50K"] * 40, "only 80 labelled events in the window; at least 100 are needed"),
        ([None] * 200, "only 0 labelled events"),
        # Classes renamed after these were labelled: encoded as "not the positive class", every 'high' trained as a negative.
        (["<=50K", ">50K", "high"] * 50, re.escape("labels that are no class of the spec ['<=50K', '>50K']: 'high' × 50; were the classes renamed")),
    ],
)
def test_windows_that_cannot_train_say_why(window: pd.DataFrame, adult_spec: DatasetSpec, labels: list[str | None], message: str) -> None:
    bad = window.head(len(labels)).assign(label=labels)
    with pytest.raises(TrainingError, match=message):
        train(bad, adult_spec, FAST)


def test_a_constant_regression_label_is_refused() -> None:
    spec = parse_spec({"name": "reg", "task": "regression", "label": "y", "features": {"x": "numeric"}})
    frame = pd.DataFrame({"x": np.arange(200.0), LABEL: 5.0})
    with pytest.raises(TrainingError, match="the label is constant"):
        check_window(frame, spec, 100)


def _flipped(window: pd.DataFrame, start: int) -> pd.DataFrame:
    """`window` whose concept flips at row `start`: every later label swapped."""
    swap = {"<=50K": ">50K", ">50K": "<=50K"}
    flipped = window.copy()
    flipped.loc[start:, LABEL] = flipped.loc[start:, LABEL].map(swap)
    return flipped


def test_after_a_concept_flip_the_recent_window_wins_on_the_holdout(window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    stream = _flipped(window, 1000)
    train_part, holdout = stream.iloc[:2200], stream.iloc[2200:]
    choice = train_best_window(train_part, holdout, adult_spec, FAST, (2500, 1300))
    full, recent = choice.candidates
    assert (full.window, full.train_rows, recent.window, recent.train_rows) == (2500, 2200, 1300, 1000)
    assert choice.window == 1300 and recent.holdout_score > full.holdout_score + 0.05, choice.candidates
    assert choice.result.train_rows + choice.result.validation_rows == 1000
    assert choice.result.trials == 1  # tuned on the largest window only; the recent one is one fit with its parameters
    assert choice.metrics() == {"window_2500_holdout_roc_auc": full.holdout_score, "window_1300_holdout_roc_auc": recent.holdout_score}


def test_on_a_stationary_stream_the_full_window_wins_or_ties(window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    choice = train_best_window(window.iloc[:2200], window.iloc[2200:], adult_spec, FAST, (1300, 2500))
    full, recent = choice.candidates
    assert full.window == 2500 and choice.result.trials == FAST.trials
    assert choice.window == 2500 or recent.holdout_score - full.holdout_score < 0.01, choice.candidates


def test_a_window_features_accepts_is_one_training_takes(window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    """features asked min_training_rows of the window and its share (1 - holdout_fraction) of the training part, while
    training asked all of min_training_rows of that part: a window of 200 to 249 labelled events passed features and
    failed every training with 'only 192 labelled events in the window' (the review). One rule now, both ways."""
    settings = Settings(min_training_rows=200, tuning_trials=1, training_window_since_change=False)
    train_part, holdout, transformer = prepare_window(settings, adult_spec, window.head(240))
    assert (len(train_part), len(holdout)) == (192, 48)
    assert train_on_best_window(settings, adult_spec, train_part, holdout, transformer).validation.train_rows > 0
    with pytest.raises(TrainingError, match="only 199 labelled events in the window; at least 200 are needed \\(min_training_rows"):
        prepare_window(settings, adult_spec, window.head(199))


def test_one_candidate_is_the_single_fixed_window_and_useless_ones_are_skipped(trained: TrainingResult, window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    holdout = window.tail(200)
    single = train_best_window(window, holdout, adult_spec, FAST, (len(window) + 200,))
    pd.testing.assert_frame_equal(single.result.predictor.predict(window.head(200)), trained.predictor.predict(window.head(200)))
    assert single.result.params == trained.params and [c.window for c in single.candidates] == [len(window) + 200]
    choice = train_best_window(window.iloc[:2200], window.iloc[2200:], adult_spec, FAST, (5000, 2600, 350))
    assert [(c.window, c.skipped) for c in choice.candidates] == [
        (5000, None), (2600, "the same 2200 rows as window 5000"), (350, "50 training rows, fewer than 100")]
    assert choice.window == 5000 and list(choice.metrics()) == ["window_5000_holdout_roc_auc"]
    assert tuned_params(choice.result).keys() == {"learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "bagging_fraction", "lambda_l2"}


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([], "give at least one window size"),
        ([5000, 0], r"window sizes must be ≥ 1 events, got \[0\]"),
        ([5000, -3, 2000], r"window sizes must be ≥ 1 events, got \[-3\]"),
        ([5000, 2000, 5000], r"repeated window sizes \[5000\]"),
        ([60000, 5000], r"\[60000\] larger than training_window \(50000\)"),
        ([2100, 1000], r"the largest, 2100, leaves 100 training rows beside a full window's hold-out of 2000 \(holdout_fraction, holdout_max_rows\), "
                       r"fewer than the 160 min_training_rows asks for"),
    ],
)
def test_bad_candidate_windows_are_refused_naming_the_setting(candidates: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=rf"training_window_candidates \(MLPLATFORM_TRAINING_WINDOW_CANDIDATES\): {message}"):
        Settings(training_window_candidates=candidates)


def test_a_live_quality_that_could_never_give_a_verdict_is_refused_naming_both_settings() -> None:
    with pytest.raises(ValueError, match=r"live_quality_min_events \(MLPLATFORM_LIVE_QUALITY_MIN_EVENTS\) 600 is more than the live_quality_window "
                                         r"\(MLPLATFORM_LIVE_QUALITY_WINDOW\) 500 it counts them in"):
        Settings(live_quality_min_events=600)
    assert Settings(live_quality_min_events=500).live_quality_window == 500


def test_a_training_that_could_never_run_is_refused_naming_both_settings() -> None:
    with pytest.raises(ValueError, match=r"min_training_rows \(MLPLATFORM_MIN_TRAINING_ROWS\) 200 is more than the training_window "
                                         r"\(MLPLATFORM_TRAINING_WINDOW\) 150, the most labelled events a training reads"):
        Settings(training_window=150, min_training_rows=200)
    assert Settings(training_window=200, min_training_rows=200).training_window == 200


def test_candidate_windows_default_to_the_whole_window_and_its_newest_tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(training_window=20000).window_candidates == (20000, 2000)
    assert Settings(training_window_candidates=[3000, 20000, 8000], training_window=20000).window_candidates == (20000, 8000, 3000)
    monkeypatch.setenv("MLPLATFORM_TRAINING_WINDOW_CANDIDATES", "[50000]")
    assert Settings().window_candidates == (50000,)
    monkeypatch.setenv("MLPLATFORM_TRAINING_WINDOW_CANDIDATES", '["many"]')
    with pytest.raises(ValueError, match="training_window_candidates"):
        Settings()


def test_a_holdout_where_the_metric_is_undefined_keeps_the_largest_window(window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    one_class = window.iloc[2200:][lambda f: f[LABEL] == "<=50K"]  # ROC AUC needs both classes
    choice = train_best_window(window.iloc[:2200], one_class, adult_spec, FAST, (2500, 1300))
    assert choice.window == 2500 and [c.holdout_score for c in choice.candidates] == [None, None] and choice.metrics() == {}


# FAST as Settings, with the two candidate windows of the concept-flip test
REFIT_SETTINGS = {"tuning_trials": 2, "min_training_rows": 100, "num_boost_round": 300, "early_stopping_rounds": 10, "training_window": 2500,
                  "training_window_candidates": [2500, 1300]}


def test_the_served_refit_also_learns_the_holdout_and_the_validation_model_stays_the_evidence(window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    stream = _flipped(window, 1000)
    train_part, holdout = stream.iloc[:2200], stream.iloc[2200:]
    transformer = fit_transformer(train_part, adult_spec)
    fit = train_on_best_window(Settings(**REFIT_SETTINGS), adult_spec, train_part, holdout, transformer)  # type: ignore[arg-type]
    validated, served = fit.validation, fit.served
    assert fit.choice.window == 1300 and fit.refit_rows == served.train_rows == 1000 + len(holdout) and served.validation_rows == 0
    assert served.predictor.booster.num_trees() == validated.best_iteration  # the validated rounds (binary: one tree a round)
    assert served.params == validated.params and served.predictor.transformer is validated.predictor.transformer
    # the chosen window's training rows and the hold-out, nothing else: the same fit again, and a different one without the hold-out
    again = refit(validated, pd.concat([train_part.iloc[-1000:], holdout]), adult_spec, FAST)
    pd.testing.assert_frame_equal(served.predictor.predict(holdout), again.predictor.predict(holdout))
    without = refit(validated, train_part.iloc[-1300:], adult_spec, FAST).predictor.predict(holdout)
    assert not without[PROBABILITY].equals(served.predictor.predict(holdout)[PROBABILITY])
    in_sample, out_of_sample = (score(adult_spec, holdout[LABEL], p.predict(holdout))["log_loss"] for p in (served.predictor, validated.predictor))
    assert in_sample < out_of_sample, (in_sample, out_of_sample)

    off = train_on_best_window(Settings(**REFIT_SETTINGS, refit_on_holdout=False), adult_spec, train_part, holdout, transformer)  # type: ignore[arg-type]
    assert off.served is off.validation and off.refit_rows == 0  # today's behaviour: the validation model is served
    pd.testing.assert_frame_equal(off.served.predictor.predict(holdout), validated.predictor.predict(holdout))
    with pytest.raises(TrainingError, match="only 50 labelled events in the window; at least 100 are needed"):
        refit(validated, holdout.head(50), adult_spec, FAST)


def test_after_a_concept_flip_a_window_since_the_champions_errors_rose_is_offered_and_wins(window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    champion = train(window.head(800), adult_spec, FAST).predictor  # trained before the flip, on rows before 800
    unseen = np.arange(len(window)) >= 800
    stream = _flipped(window, 1400)
    settings = Settings(**{**REFIT_SETTINGS, "training_window_candidates": [2500]})
    since = change_window(settings, stream, champion, unseen)
    assert since is not None and abs(since - (len(window) - 1400)) <= 30, since
    train_part, holdout = stream.iloc[:2200], stream.iloc[2200:]
    fit = train_on_best_window(settings, adult_spec, train_part, holdout, fit_transformer(train_part, adult_spec), since_change=since)
    assert [c.window for c in fit.choice.candidates] == [2500, since] and fit.choice.window == since and fit.since_change == since
    assert fit.refit_rows == since  # the served refit learns the change's rows only, the hold-out included
    # nothing to offer: the stream did not change, the setting is off, no champion, or the champion trained on every row
    assert change_window(settings, window, champion, unseen) is None
    assert change_window(Settings(**REFIT_SETTINGS, training_window_since_change=False), stream, champion, unseen) is None
    assert change_window(settings, stream, None, unseen) is None
    assert change_window(settings, stream, champion, np.zeros(len(window), dtype=bool)) is None
    unlabelled = stream.assign(**{LABEL: stream[LABEL].where(np.arange(len(stream)) % 2 == 0)})  # labels not back yet are not losses
    assert abs(change_window(settings, unlabelled, champion, unseen) - (len(window) - 1400)) <= 60  # type: ignore[operator]


@pytest.mark.parametrize("name", ["refit_on_holdout", "training_window_since_change"])
@pytest.mark.parametrize("value", ["maybe", "2", "", "[true]"])
def test_a_bad_boolean_training_setting_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"MLPLATFORM_{name.upper()}", value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_against_a_refit_champion_only_holdout_rows_after_its_cutoff_are_judged(trained: TrainingResult, window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    holdout = window.tail(600).reset_index(drop=True)
    challenger = train(window.head(1900), adult_spec, FAST).predictor.predict(holdout)  # a validation model's hold-out predictions
    settings = Settings(promotion_margin=0)
    after = judge(settings, adult_spec, holdout, challenger, trained.predictor, np.arange(600) >= 300)
    assert after.judged_rows == 300 and after.challenger_metrics == score(adult_spec, holdout[LABEL].iloc[300:], challenger.iloc[300:])
    assert after.champion_metrics == score(adult_spec, holdout[LABEL].iloc[300:], trained.predictor.predict(holdout.iloc[300:]))
    # The probe: judged again against a champion with a later cut-off, the version's recorded hold-out metrics became those
    # of the rows judged (ROC AUC 0.8397 on 982 rows, where its whole hold-out's is 0.8603).
    assert after.own_metrics == score(adult_spec, holdout[LABEL], challenger) != after.challenger_metrics
    assert after.decision.reason.endswith(" (on the 300 of the 600 hold-out rows labelled after the refit champion's cut-off)"), \
        "said: the new-user probe took the scores for the whole hold-out's"
    few = judge(settings, adult_spec, holdout, challenger, trained.predictor, np.arange(600) >= 500)
    plain = judge(settings, adult_spec, holdout, challenger, trained.predictor)
    assert few.judged_rows == plain.judged_rows == 600 and few.challenger_metrics == plain.challenger_metrics == plain.own_metrics
    assert "trained on 500 of these 600 hold-out rows: only 100 came after its cut-off, fewer than 200" in few.decision.reason
    assert "cut-off" not in plain.decision.reason
    first = judge(settings, adult_spec, holdout, challenger, None, np.arange(600) >= 500)  # no champion: every row
    assert first.judged_rows == 600 and first.decision.promote

    # With few rows after its cut-off, its own hold-out's rows are judged by its validation model's recorded predictions,
    # never in-sample (the probe: challenger 0.8922 against the refit champion's in-sample 0.9404 on the same rows).
    validation = train(window.head(1500), adult_spec, FAST).predictor  # the champion's validation model, its hold-out rows 0-399
    recorded = evidence_on(validation.predict(holdout.iloc[:400]).set_axis(holdout[EVENT_ID].iloc[:400]), holdout.sample(frac=1, random_state=1))
    assert sorted(recorded.index) == list(range(400)), "aligned by event id, whatever the order"
    fair = judge(settings, adult_spec, holdout, challenger, trained.predictor, np.arange(600) >= 500, recorded)
    rows = np.r_[0:400, 500:600]
    assert fair.judged_rows == 500 and fair.challenger_metrics == score(adult_spec, holdout[LABEL].iloc[rows], challenger.iloc[rows])
    mixed = pd.concat([validation.predict(holdout.iloc[:400]), trained.predictor.predict(holdout.iloc[500:])])
    assert fair.champion_metrics == score(adult_spec, holdout[LABEL].iloc[rows], mixed) != few.champion_metrics
    assert "judged out of sample: on 400 rows of its own hold-out by its validation model's predictions recorded at its training, " \
           "on the 100 labelled after its cut-off by its own" in fair.decision.reason
    none_after = judge(settings, adult_spec, holdout, challenger, trained.predictor, np.zeros(600, dtype=bool), recorded)
    assert none_after.judged_rows == 400 and "recorded at its training)" in none_after.decision.reason
    too_few = judge(settings, adult_spec, holdout, challenger, trained.predictor, np.arange(600) >= 550, recorded.head(100))
    assert too_few.judged_rows == 600 and "only 50 came after its cut-off, fewer than 200" in too_few.decision.reason
    enough_after = judge(settings, adult_spec, holdout, challenger, trained.predictor, np.arange(600) >= 300, recorded)
    assert enough_after.champion_metrics == after.champion_metrics, "with enough rows after its cut-off, only they are judged, as before"


def test_a_decision_says_how_sure_its_gain_is_and_can_require_it_above_noise(trained: TrainingResult, window: pd.DataFrame, adult_spec: DatasetSpec) -> None:
    """The estimation probe: a challenger promoted on +0.0033 ROC AUC over 250 rows, worse on every other metric; the
    margin carries no uncertainty. The paired-bootstrap interval of the gain is said; promotion_requires_significance
    acts on it."""
    from mlplatform.domain.paired_bootstrap import improvement_interval, interval_said

    holdout = window.tail(400).reset_index(drop=True)
    theirs = trained.predictor.predict(holdout)
    positive = (holdout[LABEL] == adult_spec.positive_class).to_numpy()
    nudged = theirs.copy()
    lifted = np.flatnonzero(positive)[:3]  # three positives scored a little higher: a real gain, and a tiny one
    nudged.loc[lifted, PROBABILITY] = np.minimum(1.0, nudged.loc[lifted, PROBABILITY] + 0.3)
    plain = judge(Settings(promotion_margin=0), adult_spec, holdout, nudged, trained.predictor)
    assert plain.decision.promote and "; the gain's 95 % interval over 200 resamples of these 400 rows: " in plain.decision.reason, plain.decision.reason
    assert plain.decision.reason.endswith(", within noise: promoted on the margin (promotion_requires_significance is off)"), plain.decision.reason
    strict = Settings(promotion_margin=0, promotion_requires_significance=True)
    refused = judge(strict, adult_spec, holdout, nudged, trained.predictor)
    assert not refused.decision.promote and refused.decision.reason.endswith("within noise: not promoted (promotion_requires_significance)")
    oracle = theirs.assign(**{PROBABILITY: np.where(positive, 0.9, 0.1), PREDICTION: holdout[LABEL].to_numpy()})
    clear = judge(strict, adult_spec, holdout, oracle, trained.predictor)
    assert clear.decision.promote and clear.decision.reason.endswith(", above noise"), clear.decision.reason
    assert "interval" not in judge(strict, adult_spec, holdout, nudged, None).decision.reason, "no champion: nothing to compare"
    three = parse_spec({"name": "w", "task": "multiclass", "label": "y", "classes": ["1", "2", "3"], "features": {"x": "numeric"}})
    labels = pd.Series(np.random.default_rng(2).choice(["1", "2"], 300))
    gained = pd.DataFrame({"proba_1": np.where(labels == "1", 0.8, 0.2), "proba_2": np.where(labels == "1", 0.2, 0.8)})
    before = gained.assign(proba_1=0.5, proba_2=0.5)  # a champion trained before class 3 existed: no proba_3, which scores as 0
    assert improvement_interval(three, "log_loss", False, labels, gained.assign(proba_3=0.0), before) is not None, "the review: it drew none"

    regression = parse_spec({"name": "r", "task": "regression", "label": "y", "features": {"x": "numeric"}})
    y = pd.Series(np.linspace(0, 10, 300))
    halved = improvement_interval(regression, "rmse", False, y, pd.DataFrame({PREDICTION: y + 0.5}), pd.DataFrame({PREDICTION: y + 1.0}))
    assert halved == pytest.approx((0.5, 0.5)), "half the champion's error on every row: a gain of 50 % of its RMSE, whatever the resample"
    assert interval_said("rmse", (0.1, 0.3), 300) == "the gain's 95 % interval over 200 resamples of these 300 rows: +10.00% to +30.00%, above noise"


def test_decide_promotes_on_a_win_only_and_says_when_the_metric_is_undefined(adult_spec: DatasetSpec) -> None:
    """The review: with a margin of 0 a tie promoted ('beats champion 0.8000 by +0.0000'), and the README says the
    champion moves only on a win; a challenger whose metric is undefined on the hold-out (one class) was said to miss
    the floor ('roc_auc nan misses the quality floor'), as if measured."""
    tie = decide(adult_spec, {"roc_auc": 0.8}, {"roc_auc": 0.8}, 0.0, 0.6)
    assert not tie.promote and tie.reason == "challenger roc_auc 0.8000 vs champion 0.8000: +0.0000 is no win"
    win = decide(adult_spec, {"roc_auc": 0.8001}, {"roc_auc": 0.8}, 0.0, 0.6)
    assert win.promote and win.reason.startswith("challenger roc_auc 0.8001 beats champion 0.8000 by +0.0001")
    short = decide(adult_spec, {"roc_auc": 0.805}, {"roc_auc": 0.8}, 0.01, 0.6)
    assert not short.promote and short.reason.endswith("+0.0050 is below the margin 0.01")
    regression = parse_spec({"name": "r", "task": "regression", "label": "y", "features": {"x": "numeric"}})
    assert not decide(regression, {"rmse": 2.0}, {"rmse": 2.0}, 0.0, 10.0).promote and decide(regression, {"rmse": 1.9}, {"rmse": 2.0}, 0.0, 10.0).promote
    # The second new-user probe: an absolute margin rejected a halved RMSE on a label of thousandths and promoted a gain of
    # one in a million on a label of millions. An error in the label's units wins by the margin's share of the champion's.
    tiny = decide(regression, {"rmse": 0.0004}, {"rmse": 0.0009}, 0.002, math.inf)
    assert tiny.promote and tiny.reason == "challenger rmse 4.000e-04 beats champion 9.000e-04 by 55.56% of it (margin 0.20%)", tiny.reason
    huge = decide(regression, {"rmse": 999_999.0}, {"rmse": 1_000_000.0}, 0.002, math.inf)
    assert not huge.promote and huge.reason == "challenger rmse 999,999.00 vs champion 1,000,000.00: +0.00% of it is below the margin 0.20%", huge.reason
    assert decide(regression, {"rmse": 997_000.0}, {"rmse": 1_000_000.0}, 0.002, math.inf).promote, "0.3 % better"
    # The third review: the improvement beside the margin in its terms; a floor of thousandths printed as 0.0000; a champion
    # whose RMSE is infinite could no longer be replaced (a share of infinity is no number).
    assert tiny.improvement == pytest.approx(5 / 9)
    assert decide(regression, {"rmse": 3e-5}, None, 0.002, 2e-5).reason == "challenger rmse 3.000e-05 misses the quality floor (≤ 2.000e-05)"
    assert decide(regression, {"rmse": 5.0}, {"rmse": math.inf}, 0.002, math.inf).promote
    for champion in (None, {"roc_auc": 0.8}):
        undefined = decide(adult_spec, {"roc_auc": math.nan}, champion, 0.0, 0.6)
        assert not undefined.promote and undefined.reason == ("challenger roc_auc is undefined on this hold-out (one class only, say): it cannot be "
                                                              "held to the quality floor (≥ 0.6000), so it is not promoted")


def test_a_binary_challenger_tied_on_roc_auc_wins_on_a_log_loss_a_tenth_lower(adult_spec: DatasetSpec) -> None:
    """The new-user probe: a shift moved the champion's probabilities but kept their order, so it answered wrongly at its
    threshold (accuracy 0.49) while its ROC AUC stayed 0.9999; three retrainings with 0.999 accuracy and AUC 1.0000 were
    rejected ("+0.0001 is below the margin 0.002"), each doubling the drift bar."""
    probe = decide(adult_spec, {"roc_auc": 1.0, "log_loss": 0.0493}, {"roc_auc": 0.9999, "log_loss": 0.6957}, 0.002, 0.6)
    assert probe.promote and probe.reason == ("challenger roc_auc 1.0000 ties champion 0.9999 (+0.0001, within 0.002), and its log_loss 0.0493 is 93% below "
                                              "the champion's 0.6957 (at least 10%, and the margin 0.002): its probabilities fit the hold-out where the "
                                              "champion's do not"), probe.reason
    # Recorded as decided on log loss (the review: "promoted, roc_auc, improvement -0.0015" read as a contradiction).
    assert (probe.metric, probe.higher_is_better, probe.challenger, probe.champion, probe.floor) == ("log_loss", False, 0.0493, 0.6957, 0.6)
    assert probe.improvement == pytest.approx(0.6464)
    assert decide(adult_spec, {"roc_auc": 0.7985, "log_loss": 0.30}, {"roc_auc": 0.8, "log_loss": 0.40}, 0.002, 0.6).promote, "a tie either way"
    close = decide(adult_spec, {"roc_auc": 0.8, "log_loss": 0.37}, {"roc_auc": 0.8, "log_loss": 0.40}, 0.002, 0.6)
    assert not close.promote and close.reason.endswith("+0.0000 is below the margin 0.002"), "7.5 % lower: no win"
    assert not decide(adult_spec, {"roc_auc": 0.79, "log_loss": 0.1}, {"roc_auc": 0.8, "log_loss": 0.4}, 0.002, 0.6).promote, "a worse ranking is no tie"
    assert not decide(adult_spec, {"roc_auc": 0.8}, {"roc_auc": 0.8, "log_loss": 0.4}, 0.002, 0.6).promote, "no log loss: no tie-break"
    # The review: a margin of 1 ("no challenger wins") let a ranking 0.33 worse win; a margin of 0 turned the tie-break off.
    assert not decide(adult_spec, {"roc_auc": 0.62, "log_loss": 0.30}, {"roc_auc": 0.95, "log_loss": 0.40}, 1.0, 0.6).promote
    assert not decide(adult_spec, {"roc_auc": 1.0, "log_loss": 0.0493}, {"roc_auc": 0.9999, "log_loss": 0.6957}, 1.0, 0.6).promote, "nor by less than it"
    assert decide(adult_spec, {"roc_auc": 1.0, "log_loss": 0.0493}, {"roc_auc": 1.0, "log_loss": 0.6957}, 0.0, 0.6).promote, "a margin of 0: a tie broken"
    shadow = decide(adult_spec, {"roc_auc": 1.0, "log_loss": 0.05}, {"roc_auc": 0.9999, "log_loss": 0.7}, 0.002, -math.inf, on=("roc_auc", True))
    assert shadow.promote and shadow.metric == "log_loss", "served events keep the positive class's probability: a shadow tie is broken too"
    live = decide(adult_spec, {"accuracy": 0.9, "log_loss": 0.05}, {"accuracy": 0.9, "log_loss": 0.7}, 0.002, -math.inf, on=("accuracy", True))
    assert not live.promote, "on another metric, no tie-break"
    multiclass = parse_spec({"name": "m", "task": "multiclass", "label": "y", "classes": ["a", "b", "c"], "features": {"x": "numeric"}})
    assert not decide(multiclass, {"log_loss": 0.4, "roc_auc": 0.9}, {"log_loss": 0.4, "roc_auc": 0.9}, 0.002, math.inf).promote


def test_a_binary_challenger_ahead_on_roc_auc_by_a_tie_loses_on_a_log_loss_a_tenth_higher(adult_spec: DatasetSpec) -> None:
    """The River probe: a window spanning two concepts ranked the hold-out at ROC AUC 1.0000 against the champion's 0.9999
    with log loss 0.5698 against 0.0197 (accuracy 0.54 against 0.99); at margin 0 it was promoted and served accuracy
    fell from 0.996 to 0.744. The tie is broken both ways, and the window choice ranks candidates the same way."""
    from mlplatform.domain.evaluation import outranks

    probe = decide(adult_spec, {"roc_auc": 1.0, "log_loss": 0.5698}, {"roc_auc": 0.9999, "log_loss": 0.0197}, 0.0, 0.6)
    assert not probe.promote and probe.reason == ("challenger roc_auc 1.0000 ties champion 0.9999 (+0.0001, within 0.002), but its log_loss 0.5698 "
                                                  "is above the champion's 0.0197, 97% lower (at least 10%, and the margin 0.0): its probabilities "
                                                  "do not fit the hold-out where the champion's do"), probe.reason
    assert (probe.metric, probe.challenger, probe.champion) == ("log_loss", 0.5698, 0.0197)
    assert decide(adult_spec, {"roc_auc": 1.0, "log_loss": 0.021}, {"roc_auc": 0.9999, "log_loss": 0.0197}, 0.0, 0.6).promote, "7 % higher: a tie"
    assert decide(adult_spec, {"roc_auc": 0.9, "log_loss": 0.5}, {"roc_auc": 0.8, "log_loss": 0.3}, 0.002, 0.6).promote, "a better ranking by more than a tie"
    assert decide(adult_spec, {"roc_auc": 0.9, "log_loss": 0.2}, {"roc_auc": 0.8}, 0.002, 0.6).promote, "no champion log loss: AUC alone"
    wide, narrow = {"roc_auc": 1.0, "log_loss": 0.5698}, {"roc_auc": 0.9997, "log_loss": 0.02}
    assert outranks("roc_auc", True, narrow, wide) and not outranks("roc_auc", True, wide, narrow)
    assert outranks("roc_auc", True, {"roc_auc": 0.99, "log_loss": 0.9}, {"roc_auc": 0.98, "log_loss": 0.1}), "beyond a tie: the ranking"
    assert not outranks("roc_auc", True, {"roc_auc": 0.9, "log_loss": 0.30}, {"roc_auc": 0.9, "log_loss": 0.31}), "a tie both ways: the leader stays"
    assert outranks("log_loss", False, {"log_loss": 0.3}, {"log_loss": 0.31}) and not outranks("rmse", False, {"rmse": math.nan}, {"rmse": 1.0})


def test_the_default_regression_floor_predicts_the_training_labels_mean() -> None:
    """The second new-user probe: on a trending stream the default floor, the RMSE of predicting the hold-out's own mean
    (0.7108, known to no model), refused a first model (0.8792) that beat the training mean (1.316) by a third, and the
    reason gave the floor as a bare number."""
    spec = parse_spec({"name": "trend", "task": "regression", "label": "y", "features": {"x": "numeric"}})
    holdout = pd.DataFrame({"x": np.arange(100.0), LABEL: 10.0 + np.arange(100.0) / 50, EVENT_ID: [f"e{i}" for i in range(100)]})
    train_labels = pd.Series(np.arange(400.0) / 50 + 2.0)  # the trend before the hold-out: mean 6.0
    assert default_floor(spec, holdout[LABEL], train_labels) == pytest.approx(float(np.sqrt(np.mean((holdout[LABEL] - 5.99) ** 2))))
    assert default_floor(spec, holdout[LABEL]) == pytest.approx(float(holdout[LABEL].std(ddof=0))), "no training labels: the hold-out's, as before"
    lagging = pd.DataFrame({"prediction": holdout[LABEL] - 1.0})  # a model a step behind the trend: far better than the training mean
    settings = Settings(quality_floor=None)
    judged = judge(settings, spec, holdout, lagging, None, train_labels=train_labels)
    assert judged.floor_passed and judged.decision.promote
    assert not judge(settings, spec, holdout, lagging, None).floor_passed, "against the hold-out's own mean, as before"
    wrong = pd.DataFrame({"prediction": holdout[LABEL] - 10.0})  # worse than the training mean
    refused = judge(settings, spec, holdout, wrong, None, train_labels=train_labels)
    assert not refused.floor_passed and refused.decision.reason.endswith(
        "(the default floor: the rmse of predicting the training labels' mean; a quality_floor set for rmse replaces it)"), refused.decision.reason


def test_a_multiclass_floor_failed_by_a_class_the_training_rows_lack_says_so() -> None:
    """One hold-out event of a class the training rows never had failed the first model's floor (log loss 0.8929 against
    0.8375; 0.8367 without it) with nothing but the two numbers: no model trained on those rows predicts that class."""
    spec = parse_spec({"name": "weather", "task": "multiclass", "label": "y", "classes": ["1", "2", "3", "4"], "features": {"x": "numeric"}})
    rng = np.random.default_rng(4)
    train_labels = pd.Series(rng.choice(["1", "2", "3"], 2400, p=[0.6, 0.3, 0.1]))
    holdout = pd.Series([*rng.choice(["1", "2", "3"], 599, p=[0.6, 0.3, 0.1]), "4"])
    prior = train_labels.value_counts(normalize=True)
    predicted = pd.DataFrame({"prediction": "1", "probability": prior["1"], **{f"proba_{c}": prior.get(c, 1e-15) for c in spec.classes or []}},
                             index=holdout.index)
    log_loss = score(spec, holdout, predicted)["log_loss"]
    assert not passes_floor(log_loss, default_floor(spec, holdout), False), "the training prior itself fails the floor"
    assert classes_training_lacks(spec, train_labels, holdout) == (
        "the hold-out has events of classes the training rows lack ('4' × 1), which no model trained on them predicts: "
        "a training window that reaches events of those classes, or a quality_floor set for log_loss, lets it pass")
    assert classes_training_lacks(spec, train_labels, holdout.iloc[:599]) == ""
    assert classes_training_lacks(spec, train_labels, holdout, floor_set=True).endswith(
        "a training window that reaches events of those classes lets it pass"), "a floor set is not suggested again (the third probe)"
    binary = parse_spec({"name": "wet", "task": "binary", "label": "y", "classes": ["3", "4"], "positive_class": "4", "features": {"x": "numeric"}})
    assert classes_training_lacks(binary, train_labels, holdout) == "", "binary: the floor is an AUC, which a class count does not move"
    # The third new-user probe: the default floor was the log loss of the hold-out's own class shares, known to no model; a
    # first model that beat the training shares was refused. It is now the training labels' shares (each class once more).
    shifted = pd.Series(rng.choice(["1", "2", "3"], 600, p=[0.5, 0.35, 0.15]))
    counts = train_labels.value_counts().reindex(spec.classes or [], fill_value=0) + 1
    shares = counts / counts.sum()
    as_trained = pd.DataFrame({"prediction": "1", "probability": shares["1"], **{f"proba_{c}": shares[c] for c in spec.classes or []}}, index=shifted.index)
    floor = default_floor(spec, shifted, train_labels)
    assert floor == pytest.approx(score(spec, shifted, as_trained)["log_loss"]) and floor > default_floor(spec, shifted), "the hold-out's own was lower"
    assert math.isfinite(default_floor(spec, holdout, train_labels)), "a class the training rows lack is unlikely, not impossible"


def test_feature_snapshots_beyond_the_newest_are_removed_never_the_one_just_written(tmp_path: Path) -> None:
    """The soak probe: every retraining left its snapshot folder (up to 1.5 MB) in work/<model>, and nothing removed them."""
    model_dir = tmp_path / "work" / "adult"
    older = []
    for i in range(5):
        (folder := model_dir / f"run-{i}").mkdir(parents=True)
        (folder / "train.parquet").write_bytes(b"x")
        os.utime(folder, (1_000_000 + i, 1_000_000 + i))
        older.append(folder)
    (model_dir / "handover.json").write_text("{}", encoding="utf-8")  # not a snapshot folder: left alone
    (model_dir / "adult").mkdir()  # the review: a model named `handover` shares work/handover with the runs' handover folders
    os.utime(model_dir / "adult", (0, 0))
    current = model_dir / "run-now"
    current.mkdir()
    os.utime(current, (0, 0))  # whatever its time, the snapshot just written stays
    assert prune_snapshots(current, keep=3) == 3
    assert sorted(p.name for p in model_dir.iterdir()) == ["adult", "handover.json", "run-3", "run-4", "run-now"]
    assert prune_snapshots(current, keep=3) == 0


@pytest.mark.parametrize("value", ["1", "0", "-3", "many", "2.5", ""])
def test_a_bad_feature_snapshots_keep_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """At least 2: the snapshot just written and the one a run started just before may still read."""
    monkeypatch.setenv("MLPLATFORM_FEATURE_SNAPSHOTS_KEEP", value)
    with pytest.raises(ValidationError, match="feature_snapshots_keep"):
        Settings()


def test_one_value_in_two_spellings_is_one_category_to_the_model_and_to_drift(tmp_path: Path) -> None:
    """The estimation probe: a categorical landed from CSV as `0.0` and `1.0` and served as 0 and 1 (JSON numbers) was
    learnt as five categories for three values, and the next drift report flagged the column at p = 0 on spelling alone."""
    from mlplatform.pipeline.drift import compare

    landed = ["0.0"] * 60 + ["0.5"] * 50 + ["1.0"] * 30
    served = ["0"] * 40 + ["1"] * 30
    transformer = FeatureTransformer(numeric=[], categorical=["https"]).fit(pd.DataFrame({"https": landed + served}))
    assert transformer.categories == {"https": ["0.0", "0.5", "1.0"]}, "each value once, in its commonest spelling"
    codes = transformer.transform(pd.DataFrame({"https": ["0", "0.0", "1", "TRUE", None]}))["https"]
    assert codes.tolist()[:3] == ["0.0", "0.0", "1.0"] and pd.isna(codes.iloc[3]) and pd.isna(codes.iloc[4])
    assert FeatureTransformer(numeric=[], categorical=["c"]).fit(pd.DataFrame({"c": ["x", "y", "x"]})).categories == {"c": ["x", "y"]}
    # A cross of a value in two spellings is of its one spelling, at fit as at transform (the review: fitted from the raw
    # spellings, '0 × x' was a category no row had, and the rows of '0.0 × x' were missing in training itself).
    crossed = FeatureTransformer(numeric=[], categorical=["a", "b"], crosses=[("a", "b")])
    raw = pd.DataFrame({"a": ["0.0"] * 10 + ["0"] * 5, "b": ["y"] * 10 + ["x"] * 5})
    assert crossed.fit(raw).categories["a × b"] == ["0.0 × x", "0.0 × y"] and crossed.transform(raw)["a × b"].notna().all()

    spec = parse_spec({"name": "p", "task": "binary", "label": "y", "classes": ["0", "1"], "positive_class": "1", "features": {"https": "categorical"}})
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"https": rng.choice(["0.0", "0.5", "1.0"], 2000, p=[0.5, 0.3, 0.2])})
    current = pd.DataFrame({"https": rng.choice(["0", "0.5", "1"], 2000, p=[0.5, 0.3, 0.2])})
    [column], _, _, _ = compare(spec, reference, current, 0.5, tmp_path / "spelled.json.xz")
    assert not column.drifted, column
