"""The decision threshold on a rare positive class: the default 0.5 against the spec's `decision_threshold: best_f1`.

Adult's `>50K` made rarer by keeping one positive in k (the negatives all kept, the file's order kept), so the positive
class is about 1 in 50, 1 in 20, or Adult's own 1 in 4; and a synthetic 1:40 stream (generated, nothing downloaded)
whose model ranks well (ROC AUC about 0.88) but gives almost every event less than 0.5. Each stream trains once on its first 60 % (the training's own
validation part is its latest 20 %, where best_f1 chooses) and is scored on the remaining 40 %, at the threshold each
model carries. The last column is the ceiling: the F1 of the threshold chosen on the scored events themselves, which no
training can know. Median over `--seeds` subsamples.

    .venv/bin/python benchmarks/bench_threshold.py [--seeds 3] [--trials 1]
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import markdown_table, record  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlplatform.domain.evaluation import score  # noqa: E402
from mlplatform.domain.spec import DatasetSpec, load_spec, parse_spec  # noqa: E402
from mlplatform.domain.threshold import BEST_F1, best_f1_threshold  # noqa: E402
from mlplatform.domain.training import TrainingConfig, train  # noqa: E402
from mlplatform.domain.validation import LABEL, validate_frame  # noqa: E402
from mlplatform.pipeline.replay import read_source  # noqa: E402
from mlplatform.settings import DEFAULT_SPEC  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_threshold.py"
KEEP_ONE_POSITIVE_IN = (16, 6, 1)  # about 1:50, 1:20 and Adult's own 1:4 (24 % positives)
TRAIN_SHARE = 0.6


def rarer(events: pd.DataFrame, spec: DatasetSpec, keep_one_in: int, seed: int) -> pd.DataFrame:
    """`events` with one positive in `keep_one_in` kept at random, in their order."""
    positive = (events[LABEL] == spec.positive_class).to_numpy()
    kept = ~positive | (np.random.default_rng(seed).integers(0, keep_one_in, len(events)) == 0)
    return events[kept].reset_index(drop=True)


SYNTHETIC = {"name": "rare", "task": "binary", "label": "y", "classes": ["ok", "fraud"], "positive_class": "fraud",
             "features": {"x": "numeric", "z": "numeric"}}


def synthetic(seed: int, rows: int = 20_000) -> pd.DataFrame:
    """A 1:40 class whose probability passes 0.5 only for the top 1 % of x (the test suite's rare-class stream)."""
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=rows), rng.normal(size=rows)
    return pd.DataFrame({"x": x, "z": z, "y": np.where(rng.random(rows) < 1 / (1 + np.exp(6 - 2.5 * x)), "fraud", "ok")})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    adult = load_spec(DEFAULT_SPEC)
    events = validate_frame(read_source(adult), adult, generated_id_prefix="b", generated_time_start_us=0).events
    rare = parse_spec(SYNTHETIC)
    streams = [(f"adult, 1 positive in {keep} kept", adult, lambda seed, keep=keep: rarer(events, adult, keep, seed)) for keep in KEEP_ONE_POSITIVE_IN]
    streams.append(("synthetic 1:40", rare, lambda seed: validate_frame(synthetic(seed), rare, generated_id_prefix="s", generated_time_start_us=0).events))
    config = TrainingConfig(min_rows=200, trials=args.trials, seconds=120)
    table = []
    for stream_name, spec, make in streams:
        tuned = spec.model_copy(update={"decision_threshold": BEST_F1})
        runs: dict[str, list[dict[str, float]]] = {"0.5 (default)": [], BEST_F1: [], "ceiling": []}
        shares = []
        for seed in range(args.seeds):
            stream = make(seed)
            shares.append(float((stream[LABEL] == spec.positive_class).mean()))
            cut = int(len(stream) * TRAIN_SHARE)
            window, scored = stream.iloc[:cut], stream.iloc[cut:]
            default, chosen = train(window, spec, config), train(window, tuned, config)
            for name, result in (("0.5 (default)", default), (BEST_F1, chosen)):
                runs[name].append({**score(spec, scored[LABEL], result.predictor.predict(scored)), "threshold": result.predictor.threshold})
            probability = default.predictor.predict(scored)["probability"].to_numpy()
            ceiling = best_f1_threshold(probability, (scored[LABEL] == spec.positive_class).to_numpy()) or 0.5
            oracle = dataclasses.replace(default.predictor, threshold=ceiling)
            runs["ceiling"].append({**score(spec, scored[LABEL], oracle.predict(scored)), "threshold": ceiling})
        base_f1 = statistics.median(v["f1"] for v in runs["0.5 (default)"])
        for name, values in runs.items():
            median = {k: statistics.median(v[k] for v in values) for k in ("threshold", "precision", "recall", "f1", "accuracy", "roc_auc")}
            table.append({"stream": stream_name, "positives": f"{statistics.median(shares):.1%}", "threshold": name,
                          "median threshold": f"{median['threshold']:.3f}", "precision": f"{median['precision']:.3f}", "recall": f"{median['recall']:.3f}",
                          "F1": f"{median['f1']:.3f}", "F1 vs 0.5": "" if name == "0.5 (default)" else (f"{median['f1'] / base_f1:.2f}x" if base_f1 > 0 else "from 0"),
                          "accuracy": f"{median['accuracy']:.4f}", "ROC AUC": f"{median['roc_auc']:.4f}"})
    gains = [float(r["F1 vs 0.5"].rstrip("x")) for r in table if r["threshold"] == BEST_F1 and r["F1 vs 0.5"].endswith("x")]
    costs = [float(b["accuracy"]) - float(a["accuracy"]) for a, b in zip(table[::3], table[1::3])]
    body = (markdown_table(table)
            + (f"\n\nbest_f1 against 0.5: F1 {min(gains):.2f}x to {max(gains):.2f}x on the {len(gains)} streams, accuracy "
               f"{min(costs):+.4f} to {max(costs):+.4f} (a rare class predicted more often costs some accuracy, which counts the majority's hits)." if gains else "")
            + f"\n\nAdult ({len(events):,} events, the file's order) with one positive in {', '.join(map(str, KEEP_ONE_POSITIVE_IN))} kept, and a "
            "synthetic 1:40 stream of 20,000 events; each trained on its first "
            f"{TRAIN_SHARE:.0%} ({args.trials} tuning trial(s); best_f1 chooses on the training's own validation part, its latest 20 %), "
            f"scored on the rest; median of {args.seeds} subsamples (seeds). "
            "'ceiling': the default model's scores at the threshold of best F1 on the scored events themselves (unknowable when training). "
            f"ROC AUC does not depend on the threshold (the two trainings differ only in it). Total wall time {time.perf_counter() - started:.0f} s.")
    print(body)
    record("threshold", COMMAND + f" --seeds {args.seeds} --trials {args.trials}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
