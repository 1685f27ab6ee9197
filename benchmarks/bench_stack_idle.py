"""What the `mlplatform dev` stack costs while nobody uses it: CPU seconds per minute, processes and memory.

Two ways of running the same servers, side by side in one run, each on a fresh state folder, interleaved round by
round so that a change in the machine's load hits them alike:

- **shared code server** (what `dev` starts): one `dagster code-server start` for the code location, the daemon and
  the webserver loading it through the workspace of its address;
- **each loads workspace.yaml** (what `dev` started before): the daemon and the webserver given `workspace.yaml`, so
  each starts a code server of its own, and the daemon a new one every 60 s (Dagster's workspace refresh).

Every stack also has the MLflow UI, the reports route and the Evidently UI; its sensors tick every 5 s and the
live-quality schedule launches a run every 5 minutes, on an empty state (no champion: the sensors skip). After a
stack answers and a settling pause, the CPU time of all its processes (those whose environment names its state folder;
an ended process counts through the parent that reaped it) is read at the start and the end of the window.

    .venv/bin/python benchmarks/bench_stack_idle.py [--seconds 240] [--rounds 1]
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import markdown_table, record  # noqa: E402

from mlplatform.cli.dev import SERVICES, WORKSPACE, Server, build_servers, running  # noqa: E402
from mlplatform.ports import free_port  # noqa: E402
from mlplatform.settings import Settings  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_stack_idle.py"
SETTLE_SECONDS = 30.0
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SHARED, EACH = "shared code server (`dev`)", "each loads workspace.yaml (before)"


def _each_loads_workspace(servers: list[Server]) -> list[Server]:
    """The same servers with the daemon and the webserver given workspace.yaml, and no shared code server."""
    out = []
    for server in servers:
        if server.reloader is not None:
            continue
        if "-w" in server.command:
            at = server.command.index("-w") + 1
            server = replace(server, command=[*server.command[:at], str(WORKSPACE), *server.command[at + 1:]], tier=SERVICES)
        out.append(server)
    return out


def _stack(marker: bytes) -> dict[int, tuple[float, int, bool]]:
    """Per process of the stack: CPU seconds (its own and its reaped children's), resident bytes, whether it holds the
    code location (`dagster api grpc`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker not in (entry / "environ").read_bytes():
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                resident = int((entry / "statm").read_text().split()[1]) * PAGE
                grpc = b"api\0grpc" in (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            found[int(entry.name)] = (sum(int(x) for x in fields[11:15]) / TICK, resident, grpc)
    return found


def measure(shape: Callable[[list[Server]], list[Server]], seconds: float, work: Path) -> dict[str, float]:
    settings = Settings(state_dir=work / "state", dagster_ui_url=f"http://127.0.0.1:{free_port()}", mlflow_ui_url=f"http://127.0.0.1:{free_port()}",
                        reports_url=f"http://127.0.0.1:{free_port()}", evidently_ui_url=f"http://127.0.0.1:{free_port()}")
    marker = f"MLPLATFORM_STATE_DIR={settings.state_dir}\0".encode()
    started = time.monotonic()
    with running(settings, log_dir=work / "logs", servers=shape(build_servers(settings))):
        ready = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        before, t0 = _stack(marker), time.monotonic()
        time.sleep(seconds)
        after, t1 = _stack(marker), time.monotonic()
    cpu = sum(v[0] for v in after.values()) - sum(v[0] for pid, v in before.items() if pid in after)
    return {"ready s": ready, "CPU s/min": 60 * cpu / (t1 - t0), "processes": len(after), "code location processes": sum(v[2] for v in after.values()),
            "RSS MB": sum(v[1] for v in after.values()) / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240.0, help="the measured idle window of each stack")
    parser.add_argument("--rounds", type=int, default=1, help="stacks of each kind, interleaved")
    parser.add_argument("--no-record", action="store_true", help="print the table only")
    args = parser.parse_args()
    shapes = {SHARED: lambda servers: servers, EACH: _each_loads_workspace}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in shapes}
    for _ in range(args.rounds):
        for name, shape in shapes.items():
            with tempfile.TemporaryDirectory(prefix="bench-stack-") as work:
                runs[name].append(measure(shape, args.seconds, Path(work)))
                print(name, {k: round(v, 2) for k, v in runs[name][-1].items()}, flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for name, rows in runs.items()}
    base = medians[EACH]["CPU s/min"]
    table = markdown_table([{"stack": name, "ready s": f"{m['ready s']:.1f}", "idle CPU s/min": f"{m['CPU s/min']:.2f}",
                             "CPU vs before": f"{m['CPU s/min'] / base:.2f}x", "processes": f"{m['processes']:.0f}",
                             "processes holding the code location": f"{m['code location processes']:.0f}", "RSS MB": f"{m['RSS MB']:.0f}"}
                            for name, m in medians.items()])
    load = os.getloadavg()
    notes = (f"\n\n- Median of {args.rounds} stack(s) of each kind, interleaved; a {args.seconds:.0f} s window after {SETTLE_SECONDS:.0f} s of settling. "
             f"Load average at the end: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on shared cores: read the ratio.\n"
             "- 'processes holding the code location': `dagster api grpc` processes alive at the window's end. With workspace.yaml, the "
             "daemon replaces its own every 60 s and the old one lives 20 s more (its heartbeat timeout), so 2 or 3 are alive at a time.")
    print(table + notes)
    if not args.no_record:
        record("stack_idle", f"{COMMAND} --seconds {args.seconds:.0f} --rounds {args.rounds}", table + notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
