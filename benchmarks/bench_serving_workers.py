"""Serving throughput and p99 by deployment: 1 process on the SQLite event log vs 2 processes (`mlplatform serve
--workers 2`) on the PostgreSQL event log, with 1 process on PostgreSQL between them to separate the two changes.

The same model; single-row requests at 8 concurrent connections from wrk, every answer committed to the event log
before it is sent (group commit per process). PostgreSQL is a local durable cluster (fsync and synchronous_commit
on, as the SQLite WAL commits are), on 127.0.0.1 like everything else; the machine's 2 cores are shared by the
servers, PostgreSQL, wrk and whatever else runs.

    .venv/bin/python benchmarks/bench_serving_workers.py [--seconds 10]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import CONNECTIONS, _process, adult_events, promoted_state, quick_fit, wrk  # noqa: E402
from results import markdown_table, record  # noqa: E402

from mlplatform.ports import free_port  # noqa: E402
from mlplatform.cli.postgres import PostgresCluster, missing_reason  # noqa: E402
from mlplatform.pipeline.replay import json_records  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_serving_workers.py"
TRAIN_ROWS = 20_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each wrk run")
    args = parser.parse_args()
    if shutil.which("wrk") is None or (reason := missing_reason()):
        print(f"cannot run: {'wrk is not installed' if shutil.which('wrk') is None else reason} (make system-deps)", file=sys.stderr)
        return 1
    spec, rows, events = adult_events(TRAIN_ROWS)
    result = quick_fit(events, spec)
    one = json.dumps(json_records(rows.iloc[-1:], spec)[0]).encode()
    mlplatform = str(Path(sys.executable).parent / "mlplatform")
    cluster = PostgresCluster(durable=True).start()
    runs: list[dict[str, object]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            settings, _ = promoted_state(folder, spec, result, events)
            base = {k: v for k, v in os.environ.items() if not k.startswith("MLPLATFORM_")} | {"MLPLATFORM_STATE_DIR": str(settings.state_dir)}
            for name, workers, env in (("1 process, SQLite event log", 1, {}),
                                       ("1 process, PostgreSQL event log", 1, {"MLPLATFORM_EVENT_LOG_URL": cluster.create_database("one")}),
                                       ("2 processes (--workers 2), PostgreSQL event log", 2, {"MLPLATFORM_EVENT_LOG_URL": cluster.create_database("two")})):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                tag = f"w{workers}-{len(runs)}"
                with _process([mlplatform, "serve", "--port", str(port), "--model", spec.name, "--workers", str(workers)], base | env,
                              url + "/readyz", folder / f"{tag}.log"):
                    wrk(url + "/predict", one, 3, CONNECTIONS, folder, f"{tag}-warm")
                    measured = wrk(url + "/predict", one, args.seconds, CONNECTIONS, folder, tag)
                runs.append({"deployment": name, "requests/s": f"{measured['rps']:,.0f}", "p50 (ms)": f"{measured['p50']:.2f}",
                             "p99 (ms)": f"{measured['p99']:.2f}", "non-2xx": f"{measured['errors']:.0f}",
                             "vs 1 process SQLite": "" if not runs else f"{measured['rps'] / float(str(runs[0]['requests/s']).replace(',', '')):.2f}x"})
    finally:
        cluster.stop()
    body = (
        markdown_table(runs)
        + f"\n\nSingle-row /predict, wrk -t2 -c{CONNECTIONS}, {args.seconds:.0f} s per deployment after a 3 s warm-up, one after another; "
        "every answer committed to the event log first. PostgreSQL: a local durable cluster on loopback. "
        f"{os.cpu_count()} cores shared by the servers, PostgreSQL and wrk (load average at the end: {os.getloadavg()[0]:.1f}): "
        "on 2 cores a second serving process competes with PostgreSQL and wrk for the same CPU, so read the ratios as what this "
        "machine allows, not as what 2 processes give on a machine with cores to spare."
    )
    print(body)
    record("serving by deployment", COMMAND + f" --seconds {args.seconds:g}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
