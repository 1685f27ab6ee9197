"""Ingestion into the event log from one landing file (Parquet, CSV, JSON Lines), end to end: whole-file, streamed, now.

`ingest_file` = read + hash + parse + validate every row + append to the SQLite event log + move the file. Every
run is a fresh process (so its peak RSS is its own: VmHWM) ingesting a fresh copy into a fresh log:
'before' runs the code of BEFORE_COMMIT (the whole file read, parsed and validated at once), 'streaming' that of
STREAMING_COMMIT (batches committed with the file's progress, before the speed-ups of issue 17), 'after' this
checkout's. Adult is replicated with fresh ids until the file has
`--rows` rows. Then one large CSV (`--big-mb`, generated under the temp folder and deleted after) is ingested by
the current code alone, for its peak RSS: the old path would hold the whole file several times over.

    .venv/bin/python benchmarks/bench_ingest.py [--rows 244210] [--repeat 3] [--big-mb 200]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import markdown_table, record  # noqa: E402

import pandas as pd  # noqa: E402

from mlplatform.pipeline.replay import read_source  # noqa: E402
from mlplatform.settings import DEFAULT_SPEC  # noqa: E402
from mlplatform.domain.spec import DatasetSpec, load_spec  # noqa: E402
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_ingest.py"
SPEEDUP_GOAL = 5.0
RSS_GOAL_MB = 500
BEFORE_COMMIT = "d98ff79"  # the last commit reading, parsing and validating a landing file whole
STREAMING_COMMIT = "4162bd5"  # batches committed with the file's progress, before the speed-ups of issue 17
REPO = Path(__file__).resolve().parent.parent
# Runs in the code folder given by PYTHONPATH; prints seconds, CPU seconds (robust to other processes' load), rows ingested,
# rows quarantined, rejection, peak RSS in kB
# (VmHWM: this process's own high-water mark; a forked child's ru_maxrss would start from its parent's).
RUN_SCRIPT = """
import shutil, sys, time
from dataclasses import replace
from pathlib import Path
from mlplatform.domain.spec import load_spec
from mlplatform.pipeline.landing import LandingPolicy, ingest_file
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventLog
source, work = Path(sys.argv[1]), Path(sys.argv[2])
spec = load_spec(sys.argv[3])
shutil.rmtree(work, ignore_errors=True)
(work / "landing").mkdir(parents=True)
path = work / "landing" / source.name
shutil.copy(source, path)
log = EventLog(work / "events.sqlite", spec)
policy = replace(LandingPolicy.from_settings(Settings()), quiet_seconds=0.0)
started, cpu = time.perf_counter(), time.process_time()
outcome = ingest_file(path, spec, log, policy)
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(seconds, cpu, outcome.ingested, outcome.quarantined, outcome.rejected, peak)
"""


def landing_frame(spec: DatasetSpec, rows: int) -> pd.DataFrame:
    source = read_source(spec)[[EVENT_ID, EVENT_TIME, *spec.features, spec.label]]
    frame = pd.concat([source] * (rows // len(source) + 1), ignore_index=True).head(rows)
    frame[EVENT_ID] = [f"e{i}" for i in range(rows)]
    return frame


def write(frame: pd.DataFrame, folder: Path, fmt: str) -> Path:
    path = folder / f"batch.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def write_big_csv(frame: pd.DataFrame, path: Path, megabytes: int) -> int:
    """A CSV of at least `megabytes` MB: `frame`'s rows over and over, each with a fresh event id; returns its rows."""
    body = frame.drop(columns=[EVENT_ID]).to_csv(index=False, header=False).splitlines()
    header = ",".join([EVENT_ID, *frame.columns.drop(EVENT_ID)])
    rows = 0
    with path.open("w", encoding="utf-8") as out:
        out.write(header + "\n")
        while out.tell() < megabytes * 1_000_000:
            out.write("".join(f"b{rows + i},{line}\n" for i, line in enumerate(body)))
            rows += len(body)
    return rows


def code_of(commit: str, work: Path) -> Path:
    """The `mlplatform` package of `commit`, unpacked under `work`."""
    code = work / f"code-{commit}"
    code.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "mlplatform"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    return code


def run(code: Path, source: Path, work: Path) -> tuple[float, float, int, float]:
    """Seconds, CPU seconds, rows ingested and peak RSS (MB) of one ingestion in a fresh process running the code in `code`."""
    env = {"PYTHONPATH": str(code), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(source), str(work), str(DEFAULT_SPEC)], env=env, cwd=code,
                          capture_output=True, text=True, check=True)
    seconds, cpu, ingested, quarantined, rejected, peak_kb = done.stdout.split()
    if rejected != "None" or quarantined != "0":
        raise RuntimeError(f"benchmark file did not ingest cleanly: {done.stdout}")
    shutil.rmtree(work, ignore_errors=True)
    return float(seconds), float(cpu), int(ingested), int(peak_kb) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=244_210)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=200, help="size of the large CSV (2000 for the recorded 2 GB case)")
    args = parser.parse_args()
    spec = load_spec(DEFAULT_SPEC)
    frame = landing_frame(spec, args.rows)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        codes = {"before": code_of(BEFORE_COMMIT, folder), "streaming": code_of(STREAMING_COMMIT, folder), "after": REPO}
        for fmt in ("parquet", "csv", "jsonl"):
            source = write(frame, folder, fmt)
            runs: dict[str, list[tuple[float, float, int, float]]] = {version: [] for version in codes}
            for _ in range(args.repeat):  # interleaved, so both see the same load
                for version, code in codes.items():
                    runs[version].append(run(code, source, folder / "work"))
            seconds = {v: statistics.median(s for s, _, _, _ in r) for v, r in runs.items()}
            cpu = {v: statistics.median(c for _, c, _, _ in r) for v, r in runs.items()}
            rss = {v: max(m for _, _, _, m in r) for v, r in runs.items()}
            for version in codes:
                table.append({"landing file": f"{fmt}, {version}", "rows": args.rows, "MB": f"{source.stat().st_size / 1e6:.1f}",
                              "median s": f"{seconds[version]:.2f}", "rows/s": f"{args.rows / seconds[version]:,.0f}",
                              "speed vs before": f"{seconds['before'] / seconds[version]:.2f}x", "median CPU s": f"{cpu[version]:.2f}",
                              "CPU vs before": f"{cpu['before'] / cpu[version]:.2f}x", "peak RSS MB": f"{rss[version]:.0f}"})
            source.unlink()
        big = folder / "big.csv"
        started = time.perf_counter()
        big_rows = write_big_csv(frame, big, args.big_mb)
        generated_s = time.perf_counter() - started
        big_mb = big.stat().st_size / 1e6
        seconds, big_cpu, ingested, rss_mb = run(REPO, big, folder / "work")
        big.unlink()
        if ingested != big_rows:
            raise RuntimeError(f"large CSV: {ingested} of {big_rows} rows ingested")
        table.append({"landing file": "large csv, after", "rows": big_rows, "MB": f"{big_mb:,.0f}", "median s": f"{seconds:.1f}",
                      "rows/s": f"{big_rows / seconds:,.0f}", "speed vs before": "", "median CPU s": f"{big_cpu:.1f}", "CPU vs before": "",
                      "peak RSS MB": f"{rss_mb:.0f}"})
    parquet = {r["landing file"]: r for r in table if r["landing file"].startswith("parquet")}
    speedup = float(parquet["parquet, after"]["speed vs before"].rstrip("x"))
    before_s = float(parquet["parquet, before"]["median s"])
    this_round = float(parquet["parquet, streaming"]["median s"]) / float(parquet["parquet, after"]["median s"])
    cpu_speedup = float(parquet["parquet, after"]["CPU vs before"].rstrip("x"))
    cpu_this_round = float(parquet["parquet, streaming"]["median CPU s"]) / float(parquet["parquet, after"]["median CPU s"])
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    body = (
        markdown_table(table)
        + f"\n\n- Goal 1, ingestion >= {SPEEDUP_GOAL:.0f}x the path of commit {BEFORE_COMMIT} (Parquet, 16 columns, validation on): "
        f"**{'met' if speedup >= SPEEDUP_GOAL else 'missed'}** ({speedup:.2f}x; in CPU time {cpu_speedup:.2f}x)."
        f"\n- Goal 2, a large CSV landed with peak RSS <= {RSS_GOAL_MB} MB: **{'met' if rss_mb <= RSS_GOAL_MB else 'missed'}** "
        f"({big_mb:,.0f} MB, {big_rows:,} rows, peak RSS {rss_mb:.0f} MB; the file took {generated_s:.0f} s to generate)."
        f"\n- This round (issue 17, item 3): 'after' is {this_round:.2f}x the speed of 'streaming' (commit {STREAMING_COMMIT}) on Parquet; in CPU time {cpu_this_round:.2f}x."
        f"\n- Median of {args.repeat} runs, the three versions interleaved; each run a fresh process (peak RSS: its VmHWM, the "
        "interpreter and imports included) ingesting a fresh copy into a fresh SQLite event log. Load average at the end: "
        f"{load} on {os.cpu_count()} shared cores, so seconds are noisy: read the ratios, and the CPU ones above all (CPU time of the "
        "ingesting process, its threads included, which other processes' load barely moves)."
        "\n- Where the time goes now (cProfile of the 'after' path, 244,210-row Parquet file, one process, 2026-12-03, load "
        "average about 4): SQLite `executemany` of the rows about 46%, validation about 22% (column operations on Arrow "
        "strings and numpy already), column conversion for sqlite3 about 9%, commits and WAL checkpoints about 7%, "
        "Parquet read about 5%, the look-up of already known ids about 4% (was 9%: now one join of the ids bound as one "
        "JSON array, not a temp table filled row by row), garbage collection about 4% (a full pass only when peak RSS "
        "grew, not after every batch)."
        "\n- Why 5x is out of reach while every event is one indexed SQLite row: SQLite alone needs, for 244,210 such "
        "rows in 65,536-row transactions (CPU seconds on this machine, no pandas, no validation), 1.2-1.5 s for "
        "today's row (20 values) with its event_id, (event_time, seq) and label_seq indexes, 0.8 s for a row of 4 values "
        f"with the same indexes, 0.4 s for the event_id and its index alone; 5x means {before_s / SPEEDUP_GOAL:.2f} s for the whole path here. "
        "Only a layout that stops inserting an indexed row per event (batches appended as columnar segments, the "
        "id index kept apart) could reach it, and it changes every read path of both stores: not attempted."
    )
    print(body)
    record("ingest", COMMAND + f" --rows {args.rows} --repeat {args.repeat} --big-mb {args.big_mb}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
