"""trained_model's fit in one process vs on a Dask cluster of 2 worker processes (`dask_scheduler`), same window.

The window is Adult resampled with replacement up to `--rows` labelled rows (Adult has 48,842), its training and
validation parts from disjoint rows; the hold-out is Adult's last rows, never resampled, so its ROC AUC is an honest
comparison. Both sides run
`mlplatform.domain.training.train` with the same transformer, parameters and one tuning trial; each LightGBM
process has one thread (as trained_model), so the cluster has twice the threads of the local fit.

    .venv/bin/python benchmarks/bench_training_dask.py [--rows 1000000] [--repeat 1]
"""

import argparse
import statistics
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import markdown_table, record  # noqa: E402

import pandas as pd  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from mlplatform.domain.predictor import PROBABILITY  # noqa: E402
from mlplatform.domain.spec import load_spec  # noqa: E402
from mlplatform.domain.training import TrainingConfig, encode_labels, fit_transformer, train  # noqa: E402
from mlplatform.domain.validation import LABEL, validate_frame  # noqa: E402
from mlplatform.pipeline.replay import read_source  # noqa: E402
from mlplatform.settings import DEFAULT_SPEC  # noqa: E402
from mlplatform.stores.dask_training import dask_fit  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_training_dask.py"
HOLDOUT_ROWS = 5000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="labelled rows in the training window")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    spec = load_spec(DEFAULT_SPEC)
    events = validate_frame(read_source(spec), spec, generated_id_prefix="b", generated_time_start_us=0).events
    events = events[events[LABEL].notna()].reset_index(drop=True)
    holdout = events.iloc[-HOLDOUT_ROWS:].reset_index(drop=True)
    config = replace(TrainingConfig(), trials=1, seconds=3600)
    # The training and validation parts are resampled from disjoint rows: a validation row copied from a training row
    # would never stop the boosting early.
    source = events.iloc[:-HOLDOUT_ROWS]
    n_valid_source = int(len(source) * config.validation_fraction)
    n_valid = int(args.rows * config.validation_fraction)
    window = pd.concat([source.iloc[:-n_valid_source].sample(n=args.rows - n_valid, replace=True, random_state=7),
                        source.iloc[-n_valid_source:].sample(n=n_valid, replace=True, random_state=8)], ignore_index=True)
    transformer = fit_transformer(window.iloc[:-n_valid], spec)
    y_holdout = encode_labels(holdout[LABEL], spec)

    def measure(client: Client | None) -> dict[str, object]:
        times, auc, iterations = [], 0.0, 0
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = train(window, spec, config, transformer=transformer, fit_maker=None if client is None else partial(dask_fit, client))
            times.append(time.perf_counter() - started)
            auc = float(roc_auc_score(y_holdout, result.predictor.predict(holdout)[PROBABILITY]))
            iterations = result.best_iteration
        return {"wall s (median)": round(statistics.median(times), 1), "hold-out ROC AUC": round(auc, 4), "best iteration": iterations}

    rows = [{"where": "local: the step's process, 1 thread", **measure(None)}]
    started = time.perf_counter()
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster, Client(cluster) as client:
        startup = time.perf_counter() - started
        rows.append({"where": "Dask: 2 worker processes x 1 thread (lightgbm.dask)", **measure(client)})
    local_s, dask_s = rows[0]["wall s (median)"], rows[1]["wall s (median)"]
    body = (
        markdown_table(rows)
        + f"\n\nDask / local wall time: {float(dask_s) / float(local_s):.2f}x; AUC difference "  # type: ignore[arg-type]
        f"{float(rows[1]['hold-out ROC AUC']) - float(rows[0]['hold-out ROC AUC']):+.4f}. "  # type: ignore[arg-type]
        f"{args.rows:,} training rows (Adult resampled with replacement, training and validation parts from disjoint rows), hold-out: Adult's last {HOLDOUT_ROWS} rows; one tuning trial, "
        f"early stopping on the latest {config.validation_fraction:.0%}; median of {args.repeat}. Starting the local cluster took "
        f"{startup:.1f} s (not included). Both sides share this machine's 2 cores with whatever else runs on it."
    )
    print(body)
    record("training on Dask", COMMAND + f" --rows {args.rows} --repeat {args.repeat}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
