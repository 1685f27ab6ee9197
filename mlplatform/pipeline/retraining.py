"""The retraining loop's steps, free of Dagster: window → features, features → challenger, challenger vs champion.

The assets call these; so do the benchmarks, so what is measured is what runs.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlplatform.domain.change_point import MIN_SEGMENT, event_losses, loss_shift
from mlplatform.domain.evaluation import (NO_CHAMPION, Decision, NoChangeBaseline, classes_training_lacks, decide, default_floor, no_change_baseline,
                                          passes_floor, primary_metric, score)
from mlplatform.domain.paired_bootstrap import improvement_interval, interval_said
from mlplatform.stores.dask_cluster import dask_client
from mlplatform.stores.eventlog import EventStore
from mlplatform.domain.features import FeatureTransformer, HistoryFeaturesMissing
from mlplatform.domain.history import Backdated, HorizonReach, backdated, history_frame, horizon_reach
from mlplatform.domain.predictor import ModelFileDamaged, Predictor, scores_records_of, spec_mismatch
from mlplatform.stores.registry import TRAINING, ChampionRecord, Registry, json_tag
from mlplatform.settings import Settings, env_name
from mlplatform.domain.spec import DatasetSpec, Task
from mlplatform.domain.estimation import EstimationError
from mlplatform.domain.keys import (AWAITING_SHADOW, CHALLENGER_SCORE, DECISION_METRIC_TAG, CHANGE_WINDOW, CHOSEN_WINDOW, DECISION, DECISION_REASON, ESTIMATOR, ESTIMATOR_REFERENCE_PREFIX, NO_ESTIMATOR_PREFIX, PROMOTED, REFIT,
                                    REFIT_ROWS, REFIT_ROWS_TAG, REJECTED, SHADOW_METRICS, VALIDATION_PREDICTIONS, WINDOW_CANDIDATES,
                                    mlflow_tag, window_tag)
from mlplatform.pipeline.shadow import ShadowComparison, compare_on_live, shadow_wait_left
from mlplatform.domain.timeformat import iso_time
from mlplatform.domain.training import FitMaker, TooFewLabelled, TrainingConfig, TrainingResult, check_window, fit_performance_estimator, fit_transformer, refit
from mlplatform.domain.window_choice import Weights, WindowChoice, train_best_window
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL

if TYPE_CHECKING:
    from mlflow.data.pandas_dataset import PandasDataset

log = logging.getLogger(__name__)

TRAIN_FILE = "train.parquet"
HOLDOUT_FILE = "holdout.parquet"
TRANSFORMER_FILE = "transformer.json"
WINDOW_FILE = "window.json"


@dataclass(frozen=True)
class Window:
    """Which events a snapshot holds: what MLflow records as the model's data window."""

    rows: int
    train_rows: int
    holdout_rows: int
    first_event_id: str
    last_event_id: str
    start: str
    train_end: str
    end: str
    label_seq_cutoff: int
    event_log: str
    seq_cutoff: int | None = None  # the window's last event in order of arrival (None: a snapshot from before it was kept)

    def as_tags(self) -> dict[str, str]:
        return {window_tag(k): str(v) for k, v in asdict(self).items()}

    def narrowed_to(self, train_part: pd.DataFrame) -> "Window":
        """This snapshot's window from the first of `train_part` (the training rows of the chosen candidate window) on: what
        a version's tags say it learned from, so drift compares against those rows, not the older ones it left out."""
        return replace(self, rows=len(train_part) + self.holdout_rows, train_rows=len(train_part), first_event_id=str(train_part[EVENT_ID].iloc[0]),
                       start=iso_time(train_part[EVENT_TIME].iloc[0]))


@dataclass(frozen=True)
class FeatureSnapshot:
    folder: Path
    window: Window
    transformer: FeatureTransformer
    reach: list[HorizonReach] = field(default_factory=list)  # as the snapshot was built (not kept in its folder)
    backdated: Backdated | None = None  # as the snapshot was built, with history features (not kept in its folder)

    @property
    def train(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / TRAIN_FILE)

    @property
    def holdout(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / HOLDOUT_FILE)

    def history_missing_in_every_row(self, spec: DatasetSpec) -> list[str]:
        """The spec's history columns missing in every training row, which a model learns nothing from: a series dated
        before 1970 lost every label of its history, and nothing said so (the airline probe)."""
        names = [*spec.history_numeric, *spec.history_categorical]
        if not names:
            return []
        train = pd.read_parquet(self.folder / TRAIN_FILE, columns=names)
        return [name for name in names if train[name].isna().all()]

    @property
    def train_labels(self) -> pd.Series:
        """The training rows' labels alone: the default regression floor predicts their mean."""
        return pd.read_parquet(self.folder / TRAIN_FILE, columns=[LABEL])[LABEL]

    @classmethod
    def load(cls, folder: Path) -> "FeatureSnapshot":
        folder = Path(folder)
        window = Window(**json.loads((folder / WINDOW_FILE).read_text(encoding="utf-8")))
        transformer = FeatureTransformer.from_dict(json.loads((folder / TRANSFORMER_FILE).read_text(encoding="utf-8")))
        return cls(folder, window, transformer)


def training_config(settings: Settings, checkpoint: Callable[[], None] | None = None) -> TrainingConfig:
    """The settings' training budget; `checkpoint` (TrainingConfig.checkpoint) is where a stop may land in it."""
    return TrainingConfig(
        validation_fraction=settings.validation_fraction,
        min_rows=settings.train_part_min_rows,
        trials=settings.tuning_trials,
        seconds=settings.tuning_seconds,
        num_boost_round=settings.num_boost_round,
        early_stopping_rounds=settings.early_stopping_rounds,
        seed=settings.seed,
        checkpoint=checkpoint,
    )


def split_window(window: pd.DataFrame, holdout_fraction: float, holdout_max_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time-ordered split: the latest `holdout_fraction` (at most `holdout_max_rows`) is the hold-out.

    The cap matters after drift: with a plain fraction, a challenger would never see the newest events
    it is meant to adapt to, because they all land in the hold-out.
    """
    n_holdout = max(1, min(int(len(window) * holdout_fraction), holdout_max_rows))
    return window.iloc[:-n_holdout].reset_index(drop=True), window.iloc[-n_holdout:].reset_index(drop=True)


def prepare_window(settings: Settings, spec: DatasetSpec, window: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, FeatureTransformer]:
    """Check a labelled window, split off the hold-out and fit the transformer on the training part. Too few labelled
    events says which setting asks for them (a new user met "at least 200 are needed" with no name to look up)."""
    setting = f"min_training_rows: the model's loop in defs.yaml, or {env_name('min_training_rows')}"
    try:
        check_window(window, spec, settings.min_training_rows)
        train_part, holdout = split_window(window, settings.holdout_fraction, settings.holdout_max_rows)
        check_window(train_part, spec, settings.train_part_min_rows)
    except TooFewLabelled as exc:
        raise TooFewLabelled(f"{exc} ({setting})") from None
    return train_part, holdout, fit_transformer(train_part, spec)


def unseen_after(frame: pd.DataFrame, label_seq_cutoff: int) -> np.ndarray:
    """The rows of `frame` a version whose window ended at `label_seq_cutoff` never trained on: labelled after it, or
    not yet labelled. The one reading of a version's cut-off for the window choice, the judgement and the estimates."""
    return ~(frame["label_seq"].to_numpy(dtype="float64") <= label_seq_cutoff)


def with_history(log: EventStore, spec: DatasetSpec, window: pd.DataFrame, cutoff: int) -> pd.DataFrame:
    """`window` (oldest first) with the spec's history columns, each as known at its event's time (see `history_events`)."""
    if spec.history is None or window.empty:
        return window
    return _joined_history(window, history_events(log, spec, window, cutoff), spec)


def history_events(log: EventStore, spec: DatasetSpec, window: pd.DataFrame, cutoff: int) -> pd.DataFrame:
    """What `window`'s history columns are computed over: every event of its span, labelled or not, plus
    `history.warmup_events` (or the longest time window, when it holds more) before it so that windows and lags start
    warm; labels past `cutoff` are not used, so the snapshot is what the cut-off saw."""
    assert spec.history is not None
    first, last = int(window[EVENT_TIME].iloc[0]), int(window[EVENT_TIME].iloc[-1])
    warm = log.history_warmup(first, spec.history.warmup_events, spec.history.longest_window_us)
    span = log.events_between(start_us=first, end_us=last + 1, label_times=True)
    # Columns missing throughout a part (the span's labels, none come back yet) are left out of the concatenation and come
    # back missing: pandas warns that it will stop ignoring them when it picks a column's type (a FutureWarning users saw).
    events = (pd.concat([warm.dropna(axis=1, how="all"), span.dropna(axis=1, how="all")], ignore_index=True).reindex(columns=span.columns)
              if len(warm) else span)
    late = (events["label_seq"] > cutoff).to_numpy()
    events.loc[late, [LABEL, "label_seq", "label_time"]] = None
    return events


def _joined_history(window: pd.DataFrame, events: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    return window.join(history_frame(events, spec).set_axis(events[EVENT_ID].to_numpy()), on=EVENT_ID)


def build_feature_snapshot(settings: Settings, spec: DatasetSpec, log: EventStore, folder: Path) -> FeatureSnapshot:
    """Read the latest labelled window (with its history columns), split off the hold-out, fit the transformer, keep all three."""
    cutoff = log.counts().label_watermark
    window, reach, late = log.labelled_window(settings.training_window, max_label_seq=cutoff), [], None
    if spec.history is not None and not window.empty:  # and how far back its rows found their keys' previous events
        events = history_events(log, spec, window, cutoff)
        in_window = events[EVENT_ID].isin(window[EVENT_ID]).to_numpy()
        window, reach, late = _joined_history(window, events, spec), horizon_reach(events, spec, in_window), backdated(events, in_window)
    train_part, holdout, transformer = prepare_window(settings, spec, window)
    folder.mkdir(parents=True, exist_ok=True)
    train_part.to_parquet(folder / TRAIN_FILE, index=False)
    holdout.to_parquet(folder / HOLDOUT_FILE, index=False)
    (folder / TRANSFORMER_FILE).write_text(json.dumps(transformer.to_dict()), encoding="utf-8")
    info = Window(
        rows=len(window),
        train_rows=len(train_part),
        holdout_rows=len(holdout),
        first_event_id=str(window[EVENT_ID].iloc[0]),
        last_event_id=str(window[EVENT_ID].iloc[-1]),
        start=iso_time(window[EVENT_TIME].iloc[0]),
        train_end=iso_time(train_part[EVENT_TIME].iloc[-1]),
        end=iso_time(window[EVENT_TIME].iloc[-1]),
        label_seq_cutoff=int(window["label_seq"].max()),
        event_log=log.location,
        seq_cutoff=int(window["seq"].max()),
    )
    (folder / WINDOW_FILE).write_text(json.dumps(asdict(info)), encoding="utf-8")
    return FeatureSnapshot(folder, info, transformer, reach, late)


def prune_snapshots(folder: Path, keep: int) -> int:
    """Remove all but the newest `keep` snapshot folders beside `folder` (a model's, one per run that built features),
    never `folder` itself; returns how many went. Each holds a training window's rows: the soak probe's state grew by
    1.5 MB per retraining with nothing removing them. A run, and its retry, read only their own snapshot, made minutes
    before; `keep` runs later nothing reads it."""
    snapshots = []
    for sibling in folder.parent.iterdir():
        if sibling == folder or not ((sibling / TRAIN_FILE).exists() or (sibling / WINDOW_FILE).exists()):
            continue  # not a snapshot: the review, a model named `handover` beside the run handover files in work/handover
        try:
            snapshots.append((sibling.stat().st_mtime, sibling))
        except FileNotFoundError:  # removed meanwhile by another run of the model pruning too
            continue
    gone = [path for _, path in sorted(snapshots, reverse=True)[max(0, keep - 1):]]
    for old in gone:
        shutil.rmtree(old, ignore_errors=True)
    return len(gone)


def holdout_dataset(spec: DatasetSpec, snapshot: FeatureSnapshot) -> PandasDataset:
    """The snapshot's hold-out as an MLflow dataset sourced from the event log (the same digest at training and evaluation)."""
    from mlplatform.stores.mlflow_records import window_dataset  # MLflow loads when a model is logged, not with the code location

    return window_dataset(spec, snapshot.holdout, snapshot.window.event_log, "holdout")


# Against a refit champion, the hold-out rows labelled after its cut-off (it never trained on them) decide when there
# are at least this many: a few hundred rows tell accuracies 0.02-0.03 apart, the differences a retrain is for. With
# fewer, the whole hold-out decides and the reason says the champion was scored in-sample on part of it.
MIN_JUDGED_ROWS = 200


class EvidenceError(ValueError):
    """A refit challenger whose recorded hold-out evidence does not cover the hold-out it is evaluated on."""


@dataclass(frozen=True)
class ChallengerFit:
    """trained_model's training: the window choice (its `result` is the validation model, never trained on the
    hold-out: its hold-out predictions are the evidence) and the model registered and served, which is the refit on
    the chosen window's training rows plus the hold-out under `refit_on_holdout`, else the validation model itself."""

    choice: WindowChoice
    served: TrainingResult
    refit_rows: int  # rows the served model was refit on; 0: not refit
    since_change: int | None = None  # the candidate window since the champion's errors rose (change_window); None: none offered

    @property
    def validation(self) -> TrainingResult:
        return self.choice.result


@dataclass(frozen=True)
class Challenger:
    version: int
    run_id: str
    result: TrainingResult
    validation_metrics: dict[str, float]
    fit: ChallengerFit
    window: Window  # what its version's window tags say it learned from


def loaded_champion(registry: Registry, version: int) -> tuple[Predictor | None, str | None]:
    """The champion's predictor, or None and why its files cannot be loaded (deleted, damaged): serving cannot load it
    either, so it is no benchmark to keep, as a champion the spec no longer fits. Before, every retraining failed on
    it, and nothing could ever replace a champion nothing could serve (the review)."""
    from mlflow.exceptions import MlflowException

    try:
        return registry.load_predictor(version), None
    except (FileNotFoundError, ModelFileDamaged, MlflowException) as exc:
        # Only what stays so: a store or network that fails for a while (a timeout, a 503, a full disk) fails the step,
        # which is retried, where judging as if there were no champion would promote on the floor alone (the diff review).
        if isinstance(exc, MlflowException) and exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        log.warning("champion v%s cannot be loaded: %s: %s", version, type(exc).__name__, exc)
        return None, f"{type(exc).__name__}: {exc}"


def train_challenger(settings: Settings, spec: DatasetSpec, registry: Registry, snapshot: FeatureSnapshot, extra_tags: dict[str, str],
                     checkpoint: Callable[[], None] | None = None) -> Challenger:
    """Train on the snapshot's training part (refit on the hold-out too, under `refit_on_holdout`) and register the
    served model as the new `challenger`, with the validation model's hold-out predictions as its evidence. A stop lands
    at `checkpoint` (TrainingConfig.checkpoint) in the training, and before the version is logged."""
    from mlplatform.stores.mlflow_records import EVALUATION, window_dataset

    stop_here = checkpoint or (lambda: None)  # between the stretches before training, as it begins (the stop probe: 6.9 s held)
    holdout = snapshot.holdout
    window = pd.concat([snapshot.train, holdout], ignore_index=True)
    record = registry.champion_record()
    unseen = None if record is None else unseen_after(window, record.label_seq_cutoff)
    locatable = unseen is not None and int((unseen & window[LABEL].notna().to_numpy()).sum()) >= 2 * MIN_SEGMENT
    champion = loaded_champion(registry, record.version)[0] if record is not None and locatable and settings.training_window_since_change else None
    stop_here()
    since_change = change_window(settings, window, champion, unseen)
    stop_here()
    with dask_client(settings.dask_scheduler, env_name("dask_scheduler")) as cluster:
        fit_maker = None
        if cluster is not None:
            from mlplatform.stores.dask_training import dask_fit  # Dask loads where a cluster trains, not with the code location

            fit_maker = partial(dask_fit, cluster)
        fit = train_on_best_window(settings, spec, snapshot.train, holdout, snapshot.transformer, fit_maker=fit_maker, since_change=since_change,
                                   checkpoint=checkpoint)
    validated, choice = fit.validation, fit.choice
    train_part = snapshot.train.iloc[-validated.train_rows - validated.validation_rows :]
    valid = train_part.iloc[-validated.validation_rows :]
    validation_metrics = {f"valid_{k}": v for k, v in score(spec, valid[LABEL], validated.predictor.predict(valid)).items() if not math.isnan(v)}
    estimator_params, estimator_metrics = attach_estimator(validated.predictor, fit.served.predictor, holdout, spec, settings.seed)
    learned = snapshot.window.narrowed_to(train_part)
    tags = {**learned.as_tags(), **extra_tags, mlflow_tag("dataset"): spec.name, ESTIMATOR: estimator_params["estimator"], REFIT_ROWS_TAG: str(fit.refit_rows)}
    logged = replace(fit.served, params={**fit.served.params, **estimator_params, CHOSEN_WINDOW: choice.window, REFIT: str(fit.refit_rows > 0).lower(),
                                         CHANGE_WINDOW: "none" if fit.since_change is None else str(fit.since_change),
                                         WINDOW_CANDIDATES: ",".join(str(c.window) for c in choice.candidates)})
    trained_on = pd.concat([train_part, holdout], ignore_index=True) if fit.refit_rows else train_part
    metrics = {**validation_metrics, **estimator_metrics, **choice.metrics(), REFIT_ROWS: float(fit.refit_rows),
               "validated_train_rows": float(validated.train_rows), "validated_validation_rows": float(validated.validation_rows)}
    evidence = {VALIDATION_PREDICTIONS: validated.predictor.predict(holdout).assign(**{EVENT_ID: holdout[EVENT_ID].to_numpy()})} if fit.refit_rows else {}
    stop_here()  # the last point a stop leaves nothing registered
    version = registry.log_model(logged, trained_on, metrics, tags, {
        TRAINING: window_dataset(spec, trained_on, snapshot.window.event_log, "train"), EVALUATION: holdout_dataset(spec, snapshot)}, evidence)
    return Challenger(int(version.version), version.run_id, fit.served, validation_metrics, fit, learned)


def change_window(settings: Settings, window: pd.DataFrame, champion: Predictor | None, unseen: np.ndarray | None) -> int | None:
    """The events (hold-out included, as training_window counts them) since the champion's errors rose on the labelled
    rows of `window` (oldest first) it never trained on (`unseen`), or None: `training_window_since_change` off, no
    champion, one that needs history columns the window lacks, or no significant rise (`change_point.loss_shift`)."""
    if not settings.training_window_since_change or champion is None or unseen is None:
        return None
    positions = np.flatnonzero(unseen & window[LABEL].notna().to_numpy())
    rows = window.iloc[positions]
    try:
        predicted = champion.predict(rows)
    except HistoryFeaturesMissing as exc:  # a champion of history columns the spec no longer declares: the candidates alone
        log.warning("no window since a change: the champion cannot score this window (%s)", exc)
        return None
    at = loss_shift(event_losses(champion, rows[LABEL], predicted))
    return None if at is None else len(window) - int(positions[at])


def train_on_best_window(settings: Settings, spec: DatasetSpec, train_part: pd.DataFrame, holdout: pd.DataFrame, transformer: FeatureTransformer,
                         weights: Weights | None = None, fit_maker: FitMaker | None = None, since_change: int | None = None,
                         checkpoint: Callable[[], None] | None = None) -> ChallengerFit:
    """trained_model's training: one model per `training_window_candidates` window, and the window `since_change`
    (`change_window`) when there is one, the best on the hold-out kept, then (`refit_on_holdout`) its configuration refit
    on the chosen window's training rows plus the hold-out. The asset and the adaptation benchmark both train through here."""
    config = training_config(settings, checkpoint)
    candidates = tuple(dict.fromkeys((*settings.window_candidates, *(() if since_change is None else (since_change,)))))
    choice = train_best_window(train_part, holdout, spec, config, candidates, transformer=transformer, weights=weights, fit_maker=fit_maker)
    if not settings.refit_on_holdout:
        return ChallengerFit(choice, choice.result, 0, since_change)
    validated = choice.result.train_rows + choice.result.validation_rows
    labelled = train_part[train_part[LABEL].notna()]
    rows = pd.concat([labelled.iloc[len(labelled) - validated :], holdout], ignore_index=True)
    served = refit(choice.result, rows, spec, config, None if weights is None else weights(len(rows)))
    return ChallengerFit(choice, served, served.train_rows, since_change)


def attach_estimator(validated: Predictor, served: Predictor, holdout: pd.DataFrame, spec: DatasetSpec, seed: int) -> tuple[dict[str, str], dict[str, float]]:
    """Fit the performance estimator on the validation model's hold-out scores (rows it never saw) and attach it to the
    served model (logged with it: a refit's own scores there are in-sample); the MLflow params and metrics that record
    it. A hold-out too small for one leaves the model without, saying why."""
    try:
        estimator = fit_performance_estimator(validated, holdout, spec, seed)
    except EstimationError as exc:
        return {"estimator": f"{NO_ESTIMATOR_PREFIX}{exc}"}, {}
    served.estimator = estimator
    params = {"estimator": estimator.method, "estimator_fitted_on": "holdout"}
    metrics = {f"{ESTIMATOR_REFERENCE_PREFIX}{k}": v for k, v in estimator.reference.items()}
    return params, {**metrics, "estimator_holdout_rows": float(estimator.holdout_rows)}


@dataclass(frozen=True)
class Evaluation:
    challenger_version: int
    champion_version: int | None
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    own_metrics: dict[str, float]  # the challenger's on its whole hold-out (its version tag holdout_metrics)
    decision: Decision
    holdout_rows: int
    judged_rows: int  # the hold-out rows the decision scored (those after a refit champion's cut-off, when enough)
    floor_passed: bool
    champion_after: int
    champion_label_seq_cutoff: int
    challenger_predicted: pd.DataFrame = field(repr=False, compare=False)
    shadow: ShadowComparison | None = None  # the same two versions on live labelled events, when there is a champion
    awaiting_shadow: bool = False  # won on the hold-out, not promoted until the shadow evidence is in
    already_champion: bool = False  # the challenger was the champion before this evaluation: nothing to apply
    floor_note: str = ""  # why the floor failed where the challenger could not help it
    kept_by_person: bool = False  # won on the scores, not promoted only because a person pinned or moved the champion
    no_change: NoChangeBaseline | None = None  # the challenger beside each event's last known label, where the spec has a label lag

    @property
    def verdict(self) -> str:
        return PROMOTED if self.decision.promote else AWAITING_SHADOW if self.awaiting_shadow else REJECTED

    def markdown(self) -> str:
        names = sorted(set(self.challenger_metrics) | set(self.champion_metrics or {}))
        head = f"| metric | challenger v{self.challenger_version} | champion {'v' + str(self.champion_version) if self.champion_version else '(none)'} |"
        rows = [head, "|---|---|---|"]
        for name in names:
            ch = self.challenger_metrics.get(name)
            cp = (self.champion_metrics or {}).get(name)
            mark = " **(decides)**" if name == self.decision.metric else ""
            rows.append(f"| {name}{mark} | {'' if ch is None else f'{ch:.4f}'} | {'' if cp is None else f'{cp:.4f}'} |")
        shadow = "" if self.shadow is None else f" Shadow, {self.shadow.summary()}."
        beaten = self.no_change is not None and self.no_change.beaten  # when it is not, the reason says so
        baseline = f"\n\nNo-change baseline: {self.no_change.said()}." if beaten else ""  # type: ignore[union-attr]
        return "\n".join(rows) + f"\n\n**{self.verdict.upper()}**: {self.decision.reason}. Hold-out: {self.holdout_rows} events, {self.judged_rows} judged.{shadow}{baseline}"


@dataclass(frozen=True)
class Judgement:
    challenger_metrics: dict[str, float]  # on the rows judged, as the champion's
    champion_metrics: dict[str, float] | None
    decision: Decision
    floor_passed: bool
    judged: np.ndarray  # the hold-out rows scored
    own_metrics: dict[str, float]  # the challenger's on its whole hold-out: whichever champion it is judged against
    no_change: NoChangeBaseline | None = None

    @property
    def judged_rows(self) -> int:
        return int(self.judged.sum())


def judge(settings: Settings, spec: DatasetSpec, holdout: pd.DataFrame, challenger_predicted: pd.DataFrame, champion: Predictor | None,
          champion_unseen: np.ndarray | None = None, champion_recorded: pd.DataFrame | None = None, train_labels: pd.Series | None = None) -> Judgement:
    """Score the challenger's hold-out predictions (its validation model's) and the champion on the same hold-out rows
    and apply the promotion rule (margin and floor).

    `champion_unseen` marks the hold-out rows a refit champion never trained on (None: it trained on none of them): at
    least MIN_JUDGED_ROWS of them and only they are judged, so the champion is not scored in-sample. With fewer, the rows
    of its own hold-out are added, scored by `champion_recorded` (its validation model's predictions, recorded at its
    training, indexed like `holdout`): a retraining with few new labels compared a challenger's out-of-sample score with
    the champion's in-sample one (0.89 against 0.94 on the same rows). Only where even those are too few are all rows
    judged, and the reason says so.
    """
    rows = np.ones(len(holdout), dtype=bool)
    recorded = np.zeros(len(holdout), dtype=bool)  # the rows the champion is scored on by `champion_recorded`
    note = ""
    if champion is not None and champion_unseen is not None and not champion_unseen.all():
        unseen = int(champion_unseen.sum())
        own = recorded if champion_recorded is None else holdout.index.isin(champion_recorded.index) & ~champion_unseen
        if unseen >= MIN_JUDGED_ROWS:  # said: a person reading "0.0332 vs 0.0284" took it for the whole hold-out (the new-user probe)
            rows = champion_unseen
            note = f" (on the {unseen} of the {len(holdout)} hold-out rows labelled after the refit champion's cut-off)"
        elif unseen + int(own.sum()) >= MIN_JUDGED_ROWS:
            rows, recorded = champion_unseen | own, own
            after = f", on the {unseen} labelled after its cut-off by its own" if unseen else ""
            note = (f" (the refit champion judged out of sample: on {int(own.sum())} rows of its own hold-out by its validation model's "
                    f"predictions recorded at its training{after})")
        else:
            note = f" (the refit champion trained on {len(holdout) - unseen} of these {len(holdout)} hold-out rows: only {unseen} came after its cut-off, fewer than {MIN_JUDGED_ROWS})"
    judged, predicted = holdout[rows], challenger_predicted[rows]
    challenger_metrics = score(spec, judged[LABEL], predicted)
    champion_metrics = champion_predicted = None
    if champion is not None:
        champion_predicted = champion.predict(judged)
        if recorded.any():
            by_record = holdout.index[recorded]
            champion_predicted.loc[by_record] = champion_recorded.loc[by_record, champion_predicted.columns].to_numpy()  # type: ignore[union-attr]
        champion_metrics = score(spec, judged[LABEL], champion_predicted)
    metric, higher = primary_metric(spec)
    floor = set_floor if (set_floor := settings.floor_of(metric)) is not None else default_floor(spec, judged[LABEL], train_labels)
    floor_passed = passes_floor(challenger_metrics.get(metric, float("nan")), floor, higher)
    decision = decide(spec, challenger_metrics, champion_metrics, settings.promotion_margin, floor)
    decision = _with_interval(settings, spec, decision, judged[LABEL], predicted, champion_predicted)
    if set_floor is None and spec.task is not Task.binary and not floor_passed and train_labels is not None:  # the probe: "vs floor 0.7108", not saying what it was
        predicting = "mean" if spec.task is Task.regression else "class shares"
        note += f" (the default floor: the {metric} of predicting the training labels' {predicting}; a quality_floor set for {metric} replaces it)"
    baseline = no_change_baseline(spec, judged, predicted)
    if baseline is not None and not baseline.beaten:  # said where the decision is read: status, the UI, MLflow's version tag
        note += f"; {baseline.said()}"
    if note:
        decision = replace(decision, reason=decision.reason + note)
    own_metrics = challenger_metrics if rows.all() else score(spec, holdout[LABEL], challenger_predicted)
    return Judgement(challenger_metrics, champion_metrics, decision, floor_passed, rows, own_metrics, baseline)


def _with_interval(settings: Settings, spec: DatasetSpec, decision: Decision, y_true: pd.Series, challenger: pd.DataFrame,
                   champion: pd.DataFrame | None) -> Decision:
    """`decision` saying how sure its gain is (`paired_bootstrap`), where there is a champion scored on the same rows;
    with `promotion_requires_significance`, a win whose interval reaches 0 or below is no promotion."""
    if champion is None or decision.champion is None or math.isnan(decision.champion) or math.isnan(decision.challenger):
        return decision
    interval = improvement_interval(spec, decision.metric, decision.higher_is_better, y_true, challenger, champion, settings.seed)
    if interval is None:  # too few rows, or the metric undefined on most resamples: asked for, significance cannot be shown
        if decision.promote and settings.promotion_requires_significance:
            return replace(decision, promote=False, reason=f"{decision.reason}, but no interval of its gain could be drawn on these {len(y_true)} rows: "
                                                           "not promoted (promotion_requires_significance)")
        return decision
    said = interval_said(decision.metric, interval, len(y_true))
    if decision.promote and interval[0] <= 0:
        if settings.promotion_requires_significance:
            return replace(decision, promote=False, reason=f"{decision.reason}, but {said}: not promoted (promotion_requires_significance)")
        # "promoted … within noise" read as a contradiction (the third new-user probe): the margin decides, unless asked otherwise
        return replace(decision, reason=f"{decision.reason}; {said}: promoted on the margin (promotion_requires_significance is off)")
    return replace(decision, reason=f"{decision.reason}; {said}")


def _floor_labels(settings: Settings, spec: DatasetSpec, snapshot: FeatureSnapshot) -> pd.Series | None:
    """The training labels, where the default floor predicts their mean or class shares (no floor set); read from the
    snapshot only then."""
    metric, _ = primary_metric(spec)
    return snapshot.train_labels if spec.task is not Task.binary and settings.floor_of(metric) is None else None


def _floor_note(settings: Settings, spec: DatasetSpec, registry: Registry, snapshot: FeatureSnapshot, challenger_version: int, judgement: Judgement) -> str:
    """Why the challenger failed the floor where it could not help it: the rows judged hold classes its own training
    rows (its chosen window, a tag) lack; a class only in the snapshot's older rows is one it never saw."""
    train_rows = int(registry.get_version(challenger_version).tags.get(window_tag("train_rows"), len(snapshot.train)))
    return classes_training_lacks(spec, snapshot.train[LABEL].iloc[-train_rows:], snapshot.holdout[LABEL][judgement.judged],
                                  settings.floor_of(primary_metric(spec)[0]) is not None)


def evidence_on(recorded: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """Predictions `recorded` by event id, on the rows of `holdout` they cover, indexed like `holdout`."""
    covered = holdout[holdout[EVENT_ID].isin(recorded.index)]
    return recorded.loc[covered[EVENT_ID]].set_axis(covered.index)


def recorded_evidence(registry: Registry, holdout: pd.DataFrame, version: int) -> pd.DataFrame:
    """A refit version's validation-model predictions recorded at its training, on the rows of `holdout` they cover
    (indexed like `holdout`): its out-of-sample answers there."""
    return evidence_on(registry.read_frame(version, VALIDATION_PREDICTIONS).set_index(EVENT_ID), holdout)


def hold_out_evidence(registry: Registry, holdout: pd.DataFrame, version: int) -> pd.DataFrame:
    """`version`'s predictions on `holdout` as evaluation judges them: a refit version's are its validation model's,
    recorded at training (its own would be in-sample); any other version predicts now."""
    if int(registry.get_version(version).tags.get(REFIT_ROWS_TAG, "0")) == 0:
        return registry.load_predictor(version).predict(holdout)
    recorded = recorded_evidence(registry, holdout, version)
    if len(recorded) < len(holdout):
        raise EvidenceError(f"v{version} was refit on its hold-out; its recorded hold-out predictions miss {len(holdout) - len(recorded)} of the "
                            f"{len(holdout)} events of this hold-out (another features snapshot?): evaluate it on its own snapshot")
    return recorded


def _misfit_scores(settings: Settings, spec: DatasetSpec, holdout: pd.DataFrame, predicted: pd.DataFrame, champion: Predictor | None,
                   unseen: np.ndarray | None, recorded: pd.DataFrame | None) -> str:
    """What a champion the spec no longer fits scored on the hold-out, where it still reads every input there (the spec
    only gained features or history), beside the challenger: promoted regardless, since nothing else could serve, but a
    feature that made the model worse shows, where before it was promoted unseen. "" where it cannot be scored."""
    if champion is None or not scores_records_of(champion, spec):
        return ""
    beside = judge(settings, spec, holdout, predicted, champion, unseen, recorded).decision
    if beside.champion is None or math.isnan(beside.champion):
        return ""
    return (f"; beside it, the champion with the inputs it has scores {beside.metric} {beside.champion:.4f} on the hold-out rows it is judged on, "
            f"where the challenger scores {beside.challenger:.4f} (not counted: the champion cannot serve)")


def evaluate_challenger(settings: Settings, spec: DatasetSpec, registry: Registry, snapshot: FeatureSnapshot, challenger_version: int,
                        events: EventStore) -> Evaluation:
    """Score challenger and champion on the same later hold-out (and, from `events`, on the live labelled events both
    scored) and decide; does not promote.

    A refit challenger is judged by its validation model's hold-out predictions; a refit champion only on the hold-out
    rows labelled after its cut-off (see `judge`). A pinned champion is kept whatever the scores say: the decision then
    says so. With `promotion_requires_shadow_win`, a hold-out winner waits (awaiting_shadow) until the shadow evidence
    is in, and is rejected if it loses on it; once it waited shadow_max_wait_seconds (from its registration) without
    it, the hold-out decides alone and the reason says so.
    """
    holdout = snapshot.holdout
    record = registry.champion_record()
    if record is not None and record.version == challenger_version:
        return _already_champion(settings, spec, registry, snapshot, record)
    champion = record
    champion_predictor, unloadable = (None, None) if champion is None else loaded_champion(registry, champion.version)
    champion_unseen = champion_recorded = None
    if champion_predictor is not None and int(registry.get_version(champion.version).tags.get(REFIT_ROWS_TAG, "0")) > 0:
        champion_unseen = unseen_after(holdout, champion.label_seq_cutoff)
        if int(champion_unseen.sum()) < MIN_JUDGED_ROWS:  # only then are its own hold-out's rows judged (see `judge`)
            champion_recorded = recorded_evidence(registry, holdout, champion.version)
    misfit = unloadable if champion_predictor is None else spec_mismatch(champion_predictor, spec)
    predicted = hold_out_evidence(registry, holdout, challenger_version)
    judgement = judge(settings, spec, holdout, predicted, None if misfit else champion_predictor, champion_unseen, champion_recorded,
                      _floor_labels(settings, spec, snapshot))
    decision = judgement.decision
    floor_note = "" if judgement.floor_passed else _floor_note(settings, spec, registry, snapshot, challenger_version, judgement)
    if floor_note:
        decision = replace(decision, reason=f"{decision.reason}; {floor_note}")
    if misfit and champion is not None:  # serving cannot load it under this spec: it is no benchmark to keep
        # One sentence per judgement: before, "…: -0.05 is below the margin; no champion yet; challenger rmse 2.08 passes
        # the floor" read as a refusal and named two challenger scores (the new-user probe).
        alone = decision.reason.removeprefix(f"{NO_CHAMPION}; ")
        beside = _misfit_scores(settings, spec, holdout, predicted, champion_predictor, champion_unseen, champion_recorded)
        unfit = f"cannot be loaded ({misfit})" if champion_predictor is None else f"does not fit the dataset spec ({misfit})"
        decision = replace(decision, reason=f"champion v{champion.version} {unfit}, so serving cannot load it: "
                                            f"judged as if there were no champion, {alone}{beside}")
    shadow = None if champion is None else compare_on_live(settings, spec, events, challenger_version, champion.version)
    awaiting = False
    if decision.promote and shadow is not None and settings.promotion_requires_shadow_win:
        if shadow.undefined is not None:  # the evidence is in and says nothing: waiting longer would not change it (the review)
            decision = replace(decision, reason=f"decided on the hold-out alone: {shadow.summary()}; on the hold-out: {decision.reason}")
        elif shadow.decision is None and shadow_wait_left(settings, registry.get_version(challenger_version).creation_timestamp, time.time()) > 0:
            awaiting = True
            decision = replace(decision, promote=False, reason=f"awaiting shadow evidence ({shadow.summary()}); on the hold-out: {decision.reason}")
        elif shadow.decision is None:
            decision = replace(decision, reason=f"decided on the hold-out alone: shadow evidence still short after shadow_max_wait_seconds "
                                                f"({settings.shadow_max_wait_seconds:.0f} s; {shadow.summary()}); on the hold-out: {decision.reason}")
        elif not shadow.decision.promote:  # a tie is no win in shadow either, but no loss
            lost = "ties" if shadow.decision.improvement == 0 else "loses"
            decision = replace(decision, promote=False, reason=f"{lost} in shadow {shadow.summary()}; on the hold-out: {decision.reason}")
    # Last, so that a pin keeps out a challenger that won, or still might, on everything else: no verdict on it (kept_by_person)
    kept_by_person = champion is not None and champion.pinned and (decision.promote or awaiting)
    if champion is not None and champion.pinned:
        decision = replace(decision, promote=False, reason=f"champion v{champion.version} is pinned ({champion.pin_reason}): kept; on the scores alone: {decision.reason}")
        awaiting = False
    return Evaluation(
        challenger_version=challenger_version,
        champion_version=None if champion is None else champion.version,
        challenger_metrics=judgement.challenger_metrics,
        champion_metrics=judgement.champion_metrics,
        own_metrics=judgement.own_metrics,
        decision=decision,
        holdout_rows=len(holdout),
        judged_rows=judgement.judged_rows,
        floor_passed=judgement.floor_passed,
        champion_after=challenger_version if decision.promote else (0 if champion is None else champion.version),
        champion_label_seq_cutoff=snapshot.window.label_seq_cutoff if decision.promote else (0 if champion is None else champion.label_seq_cutoff),
        challenger_predicted=predicted,
        shadow=shadow,
        awaiting_shadow=awaiting,
        floor_note=floor_note,
        kept_by_person=kept_by_person,
        no_change=judgement.no_change,
    )


def _already_champion(settings: Settings, spec: DatasetSpec, registry: Registry, snapshot: FeatureSnapshot, record: ChampionRecord) -> Evaluation:
    """The challenger is the champion already: a retry after the alias moved (its MLflow evaluation still to record), or
    the asset run again on its own. Nothing is decided again: its recorded decision stands and `apply_decision` writes
    nothing (it had judged it against "no champion", rewriting the decision, the timeline and a pin)."""
    predicted = hold_out_evidence(registry, snapshot.holdout, record.version)
    judgement = judge(settings, spec, snapshot.holdout, predicted, None, None, train_labels=_floor_labels(settings, spec, snapshot))
    recorded = registry.get_version(record.version).tags.get(DECISION_REASON) or "none recorded (the alias was set by hand)"
    pinned = f", pinned ({record.pin_reason})" if record.pinned else ""
    decision = replace(judgement.decision, promote=True, reason=f"v{record.version} is already the champion{pinned}: nothing decided again; its decision: {recorded}")
    return Evaluation(challenger_version=record.version, champion_version=record.version, challenger_metrics=judgement.challenger_metrics, champion_metrics=None,
                      own_metrics=judgement.own_metrics,
                      decision=decision, holdout_rows=len(snapshot.holdout), judged_rows=judgement.judged_rows, floor_passed=judgement.floor_passed,
                      champion_after=record.version, champion_label_seq_cutoff=record.label_seq_cutoff, challenger_predicted=predicted, already_champion=True)


def record_evaluation(spec: DatasetSpec, registry: Registry, snapshot: FeatureSnapshot, evaluation: Evaluation) -> dict[str, float]:
    """The evaluation in MLflow: the challenger's evaluation artifacts in its run, and both versions' hold-out scores
    linked to their LoggedModels on this hold-out dataset. Returns MLflow's metrics of the challenger."""
    scores = {evaluation.challenger_version: evaluation.challenger_metrics}
    if evaluation.champion_version is not None and evaluation.champion_metrics is not None:
        scores[evaluation.champion_version] = evaluation.champion_metrics
    return registry.record_evaluation(holdout_dataset(spec, snapshot), evaluation.challenger_version, evaluation.challenger_predicted, scores)


def apply_decision(registry: Registry, evaluation: Evaluation, dagster_run_id: str | None) -> Evaluation:
    """Record the decision on the challenger version and move `@champion` if it won; returns the evaluation applied (a
    promotion is withdrawn if the champion moved or was pinned while it was judged, see `_withdrawn`).
    For a champion already, only the timeline entry a failed attempt may have left unwritten (promote moves the alias
    first), so no sensor takes that promotion for a move made outside the platform."""
    if evaluation.already_champion:
        record = registry.champion_record()
        if record is not None and record.version == evaluation.challenger_version and not record.recorded:
            reason = registry.get_version(record.version).tags.get(DECISION_REASON) or evaluation.decision.reason
            registry.promote(record.version, reason, by=f"dagster run {dagster_run_id}" if dagster_run_id else "mlplatform")
        return evaluation
    evaluation = _withdrawn(evaluation, registry.champion_record())
    d = evaluation.decision
    registry.tag_version(
        evaluation.challenger_version,
        {
            DECISION: evaluation.verdict,
            DECISION_REASON: d.reason,
            DECISION_METRIC_TAG: d.metric,
            CHALLENGER_SCORE: f"{d.challenger:.6f}",
            mlflow_tag("champion_score"): "" if d.champion is None else f"{d.champion:.6f}",
            mlflow_tag("compared_with"): "" if evaluation.champion_version is None else str(evaluation.champion_version),
            mlflow_tag("holdout_metrics"): json_tag(evaluation.own_metrics),
            mlflow_tag("evaluated_at"): str(int(time.time())),
            mlflow_tag("evaluation_run_id"): dagster_run_id or "",
            **({} if evaluation.shadow is None else {SHADOW_METRICS: json_tag({"events": evaluation.shadow.events, "challenger": evaluation.shadow.challenger_metrics,
                                                                               "champion": evaluation.shadow.champion_metrics})}),
        },
    )
    if evaluation.shadow is not None and evaluation.shadow.challenger_metrics:
        registry.log_metrics(evaluation.challenger_version, {f"shadow_{k}": v for k, v in evaluation.shadow.challenger_metrics.items()}
                             | {"shadow_events": float(evaluation.shadow.events)})
    if d.promote:
        now = registry.champion_record()
        late = _withdrawn(evaluation, now)  # moved or pinned while the decision was being recorded
        if late is not evaluation:
            registry.tag_version(evaluation.challenger_version, {DECISION: late.verdict, DECISION_REASON: late.decision.reason})
            return late
        if now is None or now.version != evaluation.challenger_version:  # a person made it champion meanwhile: their move stands
            registry.promote(evaluation.challenger_version, d.reason, by=f"dagster run {dagster_run_id}" if dagster_run_id else "mlplatform")
    return evaluation


def _withdrawn(evaluation: Evaluation, now: ChampionRecord | None) -> Evaluation:
    """A promotion stands only against the champion it was judged with. The concurrency probe: a person pinned the
    champion while the challenger was judged (the pin is read as the evaluation starts), and a second later the
    challenger replaced it, the pin silently gone. Moved or pinned meanwhile, the champion stays, and the decision says
    why; the challenger can be judged again against the champion as it is now (`now`: the champion as the registry
    has it at this moment)."""
    d = evaluation.decision
    if not d.promote or now is None or now.version == evaluation.challenger_version or (now.version == evaluation.champion_version and not now.pinned):
        return evaluation
    judged = f"v{evaluation.champion_version}" if evaluation.champion_version is not None else "no champion"
    became = (f"pinned ({now.pin_reason})" if now.version == evaluation.champion_version
              else f"moved to v{now.version}" + (f", pinned ({now.pin_reason})" if now.pinned else ""))
    reason = (f"the champion was {became} while v{evaluation.challenger_version} was judged against {judged}: not promoted; "
              f"on the scores: {d.reason}")
    return replace(evaluation, decision=replace(d, promote=False, reason=reason), champion_after=now.version, champion_label_seq_cutoff=now.label_seq_cutoff,
                   kept_by_person=True)

