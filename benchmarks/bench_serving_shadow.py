"""Serving throughput and p99 with the shadow challenger off vs on: what scoring `@challenger` beside `@champion` on live
traffic costs the answers.

One state folder, the champion and a challenger trained on different rows; two servers up at once on the same event log,
one with `MLPLATFORM_SERVE_SHADOW_CHALLENGER` unset and one with it on, measured alternately in rounds with wrk
(single-row /predict at 8 connections, every answer committed to the event log first). With the shadow on, every served
event also goes to the shadow queue, is scored by the challenger on the background thread and its prediction logged;
what the queue could not take is dropped and counted, and the table says how many events were scored and dropped.
Then the same alternation with a fault in the shadow path: every write of the shadow's predictions raises (a trigger in
the SQLite event log), so the challenger scores and fails on every batch, which must not slow the champion's answers.

    .venv/bin/python benchmarks/bench_serving_shadow.py [--seconds 10] [--rounds 2]
"""

import argparse
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import CONNECTIONS, WRK_MISSING, _process, adult_events, promoted_state, quick_fit, wrk  # noqa: E402
from results import markdown_table, record  # noqa: E402

from mlplatform.ports import free_port  # noqa: E402
from mlplatform.pipeline.replay import json_records  # noqa: E402
from mlplatform.stores.registry import CHALLENGER, Registry  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_serving_shadow.py"
TRAIN_ROWS = 20_000
GOAL_RATIO = 0.7


def _counter(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} ([\d.e+]+)$", text, re.M))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 1
    spec, rows, events = adult_events(2 * TRAIN_ROWS)
    champion, challenger = quick_fit(events.iloc[:TRAIN_ROWS], spec), quick_fit(events.iloc[TRAIN_ROWS:], spec)
    one = json.dumps(json_records(rows.iloc[-1:], spec)[0]).encode()
    mlplatform = str(Path(sys.executable).parent / "mlplatform")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings, _ = promoted_state(folder, spec, champion, events)
        registry = Registry(settings.tracking_uri, settings.artifact_root, spec)
        shadow_version = int(registry.log_model(challenger, events, {}, {}).version)  # registered as @challenger
        assert str(registry.version_by_alias(CHALLENGER).version) == str(shadow_version)
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLPLATFORM_")} | {"MLPLATFORM_STATE_DIR": str(settings.state_dir)}
        off_port, on_port = free_port(), free_port()
        off_url, on_url = f"http://127.0.0.1:{off_port}", f"http://127.0.0.1:{on_port}"
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": [], "off, second phase": [], "on, shadow log failing": []}
        with _process([mlplatform, "serve", "--port", str(off_port), "--model", spec.name], base, off_url + "/readyz", folder / "off.log"), \
             _process([mlplatform, "serve", "--port", str(on_port), "--model", spec.name], base | {"MLPLATFORM_SERVE_SHADOW_CHALLENGER": "true"},
                      on_url + "/readyz", folder / "on.log"):
            wrk(off_url + "/predict", one, 3, CONNECTIONS, folder, "off-warm")
            wrk(on_url + "/predict", one, 3, CONNECTIONS, folder, "on-warm")
            for _ in range(args.rounds):
                runs["off"].append(wrk(off_url + "/predict", one, args.seconds, CONNECTIONS, folder, "off"))
                runs["on"].append(wrk(on_url + "/predict", one, args.seconds, CONNECTIONS, folder, "on"))
            metrics = httpx.get(on_url + "/metrics").text
            with sqlite3.connect(settings.events_dir / f"{spec.name}.sqlite", timeout=60) as db:
                db.execute("CREATE TRIGGER refuse_shadow BEFORE INSERT ON shadow_predictions BEGIN SELECT RAISE(ABORT, 'benchmark fault'); END")
            for _ in range(args.rounds):
                runs["off, second phase"].append(wrk(off_url + "/predict", one, args.seconds, CONNECTIONS, folder, "off2"))
                runs["on, shadow log failing"].append(wrk(on_url + "/predict", one, args.seconds, CONNECTIONS, folder, "fault"))
            faulted = httpx.get(on_url + "/metrics").text
    side = {k: {"rps": sum(r["rps"] for r in rs) / len(rs), "p50": sum(r["p50"] for r in rs) / len(rs), "p99": sum(r["p99"] for r in rs) / len(rs),
                "errors": sum(r["errors"] for r in rs), "each": ", ".join(f"{r['rps']:,.0f}" for r in rs)} for k, rs in runs.items()}
    served = _counter(metrics, "mlplatform_prediction_log_rows_total")
    scored, dropped = _counter(metrics, "mlplatform_shadow_scored_total"), _counter(metrics, "mlplatform_shadow_dropped_total")
    failed = _counter(metrics, "mlplatform_shadow_failures_total")
    failed_in_fault = _counter(faulted, "mlplatform_shadow_failures_total") - failed
    ratio, p99_ratio = side["on"]["rps"] / side["off"]["rps"], side["on"]["p99"] / side["off"]["p99"]
    fault_ratio = side["on, shadow log failing"]["rps"] / side["off, second phase"]["rps"]
    fault_p99 = side["on, shadow log failing"]["p99"] / side["off, second phase"]["p99"]
    baseline = {"off": "off", "on": "off", "off, second phase": "off, second phase", "on, shadow log failing": "off, second phase"}
    table = [
        {"single row, 8 connections": f"shadow {name}, mean of {args.rounds}", "requests/s": f"{side[name]['rps']:,.0f}", "each run": side[name]["each"],
         "p50 (ms)": f"{side[name]['p50']:.2f}", "p99 (ms)": f"{side[name]['p99']:.2f}", "non-2xx": f"{side[name]['errors']:.0f}",
         "throughput ratio": f"{side[name]['rps'] / side[base]['rps']:.2f}×", "p99 ratio": f"{side[name]['p99'] / side[base]['p99']:.2f}×"}
        for name, base in baseline.items()
    ]
    body = (
        markdown_table(table)
        + f"\n\nGoal (throughput with the shadow on ≥ {GOAL_RATIO}× off, on {os.cpu_count()} cores): **{'met' if ratio >= GOAL_RATIO else 'not met'}** "
        + f"({ratio:.2f}×; p99 {p99_ratio:.2f}×). Shadow server: {served:,.0f} events served (warm-up included), {scored:,.0f} scored by the "
        + f"challenger and logged, {dropped:,.0f} dropped (queue full), {failed:,.0f} failed. With the fault: {fault_ratio:.2f}× throughput, "
        + f"p99 {fault_p99:.2f}× (goal ≤ 1.10×: **{'met' if fault_p99 <= 1.10 else 'not met'}**), {failed_in_fault:,.0f} shadow events failed. "
        + f"Champion and challenger: LightGBM on {TRAIN_ROWS:,} different Adult rows each; wrk -t2, {args.seconds:.0f} s per run after a 3 s "
        + f"warm-up, the two servers measured alternately. {os.cpu_count()} cores shared by both servers, wrk and whatever else runs on the "
        + f"machine (load average at the end: {os.getloadavg()[0]:.1f}): other work was running, so read the ratio, not the absolute numbers; "
        + "the runs alternate, so the ratios carry run-to-run noise (see each run): a ratio above 1× is that noise, not a speed-up."
    )
    print(body)
    record("serving with the shadow challenger", COMMAND + f" --seconds {args.seconds:g} --rounds {args.rounds}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
