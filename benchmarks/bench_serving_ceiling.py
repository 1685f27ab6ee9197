"""`mlplatform serve` against the bare-model ceiling, same model, same machine, measured alternately with wrk.

The ceiling is a minimal Starlette app on the same uvicorn loop and parser (uvloop, httptools) that reads the JSON
record, encodes it with the model's own codec and calls `Booster.predict`: no validation, no prediction log, no
metrics. Beside it, `mlplatform serve` as shipped (validation, metrics, every answer committed to the SQLite event log
before it is sent, on the event loop when the write lock is free) and the same server committing every group on the
prediction log's writer thread (`MLPLATFORM_SERVE_LOG_ON_LOOP=false`, the path before the loop commits); and the
shipped server again with every request carrying an event id of its own (what a caller keying events with its ids pays:
the claim and the look-up in the log). The prediction-log lag histogram of the shipped server (/metrics) tells how much
of its latency is the wait for the commit.

    .venv/bin/python benchmarks/bench_serving_ceiling.py [--seconds 8] [--rounds 3] [--no-record]
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import CONNECTIONS, ID_SLOT, WRK_MISSING, _process, adult_events, cpu_seconds, promoted_state, quick_fit, wrk  # noqa: E402
from results import markdown_table, record  # noqa: E402

from mlplatform.ports import free_port  # noqa: E402
from mlplatform.domain.spec import load_spec  # noqa: E402
from mlplatform.pipeline.replay import json_records  # noqa: E402
from mlplatform.settings import DEFAULT_SPEC, env_name  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_serving_ceiling.py"
TRAIN_ROWS = 20_000
GOAL_THROUGHPUT, GOAL_P99 = 0.8, 1.5  # issue 17: ≥ 0.8× the ceiling's requests/s, p99 ≤ 1.5× its p99


def bare_app(state_dir: Path, port: int) -> None:
    """The ceiling: the champion's booster behind one Starlette route, nothing else."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from mlplatform.serving.records import RecordCodec
    from mlplatform.settings import Settings
    from mlplatform.stores.registry import CHAMPION, Registry

    spec = load_spec(DEFAULT_SPEC)
    settings = Settings(state_dir=state_dir, dataset_spec=DEFAULT_SPEC)
    registry = Registry(settings.tracking_uri, settings.artifact_root, spec)
    champion = registry.version_by_alias(CHAMPION)
    assert champion is not None, "the state folder has no champion"
    predictor = registry.load_predictor(int(champion.version))
    codec, booster = RecordCodec(spec, predictor), predictor.booster

    async def predict(request: Request) -> JSONResponse:
        matrix, _ = codec.encode([json.loads(await request.body())])
        return JSONResponse({"score": booster.predict(matrix, num_threads=1).tolist()})

    async def ready(_: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning")


def log_lag_share(metrics_text: str, under_s: float) -> tuple[float, float]:
    """(share of predictions whose group commit took ≤ `under_s`, mean rows per commit) from the server's /metrics."""
    buckets = {float(le): float(v) for le, v in re.findall(r'^mlplatform_prediction_log_lag_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} ([\d.e+]+)$',
                                                           metrics_text, re.M) if le != "+Inf"}
    count = re.search(r"^mlplatform_prediction_log_lag_seconds_count\{[^}]*\} ([\d.e+]+)$", metrics_text, re.M)
    commits = re.search(r"^mlplatform_prediction_log_commits_total\{[^}]*\} ([\d.e+]+)$", metrics_text, re.M)
    total = float(count.group(1)) if count else 0.0
    within = max((v for le, v in buckets.items() if le <= under_s), default=0.0)
    return (within / total if total else float("nan")), (total / float(commits.group(1)) if commits and float(commits.group(1)) else float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per server")
    parser.add_argument("--no-record", action="store_true", help="print the table without writing RESULTS.md")
    parser.add_argument("--bare", nargs=2, metavar=("STATE_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_app(Path(args.bare[0]), int(args.bare[1]))
        return 0
    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 1
    spec, rows, events = adult_events(TRAIN_ROWS)
    result = quick_fit(events, spec)
    record_ = json_records(rows.iloc[-1:], spec)[0]
    one = json.dumps(record_).encode()
    bodies = {"bare": one, "serve": one, "thread": one, "ids": json.dumps({**record_, "event_id": ID_SLOT}).encode()}
    bin_dir = Path(sys.executable).parent
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings, _ = promoted_state(folder, spec, result, events)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLATFORM_")} | {"MLPLATFORM_STATE_DIR": str(settings.state_dir)}
        ports = {name: free_port() for name in ("bare", "serve", "thread")}
        serve_args = ["serve", "--model", spec.name, "--port"]
        commands = {"bare": [sys.executable, __file__, "--bare", str(settings.state_dir), str(ports["bare"])],
                    "serve": [str(bin_dir / "mlplatform"), *serve_args, str(ports["serve"])],
                    "thread": [str(bin_dir / "mlplatform"), *serve_args, str(ports["thread"])]}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        with _process(commands["bare"], env, urls["bare"] + "/readyz", folder / "bare.log") as bare_proc, \
                _process(commands["serve"], env, urls["serve"] + "/readyz", folder / "serve.log") as serve_proc, \
                _process(commands["thread"], env | {env_name("serve_log_on_loop"): "false"}, urls["thread"] + "/readyz", folder / "thread.log") as thread_proc:
            pids = {"bare": bare_proc.pid, "serve": serve_proc.pid, "thread": thread_proc.pid, "ids": serve_proc.pid}
            urls["ids"] = urls["serve"]  # the shipped server, sent requests with their own ids
            for name, url in urls.items():
                wrk(url + "/predict", bodies[name], 3, CONNECTIONS, folder, f"{name}-warm")
            for round_ in range(args.rounds):
                for name, url in urls.items():
                    cpu = cpu_seconds(pids[name])
                    run = wrk(url + "/predict", bodies[name], args.seconds, CONNECTIONS, folder, f"{name}-{round_}")
                    run["cpu_ms"] = (cpu_seconds(pids[name]) - cpu) * 1000 / max(1.0, run["rps"] * round(args.seconds))
                    runs.setdefault(name, []).append(run)
            metrics_text = httpx.get(urls["serve"] + "/metrics").text
    mean = {name: {k: sum(r[k] for r in rs) / len(rs) for k in ("rps", "p50", "p99", "errors", "cpu_ms")} for name, rs in runs.items()}
    bare = mean["bare"]
    labels = {"bare": "bare Starlette + Booster.predict (no validation, no log)", "serve": "mlplatform serve (validation, metrics, durable log)",
              "thread": "mlplatform serve, every commit on the writer thread (before)",
              "ids": "mlplatform serve, each request with its own event id"}
    table = [{"single row, 8 connections": labels[name], "requests/s": f"{m['rps']:,.0f}",
              "each run": ", ".join(f"{r['rps']:,.0f}" for r in runs[name]), "p50 (ms)": f"{m['p50']:.2f}", "p99 (ms)": f"{m['p99']:.2f}",
              "each p99": ", ".join(f"{r['p99']:.1f}" for r in runs[name]), "non-2xx": f"{m['errors']:.0f}",
              "server CPU ms per request": f"{m['cpu_ms']:.3f}", "CPU per request vs bare": "" if name == "bare" else f"{m['cpu_ms'] / bare['cpu_ms']:.2f}×",
              "throughput vs bare": "" if name == "bare" else f"{m['rps'] / bare['rps']:.2f}×",
              "p99 vs bare": "" if name == "bare" else f"{m['p99'] / bare['p99']:.2f}×"} for name, m in mean.items()]
    serve = mean["serve"]
    throughput_met, p99_met = serve["rps"] >= GOAL_THROUGHPUT * bare["rps"], serve["p99"] <= GOAL_P99 * bare["p99"]
    within_p50, per_commit = log_lag_share(metrics_text, serve["p50"] / 1000)
    body = (
        markdown_table(table)
        + f"\n\n- Goal (issue 17): ≥ {GOAL_THROUGHPUT}× the bare app's requests/s — **{'met' if throughput_met else 'missed'}** "
        f"({serve['rps'] / bare['rps']:.2f}×); p99 ≤ {GOAL_P99}× the bare app's — **{'met' if p99_met else 'missed'}** ({serve['p99'] / bare['p99']:.2f}×)."
        f"\n- Server CPU per request (its process's user + system CPU over a run, divided by the requests it answered; "
        f"what other processes' load on a shared machine changes least): {serve['cpu_ms']:.3f} ms against the bare app's {bare['cpu_ms']:.3f} ms, "
        f"{serve['cpu_ms'] / bare['cpu_ms']:.2f}×. The servers are single-threaded, and the bare app kept its process "
        f"{bare['rps'] * bare['cpu_ms'] / 1000:.0%} busy: where that is near 100 %, requests/s is CPU per request's inverse, and "
        f"{bare['cpu_ms'] / serve['cpu_ms']:.2f}× is the throughput ratio the CPU cost alone predicts."
        f"\n- Where the time goes: the shipped server's group commits held {per_commit:.1f} predictions each on average, and "
        f"{within_p50:.0%} of predictions waited ≤ its p50 ({serve['p50']:.2f} ms) for their commit (prediction-log lag histogram, /metrics). "
        f"Committing on the loop gave {serve['rps'] / mean['thread']['rps']:.2f}× the requests/s and {serve['p99'] / mean['thread']['p99']:.2f}× the p99 "
        "of the same server handing every group to the writer thread."
        f"\n- Requests that carry their own event id (README, *Your own event ids*; wrk's Lua script builds each body with a new id): "
        f"{mean['ids']['rps'] / serve['rps']:.2f}× the requests/s, {mean['ids']['p99'] / serve['p99']:.2f}× the p99 and "
        f"{mean['ids']['cpu_ms'] / serve['cpu_ms']:.2f}× the CPU per request of the same server's requests without one "
        f"({mean['ids']['errors']:.0f} non-2xx: each id was new)."
        f"\n- wrk -t2 -c{CONNECTIONS}, {args.seconds:.0f} s per run, the three servers up at once and measured in turn (the shipped one twice, "
        f"without and with ids), {args.rounds} rounds, "
        f"after a 3 s warm-up each; means of the rounds. Model: LightGBM trained on {TRAIN_ROWS:,} Adult rows, 300 rounds. "
        f"{os.cpu_count()} cores shared by the servers, wrk and whatever else runs (load average at the end: "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + ")."
    )
    print(body)
    if not args.no_record:
        record("serving ceiling", COMMAND, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
