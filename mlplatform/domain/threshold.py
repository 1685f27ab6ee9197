"""A binary model's decision threshold: the positive class's probability at and above which it is predicted.

0.5 suits classes of similar size. For a rare positive class (1 in 50) a model that ranks well still gives every event
a probability below 0.5: it never predicts the class, its precision and recall read 0, and the live floors on them
fire for ever (the new-user probe). The spec's `decision_threshold: best_f1` chooses, at each training, the threshold
that maximises F1 on the training's validation part (rows the validated model did not learn from, never the hold-out
the promotion is judged on; the model refit on the hold-out too, as served by default, keeps it); a number fixes it. The threshold travels with the model (pipeline.json), so serving, the
logged pyfunc, evaluation, estimation and the online correction all read scores the same way.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5
BEST_F1 = "best_f1"
MIN_POSITIVES = 10  # fewer positive events in the validation part choose nothing: one ranked first set the threshold near 1
_OPEN = (np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0))  # a threshold is a probability strictly inside (0, 1)


def best_f1_threshold(probability: np.ndarray, positive: np.ndarray) -> float | None:
    """The threshold of highest F1 on these rows, halfway between the lowest score it predicts positive and the next
    lower score (ties are never split), inside (0, 1); None when the rows hold fewer than MIN_POSITIVES positives, too
    few to choose on."""
    probability = np.asarray(probability, dtype="float64")
    positive = np.asarray(positive, dtype="bool")
    finite = np.isfinite(probability)  # a NaN score sorted last counted as a cut of its own: the threshold came out NaN
    probability, positive = probability[finite], positive[finite]
    if positive.sum() < MIN_POSITIVES:
        return None
    order = np.argsort(-probability, kind="stable")
    scores, hits = probability[order], positive[order]
    true_positives = np.cumsum(hits)
    predicted = np.arange(1, len(scores) + 1)
    f1 = 2.0 * true_positives / (predicted + positive.sum())
    cut = np.append(scores[1:] != scores[:-1], True)  # only after the last of equal scores
    best = int(np.argmax(np.where(cut, f1, -1.0)))
    if best + 1 == len(scores):
        chosen = scores[best]
    else:  # halfway, or the next float above the lower score where halfway rounds onto it
        chosen = max((scores[best] + scores[best + 1]) / 2.0, np.nextafter(scores[best + 1], np.inf))
    return float(np.clip(chosen, _OPEN[0], _OPEN[1]))


def choose_threshold(setting: float | str | None, probability: np.ndarray, positive: np.ndarray) -> float:
    """The threshold a training gives its binary model: the spec's number, best F1 on the validation part (0.5 when that
    part has fewer than MIN_POSITIVES positive events), or 0.5."""
    if setting is None:
        return DEFAULT_THRESHOLD
    if setting == BEST_F1:
        chosen = best_f1_threshold(probability, positive)
        return DEFAULT_THRESHOLD if chosen is None else chosen
    return float(setting)
