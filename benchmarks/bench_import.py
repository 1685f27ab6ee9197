"""What a fresh process pays to load the code location, next to `import dagster, pandas` alone (its floor).

Every run worker, code server, `dg check defs` and the daemon pays the import and the build of the Definitions
(the defs folder's component tree + every model's RetrainingLoop component) before doing anything. The goal: the import at
most 1.3x the floor. Each command runs in a fresh subprocess, the rows interleaved round by round so that a change
in the machine's load hits them alike; the median wall clock of each is reported with its ratio to the floor. The
last row is what the code location imported at load before the heavy libraries moved into the functions using them.

    .venv/bin/python benchmarks/bench_import.py [--runs 5]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import markdown_table, record  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_import.py"
GOAL = 1.3
ROOT = Path(__file__).resolve().parent.parent
FLOOR = "`import dagster, pandas` (the floor)"
IMPORT = "`import mlplatform.orchestration.definitions`"
CASES = {
    FLOOR: "import dagster, pandas",
    IMPORT: "import mlplatform.orchestration.definitions",
    "import + build the Definitions (`defs()`: what `dg check defs`, a run worker, the daemon pay)":
        "import mlplatform.orchestration.definitions as d; d.defs()",
    "`import dagster, pandas` + MLflow, scikit-learn, LightGBM, Optuna, FastAPI (what loading imported before)":
        "import dagster, pandas, mlflow, sklearn, lightgbm, optuna, fastapi",
}


def run_once(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall clock and CPU seconds (user + system) of one fresh process running `code`."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "MLPLATFORM_STATE_DIR": state}
        times: dict[str, list[float]] = {name: [] for name in CASES}
        cpu: dict[str, list[float]] = {name: [] for name in CASES}
        for code in CASES.values():  # one untimed run each: the OS file cache warm for all alike
            run_once(code, env)
        for _ in range(args.runs):
            for name, code in CASES.items():
                wall, used = run_once(code, env)
                times[name].append(wall)
                cpu[name].append(used)
    floor, cpu_floor = statistics.median(times[FLOOR]), statistics.median(cpu[FLOOR])
    rows = [{"process": name, "median s": f"{statistics.median(t):.2f}", "min s": f"{min(t):.2f}", "max s": f"{max(t):.2f}",
             "vs floor": f"{statistics.median(t) / floor:.2f}x", "median CPU s": f"{statistics.median(cpu[name]):.2f}",
             "CPU vs floor": f"{statistics.median(cpu[name]) / cpu_floor:.2f}x"} for name, t in times.items()]
    ratio = statistics.median(times[IMPORT]) / floor
    body = (
        markdown_table(rows)
        + f"\n\n- Goal: the code location's import ≤ {GOAL}x `import dagster, pandas` in the same run: "
        f"**{'met' if ratio <= GOAL else 'MISSED'}** ({ratio:.2f}x wall clock; "
        f"{statistics.median(cpu[IMPORT]) / cpu_floor:.2f}x in CPU seconds, which a shared machine's load disturbs less)."
        f"\n- {args.runs} fresh processes per row, rows interleaved, wall clock including interpreter start; "
        "load average at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores."
    )
    print(body)
    record("import", COMMAND + (f" --runs {args.runs}" if args.runs != 5 else ""), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
