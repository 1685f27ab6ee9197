"""Log + register one model version: mlplatform's Registry.log_model vs MLflow's default path.

MLflow's default `mlflow.pyfunc.log_model` (no pip_requirements) infers requirements by loading the model
in a subprocess; Registry.log_model pins them and registers in one call. Both run against a fresh SQLite
store in a temp folder, on the same trained model, in the same (warm) process.

    .venv/bin/python benchmarks/bench_registry.py [--repeat 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import markdown_table, record  # noqa: E402

import mlflow  # noqa: E402

from mlplatform.stores.registry import MODEL_CODE, Registry  # noqa: E402
from mlplatform.pipeline.replay import read_source  # noqa: E402
from mlplatform.settings import DEFAULT_SPEC  # noqa: E402
from mlplatform.domain.spec import load_spec  # noqa: E402
from mlplatform.domain.training import TrainingConfig, train  # noqa: E402
from mlplatform.domain.validation import validate_frame  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_registry.py"


def _mlflow_default(registry: Registry, result: object, example: object) -> None:
    """What a user writes by default: start_run + log_model with a registered name, requirements inferred."""
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=registry.experiment_id):
        artifacts = result.predictor.save(Path(tmp))  # type: ignore[attr-defined]
        mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE), artifacts=artifacts, input_example=example,
                                registered_model_name=registry.name + "-default")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = load_spec(DEFAULT_SPEC)
    events = validate_frame(read_source(spec).head(3000), spec, generated_id_prefix="b", generated_time_start_us=0).events
    result = train(events, spec, TrainingConfig(trials=1))
    example = events[result.predictor.transformer.input_columns].head(5)
    with tempfile.TemporaryDirectory() as state:
        uri = f"sqlite:///{state}/mlflow.db"
        registry = Registry(uri, Path(state, "artifacts").as_uri(), spec)
        started = time.perf_counter()
        registry.log_model(result, events, {"valid_roc_auc": 0.9}, {"mlplatform.bench": "1"})
        first = time.perf_counter() - started
        ours = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            registry.log_model(result, events, {"valid_roc_auc": 0.9}, {"mlplatform.bench": "1"})
            ours.append(time.perf_counter() - started)
        default = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            _mlflow_default(registry, result, example)
            default.append(time.perf_counter() - started)
    ours_median, default_median = statistics.median(ours), statistics.median(default)
    rows = [
        {"path": "Registry.log_model (pinned requirements, one registration call)", "first call in a process (s)": f"{first:.2f}",
         "median of next (s)": f"{ours_median:.2f}", "runs": args.repeat, "vs MLflow default": "1.0x"},
        {"path": "mlflow.pyfunc.log_model default (requirements inferred in a subprocess)", "first call in a process (s)": "",
         "median of next (s)": f"{default_median:.2f}", "runs": args.repeat, "vs MLflow default": f"{default_median / ours_median:.1f}x slower"},
    ]
    table = markdown_table(rows)
    target = "meets" if ours_median <= 0.5 else "misses"
    body = (f"{table}\n\nTarget ≤ 0.5 s per version: {target} it ({ours_median:.2f} s). The first call in a process also pays "
            "MLflow's one-off scan of installed packages (`importlib_metadata.packages_distributions`), which MLflow "
            "caches for the rest of the process.")
    print(body)
    record("registry", COMMAND, body)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    sys.exit(main())
