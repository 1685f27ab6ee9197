"""What `trained_model` costs over a bare `lightgbm.train` on the same frame.

The bare call gets the frame already transformed and the same time-ordered validation split, default
parameters and early stopping: the least any trained model costs. `train` adds the transformer and the
tuning loop; `train_challenger` (what the asset runs) adds MLflow logging and registration. Both are
timed with 1 trial and with the default tuning budget (Settings: tuning_trials, tuning_seconds).

    .venv/bin/python benchmarks/bench_training.py [--rows 20000] [--repeat 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import markdown_table, record  # noqa: E402

import lightgbm as lgb  # noqa: E402

from mlplatform.stores.eventlog import EventLog  # noqa: E402
from mlplatform.stores.registry import Registry  # noqa: E402
from mlplatform.pipeline.replay import read_source  # noqa: E402
from mlplatform.pipeline.retraining import build_feature_snapshot, train_challenger, training_config  # noqa: E402
from mlplatform.settings import Settings  # noqa: E402
from mlplatform.domain.spec import load_spec  # noqa: E402
from mlplatform.domain.training import DEFAULT_PARAMS, _objective, encode_labels, train  # noqa: E402
from mlplatform.domain.validation import LABEL, validate_frame  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_training.py"


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="labelled events in the training window")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        os.environ["MLPLATFORM_STATE_DIR"] = state
        settings = Settings()
        settings.ensure_dirs()
        spec = load_spec(settings.dataset_spec)
        log = EventLog.for_dataset(settings.events_dir, spec)
        log.append(validate_frame(read_source(spec).head(args.rows), spec, generated_id_prefix="b", generated_time_start_us=0).events, "bench")
        snapshot = build_feature_snapshot(settings, spec, log, settings.work_dir / "bench")
        frame = snapshot.train
        config = training_config(settings)
        one = replace(config, trials=1)
        n_valid = max(1, int(len(frame) * config.validation_fraction))
        x = snapshot.transformer.transform(frame)
        y = encode_labels(frame[LABEL], spec)
        params = {**_objective(spec), **DEFAULT_PARAMS, "verbosity": -1, "seed": config.seed, "num_threads": config.num_threads, "bagging_freq": 1}

        def bare() -> None:
            train_set = lgb.Dataset(x.iloc[:-n_valid], y[:-n_valid])
            valid_set = lgb.Dataset(x.iloc[-n_valid:], y[-n_valid:], reference=train_set)
            lgb.train(params, train_set, num_boost_round=config.num_boost_round, valid_sets=[valid_set],
                      callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])

        registry = Registry(settings.tracking_uri, settings.artifact_root, spec)
        train_challenger(replace_settings(settings, 1), spec, registry, snapshot, {})  # warm MLflow's store and caches
        bare_s = median_seconds(bare, args.repeat)
        rows = [{"what": "bare lightgbm.train (transformed frame, default params, early stopping)", "trials": 1,
                 "median s": f"{bare_s:.2f}", "vs bare": "1.0x"}]
        for trials, cfg in ((1, one), (config.trials, config)):
            train_s = median_seconds(lambda: train(frame, spec, cfg, transformer=snapshot.transformer), args.repeat)
            asset_s = median_seconds(lambda: train_challenger(replace_settings(settings, trials), spec, registry, snapshot, {}), args.repeat)
            rows.append({"what": "mlplatform.domain.training.train (transform + tuning loop)", "trials": trials, "median s": f"{train_s:.2f}", "vs bare": f"{train_s / bare_s:.1f}x"})
            rows.append({"what": "train_challenger = trained_model's work (+ MLflow log and register)", "trials": trials,
                         "median s": f"{asset_s:.2f}", "vs bare": f"{asset_s / bare_s:.1f}x"})
        log.close()
    body = (
        markdown_table(rows)
        + f"\n\nAdult, {len(frame)} training rows ({args.rows} labelled events, the latest {settings.holdout_fraction:.0%} held out); "
        f"median of {args.repeat}. Default tuning budget: {config.trials} trials or {config.seconds:.0f} s. One LightGBM thread: "
        "with two, training ran about 10x slower while the shared 2-core machine was busy (OpenMP threads spin)."
    )
    print(body)
    record("training", COMMAND + f" --rows {args.rows} --repeat {args.repeat}", body)
    return 0


def replace_settings(settings: Settings, trials: int) -> Settings:
    return settings.model_copy(update={"tuning_trials": trials})


if __name__ == "__main__":
    sys.exit(main())
