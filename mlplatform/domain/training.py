"""LightGBM training on a time-ordered window: early stopping on the latest slice, tuning within a budget."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlplatform.domain.estimation import Estimator, fit_estimator
from mlplatform.domain.features import FeatureTransformer
from mlplatform.domain.predictor import Predictor
from mlplatform.domain.spec import DatasetSpec, Task
from mlplatform.domain.threshold import DEFAULT_THRESHOLD, choose_threshold
from mlplatform.domain.validation import LABEL

if TYPE_CHECKING:  # LightGBM (with scikit-learn and SciPy) and Optuna load when a model is trained, not with the code location
    import lightgbm as lgb
    import optuna

log = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "lambda_l2": 1.0,
}


class TrainingError(ValueError):
    """The window cannot produce a model (too few rows, a single class, ...)."""


class TooFewLabelled(TrainingError):
    """The window has fewer labelled events than training asks for: a setting's number, which the caller names."""


@dataclass(frozen=True)
class TrainingConfig:
    validation_fraction: float = 0.2
    min_rows: int = 200
    trials: int = 8
    seconds: float = 60.0
    num_boost_round: int = 1000
    early_stopping_rounds: int = 30
    seed: int = 7
    # One OpenMP thread: windows are small (≤ 50k rows) and on a shared 2-core machine extra threads spin
    # against Dagster, serving and each other; measured 10x slower with 2 threads under load.
    num_threads: int = 1
    # Called after every boosting round (with Dask, while its fit is waited for) and before every trial: where a stop
    # may land. LightGBM's Python wrapper is not safe to interrupt anywhere else: an interrupt in
    # Booster.model_from_string freed its handle twice (a segfault), and one in a Dataset's __del__ was lost. The caller
    # holds signals during training and raises them here.
    checkpoint: Callable[[], None] | None = field(default=None, compare=False)


@dataclass
class TrainingResult:
    predictor: Predictor
    params: dict[str, Any]
    best_iteration: int
    validation_loss: float
    trials: int
    seconds: float
    train_rows: int
    validation_rows: int
    importance: pd.DataFrame = field(repr=False)


def encode_labels(labels: pd.Series, spec: DatasetSpec) -> np.ndarray:
    """Labels as LightGBM wants them: 0/1, class index, or float."""
    if spec.task is Task.regression:
        return labels.astype("float64").to_numpy()
    if spec.task is Task.binary:
        return (labels == spec.positive_class).astype("int32").to_numpy()
    index = {c: i for i, c in enumerate(spec.classes or [])}
    return labels.map(index).astype("int32").to_numpy()


def _objective(spec: DatasetSpec) -> dict[str, Any]:
    if spec.task is Task.binary:
        return {"objective": "binary", "metric": "binary_logloss"}
    if spec.task is Task.multiclass:
        return {"objective": "multiclass", "metric": "multi_logloss", "num_class": len(spec.classes or [])}
    return {"objective": "regression", "metric": "l2"}


def _checkpoints(config: TrainingConfig) -> list[Callable[[Any], None]]:
    """The LightGBM callback that calls `config.checkpoint` after each boosting round, if there is one."""
    checkpoint = config.checkpoint
    return [] if checkpoint is None else [lambda _env: checkpoint()]


# One boosting run with a trial's parameters: the booster (its best_iteration set by early stopping) and its
# validation loss at that iteration.
Fit = Callable[[dict[str, Any]], "tuple[lgb.Booster, float]"]
# Makes the Fit of a training from its base parameters, config and encoded train/validation parts (weights optional):
# in this process (`_local_fit`), or where the caller says, a Dask cluster's workers (stores/dask_training.py).
FitMaker = Callable[[dict[str, Any], "TrainingConfig", pd.DataFrame, np.ndarray, "np.ndarray | None", pd.DataFrame, np.ndarray], Fit]


def _local_fit(base: dict[str, Any], config: TrainingConfig, x_train: pd.DataFrame, y_train: np.ndarray, w_train: np.ndarray | None,
               x_valid: pd.DataFrame, y_valid: np.ndarray) -> Fit:
    """Boosting in this process, the datasets built once for all trials."""
    import lightgbm as lgb

    train_set = lgb.Dataset(x_train, y_train, weight=w_train, free_raw_data=False)
    valid_set = lgb.Dataset(x_valid, y_valid, reference=train_set, free_raw_data=False)

    def fit(params: dict[str, Any]) -> tuple[lgb.Booster, float]:
        evals: dict[str, Any] = {}
        booster = lgb.train(
            {**base, **params},
            train_set,
            num_boost_round=config.num_boost_round,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False), lgb.record_evaluation(evals), *_checkpoints(config)],
        )
        return booster, float(evals["valid"][base["metric"]][booster.best_iteration - 1])

    return fit


def tuned_params(result: TrainingResult) -> dict[str, Any]:
    """The tuned parameters of `result` (the keys a trial chooses), to start another training from."""
    return {k: result.params[k] for k in DEFAULT_PARAMS}


def fit_transformer(window: pd.DataFrame, spec: DatasetSpec) -> FeatureTransformer:
    """The spec's features, then its history columns (which `window` must hold: see retraining.with_history)."""
    numeric, categorical = spec.model_inputs
    return FeatureTransformer(numeric, categorical, list(spec.crosses), history=[*spec.history_numeric, *spec.history_categorical]).fit(window)


def check_window(window: pd.DataFrame, spec: DatasetSpec, min_rows: int) -> None:
    """Refuse windows that cannot give a meaningful model, with a message that says why."""
    labelled = window[LABEL].notna().sum() if LABEL in window else 0
    if labelled < min_rows:
        raise TooFewLabelled(f"only {labelled} labelled events in the window; at least {min_rows} are needed")
    if spec.is_classification:
        labels = window[LABEL].dropna()
        strangers = labels[~labels.isin(spec.classes or [])].value_counts()
        if len(strangers):  # encoded as "not the positive class" they would have trained silently as negatives
            raise TrainingError(f"the window holds labels that are no class of the spec {spec.classes}: "
                                f"{', '.join(f'{name!r} × {n}' for name, n in strangers.head(10).items())}; were the classes renamed after "
                                "these events were labelled? Map each old name to its class in the spec's label_map: it applies to the "
                                "labels already in the event log too")
        present = sorted(labels.unique())
        if len(present) < 2:
            raise TrainingError(f"the window holds one class only ({present}); a classifier needs at least two")
    elif window[LABEL].astype("float64").nunique() < 2:
        raise TrainingError("the label is constant in the window; a regression needs variation")


def train(
    window: pd.DataFrame,
    spec: DatasetSpec,
    config: TrainingConfig,
    transformer: FeatureTransformer | None = None,
    weights: np.ndarray | None = None,
    fit_maker: FitMaker | None = None,
    first_params: dict[str, Any] | None = None,
) -> TrainingResult:
    """Fit LightGBM on `window` (oldest first), tuning within the budget.

    `transformer` is the one fitted by the features step; without it one is fitted on the training part. With a
    `fit_maker` every trial boosts where it says (a Dask cluster's workers: stores/dask_training.py); the trials stay one after another.
    The first trial uses `first_params` (default: DEFAULT_PARAMS), so one trial is one fit with known parameters.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    window = window[window[LABEL].notna()].reset_index(drop=True)
    check_window(window, spec, config.min_rows)
    n_valid = max(1, int(len(window) * config.validation_fraction))
    train_part, valid_part = window.iloc[:-n_valid], window.iloc[-n_valid:]
    if transformer is None:
        transformer = fit_transformer(train_part, spec)
    x_train, x_valid = transformer.transform(train_part), transformer.transform(valid_part)
    stop_here = config.checkpoint or (lambda: None)
    stop_here()
    y_train, y_valid = encode_labels(train_part[LABEL], spec), encode_labels(valid_part[LABEL], spec)
    w_train = None if weights is None else weights[window.index[:-n_valid]]
    base = {**_objective(spec), "verbosity": -1, "seed": config.seed, "deterministic": True, "num_threads": config.num_threads,
            "bagging_freq": 1, "feature_pre_filter": False}
    fit = (fit_maker or _local_fit)(base, config, x_train, y_train, w_train, x_valid, y_valid)
    boosters: dict[int, lgb.Booster] = {}

    def objective(trial: optuna.Trial) -> float:
        stop_here()
        params = {
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 200, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        }
        booster, loss = fit(params)
        boosters[trial.number] = booster
        return loss

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.seed))
    study.enqueue_trial(first_params or DEFAULT_PARAMS)
    study.optimize(objective, n_trials=config.trials, timeout=config.seconds, gc_after_trial=False)
    best = study.best_trial
    booster = boosters[best.number]
    threshold = DEFAULT_THRESHOLD if spec.task is not Task.binary else \
        choose_threshold(spec.decision_threshold, booster.predict(x_valid, num_threads=config.num_threads), y_valid == 1)
    predictor = Predictor(booster, transformer, spec.task.value, spec.classes, spec.positive_class, threshold=threshold)
    return TrainingResult(
        predictor=predictor,
        params={**base, **best.params, "num_boost_round": config.num_boost_round, "early_stopping_rounds": config.early_stopping_rounds},
        best_iteration=booster.best_iteration,
        validation_loss=float(best.value),
        trials=len(study.trials),
        seconds=time.perf_counter() - started,
        train_rows=len(train_part),
        validation_rows=len(valid_part),
        importance=_importance(booster, transformer),
    )


def _importance(booster: lgb.Booster, transformer: FeatureTransformer) -> pd.DataFrame:
    """Gain and splits per model input, under the spec's names: LightGBM's own spell a space as '_'."""
    return pd.DataFrame(
        {
            "feature": transformer.output_columns,
            "gain": booster.feature_importance("gain"),
            "splits": booster.feature_importance("split"),
        }
    ).sort_values("gain", ascending=False, ignore_index=True)


def refit(result: TrainingResult, window: pd.DataFrame, spec: DatasetSpec, config: TrainingConfig, weights: np.ndarray | None = None) -> TrainingResult:
    """`result`'s configuration (its parameters, transformer and `best_iteration` boosting rounds) fitted once more on
    every labelled row of `window` (oldest first), nothing held back.

    Why: validation needs rows the model never saw (the latest ones); once the configuration is chosen on them, a
    model that also learns from them serves the stream's present better. No early stopping here (there is nothing
    left to stop on): the rounds are the validated ones. The result keeps `result`'s validation loss, trials and decision
    threshold (the evidence the configuration was chosen on); `train_rows` are the refit's rows, `validation_rows` 0.
    """
    import lightgbm as lgb

    started = time.perf_counter()
    labelled = window[LABEL].notna().to_numpy()
    window = window[labelled].reset_index(drop=True)
    check_window(window, spec, config.min_rows)
    transformer = result.predictor.transformer
    params = {k: v for k, v in result.params.items() if k not in ("num_boost_round", "early_stopping_rounds")}
    rows = lgb.Dataset(transformer.transform(window), encode_labels(window[LABEL], spec), weight=None if weights is None else weights[labelled])
    booster = lgb.train(params, rows, num_boost_round=max(1, result.best_iteration), callbacks=_checkpoints(config))
    return TrainingResult(
        predictor=Predictor(booster, transformer, spec.task.value, spec.classes, spec.positive_class, threshold=result.predictor.threshold),
        params=result.params,
        best_iteration=result.best_iteration,
        validation_loss=result.validation_loss,
        trials=result.trials,
        seconds=result.seconds + time.perf_counter() - started,
        train_rows=len(window),
        validation_rows=0,
        importance=_importance(booster, transformer),
    )


def fit_performance_estimator(predictor: Predictor, holdout: pd.DataFrame, spec: DatasetSpec, seed: int) -> Estimator:
    """The estimator of `predictor`'s performance without labels, fitted on a labelled hold-out it was not trained on."""
    holdout = holdout[holdout[LABEL].notna()]
    features, scores = predictor.features_and_scores(holdout)
    return fit_estimator(spec.task.value, spec.classes, features, scores, encode_labels(holdout[LABEL], spec), seed, predictor.threshold)
