"""What `trained_model` costs over a bare `lightgbm.train` on the same frame.

The bare call gets the frame already transformed and the same time-ordered validation split, default
parameters and early stopping: the least any trained model costs. `train` adds the transformer and the
tuning loop; `train_challenger` (what the asset runs) adds MLflow logging and registration. Both are
timed with 1 trial and with the default tuning budget (Settings: tuning_trials, tuning_seconds). The last rows are
the seconds the MLflow-native records (dataset inputs, mlflow.models.evaluate) add to one retrain.

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
from mlplatform.stores.registry import TRAINING, Registry  # noqa: E402
from mlplatform.pipeline.replay import read_source  # noqa: E402
from mlplatform.pipeline.retraining import (FeatureSnapshot, build_feature_snapshot, evaluate_challenger, holdout_dataset,  # noqa: E402
                                            record_evaluation, train_challenger, training_config)
from mlplatform.stores.mlflow_records import EVALUATION, window_dataset  # noqa: E402
from mlplatform.settings import Settings  # noqa: E402
from mlplatform.domain.spec import DatasetSpec, load_spec  # noqa: E402
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
            single_s = median_seconds(lambda: train_challenger(replace_settings(settings, trials, [settings.training_window]), spec, registry, snapshot, {}), args.repeat)
            asset_s = median_seconds(lambda: train_challenger(replace_settings(settings, trials), spec, registry, snapshot, {}), args.repeat)
            rows.append({"what": "mlplatform.domain.training.train (transform + tuning loop)", "trials": trials, "median s": f"{train_s:.2f}", "vs bare": f"{train_s / bare_s:.1f}x"})
            rows.append({"what": "train_challenger, one window (training_window_candidates=[training_window])", "trials": trials,
                         "median s": f"{single_s:.2f}", "vs bare": f"{single_s / bare_s:.1f}x"})
            rows.append({"what": f"train_challenger = trained_model's work (+ MLflow log and register), candidate windows {list(settings.window_candidates)}",
                         "trials": trials, "median s": f"{asset_s:.2f}", "vs bare": f"{asset_s / bare_s:.1f}x ({asset_s / single_s:.2f}x one window)"})
        rows += records_rows(settings, spec, registry, snapshot, log, args.repeat)
        log.close()
    body = (
        markdown_table(rows)
        + f"\n\nAdult, {len(frame)} training rows ({args.rows} labelled events, the latest {settings.holdout_fraction:.0%} held out); "
        f"median of {args.repeat}. Candidate windows other than the largest are one fit each with the largest's tuned parameters. Default tuning budget: {config.trials} trials or {config.seconds:.0f} s. One LightGBM thread: "
        "with two, training ran about 10x slower while the shared 2-core machine was busy (OpenMP threads spin)."
    )
    print(body)
    record("training", COMMAND + f" --rows {args.rows} --repeat {args.repeat}", body)
    return 0


def records_rows(settings: Settings, spec: DatasetSpec, registry: Registry, snapshot: FeatureSnapshot, log: EventLog, repeat: int) -> list[dict[str, object]]:
    """What the MLflow-native records add to a retrain: the two dataset inputs logged with the model (digests, schemas,
    one more store call) and evaluation_report's mlflow.models.evaluate with its plots (first call in a process, as in a
    Dagster run, then warm)."""
    result = train(snapshot.train, spec, replace(training_config(settings), trials=1), transformer=snapshot.transformer)
    frame = snapshot.train
    plain_s = median_seconds(lambda: registry.log_model(result, frame, {}, {}), repeat)
    inputs_s = median_seconds(lambda: registry.log_model(result, frame, {}, {}, {
        TRAINING: window_dataset(spec, frame, snapshot.window.event_log, "train"), EVALUATION: holdout_dataset(spec, snapshot)}), repeat)
    version = int(registry.log_model(result, frame, {}, {}).version)
    evaluation = evaluate_challenger(settings, spec, registry, snapshot, version, log)
    started = time.perf_counter()
    record_evaluation(spec, registry, snapshot, evaluation)
    first_s = time.perf_counter() - started
    warm_s = median_seconds(lambda: record_evaluation(spec, registry, snapshot, evaluation), repeat)
    return [
        {"what": "+ dataset inputs in trained_model (train and hold-out digests, schemas, log_inputs)", "trials": "",
         "median s": f"{inputs_s - plain_s:+.2f}", "vs bare": ""},
        {"what": "+ MLflow records in evaluation_report (mlflow.models.evaluate, plots, segments), first call in a process", "trials": "",
         "median s": f"{first_s:+.2f}", "vs bare": ""},
        {"what": "+ the same, warm (median of next)", "trials": "", "median s": f"{warm_s:+.2f}", "vs bare": ""},
    ]


def replace_settings(settings: Settings, trials: int, candidates: list[int] | None = None) -> Settings:
    """`settings` with `trials` tuning trials and, given, these candidate windows (default: the setting's)."""
    return settings.model_copy(update={"tuning_trials": trials, **({"training_window_candidates": candidates} if candidates else {})})


if __name__ == "__main__":
    sys.exit(main())
