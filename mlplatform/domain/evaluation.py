"""Scoring models on a hold-out window and deciding whether a challenger replaces the champion."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlplatform.domain.estimation import weighted_auc
from mlplatform.domain.predictor import PREDICTION, PROBABILITY
from mlplatform.domain.spec import LABEL_REF, DatasetSpec, Task
from mlplatform.domain.validation import LABEL

PRIMARY_METRIC: dict[Task, tuple[str, bool]] = {
    Task.binary: ("roc_auc", True),
    Task.multiclass: ("log_loss", False),
    Task.regression: ("rmse", False),
}
CALIBRATION_WIN = 0.10  # a binary challenger tied on ROC AUC wins with a log loss this share lower than the champion's
SCALED = ("rmse", "mae")  # errors in the label's own units: the margin is a share of the champion's (see `decide`)
TIE_AUC = 0.002  # ROC AUCs no further apart than this tie, whatever the margin (a margin of 1, "no challenger wins", let a worse ranking win: the review)
DEFAULT_FLOOR: dict[Task, float] = {Task.binary: 0.6, Task.multiclass: math.inf, Task.regression: math.inf}


def primary_metric(spec: DatasetSpec) -> tuple[str, bool]:
    """The metric that decides promotions and whether higher is better."""
    return PRIMARY_METRIC[spec.task]


def live_metric(spec: DatasetSpec) -> tuple[str, bool]:
    """The metric that compares models on served events: the primary one, but accuracy for multiclass, whose served
    events keep only the predicted class's probability (no log loss)."""
    return ("accuracy", True) if spec.task is Task.multiclass else primary_metric(spec)


def default_floor(spec: DatasetSpec, y_true: pd.Series | None = None, train_labels: pd.Series | None = None) -> float:
    """Without a configured floor: AUC 0.6; for the others, no worse than predicting the training labels' mean or class
    shares, a prediction a model could have made (the hold-out's own, known to no model, refused a first model on a
    trending stream that beat the training mean by a third: the second new-user probe). Without training labels, the
    hold-out's own."""
    if spec.task is Task.binary or y_true is None or y_true.empty:
        return DEFAULT_FLOOR[spec.task]
    known = train_labels is not None and train_labels.notna().any()
    if spec.task is Task.regression:
        y = y_true.astype("float64")
        centre = train_labels.astype("float64").mean() if known else y.mean()  # type: ignore[union-attr]
        return float(np.sqrt(np.mean((y - centre) ** 2)))
    if known:  # the training labels' class shares, each class counted once more (a class they lack is not impossible)
        # The hold-out's own shares, known to no model, refused a first model that beat the training shares (the third probe).
        counts = train_labels.astype(str).value_counts().reindex(spec.classes or [], fill_value=0) + 1  # type: ignore[union-attr]
        shares = counts / counts.sum()
        return float(-np.log(y_true.astype(str).map(shares).fillna(1 / counts.sum())).mean())
    prior = y_true.value_counts(normalize=True)
    return float(-(prior * np.log(prior)).sum())


NO_CHANGE_MIN_ROWS = 20  # hold-out rows with a last label known, fewer and the baseline is not scored


@dataclass(frozen=True)
class NoChangeBaseline:
    """The forecast that needs no model, each event's last label known before it (a declared label lag1, by point in
    time), scored beside the model on the same hold-out rows. A model worse than it is not learning the stream: the
    history probe's water-flow model (RMSE 0.57 against 0.28) and per-chick weights (62 against 22) were promoted
    against a floor of the training mean, and nothing said so."""

    column: str
    metric: str  # the floor's terms where it can be: rmse (regression), roc_auc (binary); accuracy (multiclass: no log loss of a hard label)
    rows: int
    baseline: float
    model: float

    @property
    def beaten(self) -> bool:
        return self.model <= self.baseline if self.metric == "rmse" else self.model >= self.baseline

    def said(self) -> str:
        standing = "beats" if self.beaten else "is WORSE than"
        return (f"the model {standing} the no-change baseline (each event's last known label, {self.column}): {self.metric} {_units(self.model)} "
                f"against {_units(self.baseline)} on the {self.rows} hold-out rows where one was known")


def no_change_baseline(spec: DatasetSpec, frame: pd.DataFrame, predicted: pd.DataFrame) -> NoChangeBaseline | None:
    """The best no-change baseline among the spec's label lag1 columns (of the stream, or per key) on the rows of
    `frame` (with its history columns and labels) where one is known, and the model's `predicted` on those rows; None
    when the spec declares no label lag or too few rows have one."""
    metric = {Task.regression: "rmse", Task.binary: "roc_auc"}.get(spec.task, "accuracy")
    found = []
    for column in (f.names[0] for f in spec.history_features if f.kind == "lag" and f.source == LABEL_REF):
        known = frame[column].notna().to_numpy() & frame[LABEL].notna().to_numpy()
        if known.sum() < NO_CHANGE_MIN_ROWS:
            continue
        y, last, guess = frame[LABEL][known], frame[column][known], predicted[known]
        if spec.task is Task.regression:
            y = y.astype("float64")
            baseline = float(np.sqrt(np.mean((y - last.astype("float64")) ** 2)))
            model = float(np.sqrt(np.mean((y - guess[PREDICTION].astype("float64").to_numpy()) ** 2)))
        elif spec.task is Task.binary:  # the last label as a score of 0 or 1 (ties half): ROC AUC, as the promotion and the floor read
            positive = (y.astype(str) == spec.positive_class).to_numpy(dtype="float64")
            baseline = weighted_auc((last.astype(str) == spec.positive_class).to_numpy(dtype="float64"), positive)
            model = weighted_auc(guess[PROBABILITY].astype("float64").to_numpy(), positive)
        else:
            y = y.astype(str)
            baseline, model = float((y == last.astype(str)).mean()), float((y.to_numpy() == guess[PREDICTION].astype(str).to_numpy()).mean())
        if not (math.isnan(baseline) or math.isnan(model)):  # one class only on these rows: no ROC AUC to compare
            found.append(NoChangeBaseline(column, metric, int(known.sum()), baseline, model))
    if not found:
        return None
    return min(found, key=lambda b: b.baseline) if metric == "rmse" else max(found, key=lambda b: b.baseline)


def class_counts(labels: pd.Series) -> dict[str, int]:
    """How many of `labels` each class has, most first (missing ones left out)."""
    return {str(c): int(n) for c, n in labels.dropna().astype(str).value_counts().items()}


def named_counts(counts: dict[str, int]) -> str:
    """Classes with their counts, as messages name them: 'storm' × 2, '4' × 1."""
    return ", ".join(f"{c!r} × {n}" for c, n in counts.items())


def classes_training_lacks(spec: DatasetSpec, train_labels: pd.Series, holdout_labels: pd.Series, floor_set: bool = False) -> str:
    """Why a multiclass challenger may fail the floor through no fault of its own, "" if not: hold-out events of classes
    its training rows lack, which no model trained on them predicts (one such event added 0.056 to a log loss over 600).
    With a floor set (`floor_set`), it is not suggested again (the third new-user probe read it beside a floor of 0.8)."""
    if spec.task is not Task.multiclass:
        return ""
    lacking = class_counts(holdout_labels[~holdout_labels.isin(set(train_labels.dropna()))])
    if not lacking:
        return ""
    mends = "a training window that reaches events of those classes" + ("" if floor_set else ", or a quality_floor set for log_loss,")
    return f"the hold-out has events of classes the training rows lack ({named_counts(lacking)}), which no model trained on them predicts: {mends} lets it pass"


def occurring_classes(classes: list[str], y_true: pd.Series, predicted: pd.Series) -> list[str]:
    """The classes multiclass macro averages run over: those labelled or predicted in the window, as scikit-learn's
    default. Over every class of the spec, one absent from the window counted as precision and recall 0: a model right
    on every event scored 0.75 with a fourth class never seen, and the live floors fired on it."""
    seen = set(y_true.astype(str)) | set(predicted.astype(str))
    return [c for c in classes if c in seen]


SCORED = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2")  # every metric `score` may return


def score(spec: DatasetSpec, y_true: pd.Series, predicted: pd.DataFrame) -> dict[str, float]:
    """All metrics of the task; ones that are undefined on this window (one class only; binary precision without a
    positive predicted, recall without one labelled) are left out."""
    from sklearn import metrics as skm  # scikit-learn (and SciPy) load where a window is scored, not with the code location

    y_true = y_true.reset_index(drop=True)
    predicted = predicted.reset_index(drop=True)
    if spec.task is Task.regression:
        y, p = y_true.astype("float64").to_numpy(), predicted[PREDICTION].astype("float64").to_numpy()
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, p))),
            "mae": float(skm.mean_absolute_error(y, p)),
            "r2": float(skm.r2_score(y, p)) if len(y) > 1 else float("nan"),
        }
    pred = predicted[PREDICTION].astype(str)
    out: dict[str, float] = {"accuracy": float(skm.accuracy_score(y_true, pred))}
    classes = spec.classes or []
    if spec.task is Task.binary:
        positive = spec.positive_class
        y_bin = (y_true == positive).astype(int)
        proba = predicted[PROBABILITY].astype("float64").clip(1e-15, 1 - 1e-15)
        # Undefined, left out, as ROC AUC: precision with no positive predicted, recall with none labelled, F1 with neither.
        # Counted as 0, 300 negatives all answered right read precision and recall 0 and the live floors fired (the probe).
        predicted_any, labelled_any = bool((pred == positive).any()), bool(y_bin.any())
        if predicted_any:
            out["precision"] = float(skm.precision_score(y_true, pred, pos_label=positive, zero_division=0))
        if labelled_any:
            out["recall"] = float(skm.recall_score(y_true, pred, pos_label=positive, zero_division=0))
        if predicted_any or labelled_any:
            out["f1"] = float(skm.f1_score(y_true, pred, pos_label=positive, zero_division=0))
        out["log_loss"] = float(skm.log_loss(y_bin, proba, labels=[0, 1]))
        if y_bin.nunique() == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_bin, proba))
        return out
    occurring = occurring_classes(classes, y_true, pred)
    out["precision"] = float(skm.precision_score(y_true, pred, labels=occurring, average="macro", zero_division=0))
    out["recall"] = float(skm.recall_score(y_true, pred, labels=occurring, average="macro", zero_division=0))
    out["f1"] = float(skm.f1_score(y_true, pred, labels=occurring, average="macro", zero_division=0))
    ordered = sorted(classes)  # sklearn's log_loss reads probability columns in sorted label order
    proba_columns = [f"proba_{c}" for c in ordered]
    if any(c in predicted.columns for c in proba_columns):  # served events keep only the predicted class's probability
        # A class the spec gained after the model was trained has no column: the model gives it no probability. Left
        # out, the champion had no log loss, and a challenger of any score replaced it.
        probabilities = predicted.reindex(columns=proba_columns, fill_value=0.0).to_numpy(dtype="float64")
        out["log_loss"] = float(skm.log_loss(y_true, probabilities, labels=ordered))
    return out


SEGMENT_TOP_VALUES = 10
SEGMENT_MIN_ROWS = 30
MISSING_SEGMENT = "(missing)"


def _per_row_outcomes(spec: DatasetSpec, y_true: pd.Series, predicted: pd.Series) -> pd.DataFrame:
    """What each event contributes to the task's metrics, so that any grouping sums them in one pass."""
    if spec.task is Task.regression:
        error = predicted.astype("float64") - y_true.astype("float64")
        return pd.DataFrame({"squared_error": error**2, "abs_error": error.abs(), "error": error})
    hit = predicted.astype(str) == y_true.astype(str)
    if spec.task is not Task.binary:
        return pd.DataFrame({"hit": hit})
    actual, said = y_true.astype(str) == spec.positive_class, predicted.astype(str) == spec.positive_class
    return pd.DataFrame({"hit": hit, "true_positive": actual & said, "actual_positive": actual, "predicted_positive": said})


def _group_metrics(spec: DatasetSpec, sums: pd.DataFrame, rows: pd.Series) -> pd.DataFrame:
    """score()'s threshold metrics from per-group sums: rmse/mae/bias, or accuracy (and precision/recall/f1 for binary)."""
    if spec.task is Task.regression:
        return pd.DataFrame({"rmse": np.sqrt(sums["squared_error"] / rows), "mae": sums["abs_error"] / rows, "bias": sums["error"] / rows})
    out = pd.DataFrame({"accuracy": sums["hit"] / rows})
    if spec.task is Task.binary:
        precision = (sums["true_positive"] / sums["predicted_positive"].where(sums["predicted_positive"] > 0)).fillna(0.0)
        recall = (sums["true_positive"] / sums["actual_positive"].where(sums["actual_positive"] > 0)).fillna(0.0)
        out = out.assign(precision=precision, recall=recall, f1=(2 * precision * recall / (precision + recall).where(precision + recall > 0)).fillna(0.0),
                         positive_rate=sums["actual_positive"] / rows)
    return out


def segment_quality(spec: DatasetSpec, frame: pd.DataFrame, predicted: pd.DataFrame, top: int = SEGMENT_TOP_VALUES,
                    min_rows: int = SEGMENT_MIN_ROWS) -> pd.DataFrame:
    """The task's metrics per value of each categorical feature (its `top` most frequent values with at least `min_rows`
    events): where a model is weak hides behind one overall number. One grouped pass per feature."""
    frame, predicted = frame.reset_index(drop=True), predicted.reset_index(drop=True)
    outcomes = _per_row_outcomes(spec, frame[LABEL], predicted[PREDICTION])
    parts = []
    for feature in spec.categorical_features:
        values = frame[feature].astype(object).where(frame[feature].notna(), MISSING_SEGMENT).astype(str)
        counts = values.value_counts()
        kept = counts[counts >= min_rows].head(top)
        if kept.empty:
            continue
        sums = outcomes[values.isin(kept.index)].groupby(values).sum().loc[kept.index]
        metrics = _group_metrics(spec, sums, kept)
        parts.append(pd.DataFrame({"feature": feature, "segment": kept.index, "rows": kept.to_numpy()}).join(metrics.reset_index(drop=True)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["feature", "segment", "rows"])


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str  # the one that decided: the primary one, or log loss where it broke a ROC AUC tie
    higher_is_better: bool
    challenger: float
    champion: float | None
    margin: float
    floor: float  # the quality floor, of the primary metric

    @property
    def improvement(self) -> float | None:
        """In the margin's terms: of an error in the label's units (SCALED), the share of the champion's it fell by."""
        return None if self.champion is None else gain(self.metric, self.higher_is_better, self.challenger, self.champion)


def passes_floor(value: float, floor: float, higher_is_better: bool) -> bool:
    if math.isnan(value):
        return False
    return value >= floor if higher_is_better else value <= floor


NO_CHAMPION = "no champion yet"  # how a decision without a champion begins


def fits_better(better: Mapping[str, float], worse: Mapping[str, float], margin: float = 0.0) -> bool:
    """Whether `better`'s log loss is lower than `worse`'s by CALIBRATION_WIN of it or more, and by `margin` (NaN: no)."""
    low, high = better.get("log_loss", math.nan), worse.get("log_loss", math.nan)
    return low <= high * (1 - CALIBRATION_WIN) and high - low >= margin


def outranks(metric: str, higher: bool, candidate: Mapping[str, float], leader: Mapping[str, float]) -> bool:
    """Whether `candidate` scores better than `leader` on `metric`; on ROC AUC, of two within TIE_AUC, the one whose
    log loss `fits_better` (the River probe: a window spanning two concepts ranked the hold-out at AUC 1.0000 against
    0.9997 and was chosen, its accuracy 0.54 at the threshold where the smaller window's was 0.99)."""
    value, lead = candidate.get(metric, math.nan), leader.get(metric, math.nan)
    if math.isnan(value) or math.isnan(lead):
        return False
    if metric == "roc_auc" and abs(value - lead) <= TIE_AUC and (fits_better(candidate, leader) or fits_better(leader, candidate)):
        return fits_better(candidate, leader)
    return value > lead if higher else value < lead


def _calibration_win(challenger: dict[str, float], champion: dict[str, float], won: float, margin: float) -> str:
    """Why a challenger short of a ROC AUC win but within TIE_AUC of the champion wins all the same, or "": its log loss is
    lower by CALIBRATION_WIN of the champion's or more, and by the margin. AUC reads only the ranking: a shift that moved
    the champion's probabilities but kept their order left it answering wrongly at its threshold, and the tie kept it
    champion (the new-user probe: accuracy 0.49 against the challenger's 0.999, AUC 0.9999 against 1.0000, three
    retrainings rejected)."""
    ch, cp = challenger.get("log_loss", math.nan), champion.get("log_loss", math.nan)
    if won < -TIE_AUC or not fits_better(challenger, champion, margin):
        return ""
    return (f"challenger roc_auc {challenger['roc_auc']:.4f} ties champion {champion['roc_auc']:.4f} ({won:+.4f}, within {TIE_AUC}), and its "
            f"log_loss {ch:.4f} is {1 - ch / cp:.0%} below the champion's {cp:.4f} (at least {CALIBRATION_WIN:.0%}, and the margin {margin}): its "
            "probabilities fit the hold-out where the champion's do not")


def _calibration_loss(challenger: dict[str, float], champion: dict[str, float], won: float, margin: float) -> str:
    """Why a challenger ahead on ROC AUC by no more than TIE_AUC loses all the same, or "": the champion's log loss is
    lower by CALIBRATION_WIN of the challenger's or more, and by the margin, the tie broken as `_calibration_win` breaks
    it the other way (the River probe: AUC 1.0000 against 0.9999 promoted at margin 0 a challenger whose log loss was
    0.5698 against 0.0197, and served accuracy fell from 0.996 to 0.744)."""
    ch, cp = challenger.get("log_loss", math.nan), champion.get("log_loss", math.nan)
    if won > TIE_AUC or not fits_better(champion, challenger, margin):
        return ""
    return (f"challenger roc_auc {challenger['roc_auc']:.4f} ties champion {champion['roc_auc']:.4f} ({won:+.4f}, within {TIE_AUC}), but its "
            f"log_loss {ch:.4f} is above the champion's {cp:.4f}, {1 - cp / ch:.0%} lower (at least {CALIBRATION_WIN:.0%}, and the margin {margin}): its "
            "probabilities do not fit the hold-out where the champion's do")


def metric_text(metric: str, value: float) -> str:
    """A metric's value as decisions and verdicts print it: an error in the label's units (SCALED) readable at any
    scale (`_units`), any other to four decimals (an error of thousandths read 0.0000 against a floor of 0.0000)."""
    return _units(value) if metric in SCALED else f"{value:.4f}"


def _units(value: float) -> str:
    """An error in the label's units, readable at any scale (":.4f" printed a thousandth's errors as 0.0000)."""
    size = abs(value)
    return f"{value:,.2f}" if size >= 1e4 else f"{value:.4f}" if size >= 1e-3 or value == 0 else f"{value:.3e}"


def _scaled_share(metric: str, challenger: float, champion: float) -> float | None:
    """Of an error in the label's units (SCALED), the share of the champion's the challenger's is lower by, the terms the
    margin is in: an absolute 0.002 rejected a halved RMSE on a label of thousandths and promoted a gain of one in a
    million on a label of millions (the second new-user probe). None for another metric, or a champion's of 0 or inf."""
    return (champion - challenger) / champion if metric in SCALED and 0 < champion < math.inf else None


def gain(metric: str, higher_is_better: bool, challenger: float, champion: float) -> float:
    """How much better the challenger is, in the margin's terms: of an error in the label's units (SCALED), the share of
    the champion's it is lower by (`_scaled_share`); of another metric, the difference, positive when better."""
    share = _scaled_share(metric, challenger, champion)
    if share is not None:
        return share
    return challenger - champion if higher_is_better else champion - challenger


def decide(spec: DatasetSpec, challenger: dict[str, float], champion: dict[str, float] | None, margin: float, floor: float,
           on: tuple[str, bool] | None = None) -> Decision:
    """Promote when there is no champion or the challenger wins by `margin` (one tied on ROC AUC: by a log loss a tenth
    lower, `_calibration_win`), and never below the floor (of the primary metric). `on` (metric, higher is better) replaces
    the primary metric where that cannot be measured (live events keep no per-class probabilities)."""
    metric, higher = on or primary_metric(spec)
    ch = challenger.get(metric, float("nan"))
    cp = None if champion is None else champion.get(metric, float("nan"))
    common = dict(metric=metric, higher_is_better=higher, challenger=ch, champion=cp, margin=margin, floor=floor)
    direction = "≥" if higher else "≤"
    if math.isnan(ch):  # before: 'challenger roc_auc nan misses the quality floor', as if it had been measured (the review)
        return Decision(False, f"challenger {metric} is undefined on this hold-out (one class only, say): it cannot be held to the quality "
                               f"floor ({direction} {floor:.4f}), so it is not promoted", **common)
    shown = functools.partial(metric_text, metric)
    if not passes_floor(ch, floor, higher):
        return Decision(False, f"challenger {metric} {shown(ch)} misses the quality floor ({direction} {shown(floor)})", **common)
    if cp is None:
        return Decision(True, f"{NO_CHAMPION}; challenger {metric} {shown(ch)} passes the floor", **common)
    if math.isnan(cp):
        return Decision(True, f"champion {metric} is undefined on this hold-out; challenger {ch:.4f} passes the floor", **common)
    share = _scaled_share(metric, ch, cp) is not None
    won = gain(metric, higher, ch, cp)
    scores = f"{shown(ch)} {{}} champion {shown(cp)}" if share else f"{ch:.4f} {{}} champion {cp:.4f}"
    won_by, lost_by, limit = (f"{won:.2%} of it", f"{won:+.2%} of it", f"{margin:.2%}") if share else (f"{won:+.4f}", f"{won:+.4f}", f"{margin}")
    tie_lost = _calibration_loss(challenger, champion, won, margin) if metric == "roc_auc" and won > 0 else ""
    if tie_lost:  # recorded as decided on log loss, as a tie broken the other way is
        return Decision(False, tie_lost, "log_loss", False, challenger["log_loss"], champion["log_loss"], margin, floor)
    if won >= margin and won > 0:  # a win: with a margin of 0, a tie promoted, saying 'beats ... by +0.0000' (the review)
        return Decision(True, f"challenger {metric} {scores.format('beats')} by {won_by} (margin {limit})", **common)
    tie_broken = _calibration_win(challenger, champion, won, margin) if metric == "roc_auc" else ""
    if tie_broken:  # recorded as decided on log loss: the scores, the improvement and the "(decides)" mark are its
        return Decision(True, tie_broken, "log_loss", False, challenger["log_loss"], champion["log_loss"], margin, floor)
    short = f"is below the margin {limit}" if won < margin else "is no win"
    return Decision(False, f"challenger {metric} {scores.format('vs')}: {lost_by} {short}", **common)
