"""How long `mlplatform status` and `mlplatform --help` take, as a user runs them: a fresh process each time.

A real state folder: Adult with a trained champion and a log grown to 1M events (as bench_sensor_tick grows
it), Bike Sharing beside it. Each command runs as a subprocess, timed wall clock, next to the floor it cannot go
below: a Python process that only imports the composition root (settings, the models' specs, pandas). Status reads
the embedded MLflow store's tables directly (RegistryTables); the row importing MLflow's client shows what reading
the registry through it, as status did before, costs at the least.

    .venv/bin/python benchmarks/bench_status.py
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("MLPLATFORM_TUNING_TRIALS", "1")
os.environ.setdefault("MLPLATFORM_NUM_BOOST_ROUND", "100")

import dagster as dg  # noqa: E402
from bench_sensor_tick import FIRST_ROWS, grow  # noqa: E402
from results import markdown_table, record  # noqa: E402

from mlplatform.orchestration.instance import prepare_dagster_home  # noqa: E402
from mlplatform.orchestration.launch import materialize  # noqa: E402
from mlplatform.pipeline.replay import read_source, write_batches  # noqa: E402
from mlplatform.root import platform  # noqa: E402
from mlplatform.settings import Settings  # noqa: E402

EVENTS = 1_000_000
RUNS = 5
GOAL_S = 2.0
BIN = Path(sys.executable).parent


def timed(commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, list[float]]:
    """RUNS wall-clock times of each command, interleaved round by round so that a change in the machine's load hits all alike."""
    times: dict[str, list[float]] = {what: [] for what in commands}
    for _ in range(RUNS):
        for what, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, env=env, check=True, capture_output=True)
            times[what].append(time.perf_counter() - started)
    return times


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLPLATFORM_STATE_DIR"] = str(Path(tmp) / "state")
        prepare_dagster_home(Settings())
        adult = platform().model("adult")
        write_batches(read_source(adult.spec).iloc[:FIRST_ROWS], adult.spec, adult.settings.landing_dir, FIRST_ROWS)
        with dg.DagsterInstance.get() as instance:
            materialize(instance, adult.name, ["raw_events", "features", "trained_model", "evaluation_report"])
        grow(adult.event_log.path, EVENTS)
        env = dict(os.environ)
        shown = subprocess.run([str(BIN / "mlplatform"), "status", "--model", "adult"], env=env, check=True, capture_output=True, text=True).stdout
        assert "champion: v1" in shown and f"events: {EVENTS} total" in shown, shown  # timing a status that reads a real champion
        commands = dict([
            ("`python -c 'import mlplatform.root'` (the floor)", [sys.executable, "-c", "import mlplatform.root"]),
            ("`python -c 'import mlflow.tracking'` (MLflow's client alone)", [sys.executable, "-c", "import mlflow.tracking"]),
            ("`mlplatform status --model adult` (1M events)", [str(BIN / "mlplatform"), "status", "--model", "adult"]),
            ("`mlplatform status` (both models)", [str(BIN / "mlplatform"), "status"]),
            ("`mlplatform --help`", [str(BIN / "mlplatform"), "--help"]),
            ("`mlplatform replay --help`", [str(BIN / "mlplatform"), "replay", "--help"]),
        ])
        rows = [{"command": what, "median s": f"{statistics.median(t):.2f}", "max s": f"{max(t):.2f}"} for what, t in timed(commands, env).items()]
    status_s = float(rows[2]["median s"])
    floor_s, client_s = float(rows[0]["median s"]), float(rows[1]["median s"])
    body = (
        markdown_table(rows)
        + f"\n\n- `status` reads the event log's counters and the registry's tables (a few SQLite reads per model, no MLflow import), "
        f"never an event row: its time does not grow with the log. Goal ≤ {GOAL_S:.0f} s on a 1M-event log: "
        f"**{'met' if status_s <= GOAL_S else 'MISSED'}** ({status_s:.2f} s; the composition root alone {floor_s:.2f} s; "
        f"importing MLflow's client alone, as status did before, {client_s:.2f} s)."
        f"\n- {RUNS} runs each, a fresh process per run, the commands interleaved, wall clock; load average at the end: "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores."
    )
    print(body)
    record("status", ".venv/bin/python benchmarks/bench_status.py", body)


if __name__ == "__main__":
    main()
