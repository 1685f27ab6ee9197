"""The event log on SQLite vs PostgreSQL, side by side in one run: ingestion rows/s and the sensor's reads.

Ingestion: the same Parquet landing file (Adult replicated with fresh ids to `--rows`) through `ingest_file`
into a fresh SQLite event log and a fresh PostgreSQL one, alternately; and the store alone (`append` of the
already validated rows) to separate the event log from reading and validating the file. Goal: PostgreSQL
(COPY) >= 3x the SQLite path. Sensor: `counts()` and `labelled_since()` with 10k and 1M events in the log,
which must stay flat; a COUNT(*) over the same log is shown for contrast.

PostgreSQL runs as a throwaway local cluster (mlplatform_tests/support/postgres.py) on 127.0.0.1 with its
default, durable settings (fsync and synchronous_commit on), sharing the machine's cores with this script.

    .venv/bin/python benchmarks/bench_eventlog_backends.py [--rows 244210] [--repeat 3]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ingest import landing_frame, write  # noqa: E402
from results import markdown_table, record  # noqa: E402

import pandas as pd  # noqa: E402

from mlplatform.domain.spec import DatasetSpec, load_spec  # noqa: E402
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, validate_frame  # noqa: E402
from mlplatform.pipeline.landing import ingest_file  # noqa: E402
from mlplatform.settings import DEFAULT_SPEC  # noqa: E402
from mlplatform.stores.eventlog import EventLog, EventStore  # noqa: E402
from mlplatform.stores.eventlog_postgres import PostgresEventLog  # noqa: E402
from mlplatform_tests.support.postgres import PostgresCluster, missing_reason  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_eventlog_backends.py"
GOAL = 3.0
SIZES = [10_000, 1_000_000]
READS = 200


def opener(cluster: PostgresCluster, folder: Path, spec: DatasetSpec) -> dict[str, Callable[[], EventStore]]:
    """A fresh, empty event log of each backend per call."""
    runs = iter(range(1_000_000))
    return {
        "SQLite": lambda: EventLog(folder / f"events-{next(runs)}.sqlite", spec),
        "PostgreSQL": lambda: PostgresEventLog(cluster.create_database(), spec),
    }


def time_ingest(source: Path, spec: DatasetSpec, open_log: Callable[[], EventStore], work: Path) -> float:
    shutil.rmtree(work, ignore_errors=True)
    (work / "landing").mkdir(parents=True)
    path = work / "landing" / source.name
    shutil.copy(source, path)
    log = open_log()
    started = time.perf_counter()
    outcome = ingest_file(path, spec, log)
    seconds = time.perf_counter() - started
    log.close()
    if outcome.rejected or outcome.quarantined or not outcome.ingested:
        raise RuntimeError(f"benchmark file did not ingest cleanly: {outcome}")
    return seconds


def time_append(events: pd.DataFrame, open_log: Callable[[], EventStore], server_cpu: Callable[[], float]) -> tuple[float, float]:
    """Wall seconds of one append into a fresh log, and the CPU seconds it cost this process plus the database server."""
    log = open_log()
    cpu, server, started = time.process_time(), server_cpu(), time.perf_counter()
    log.append(events, "bench")
    seconds = time.perf_counter() - started
    used = time.process_time() - cpu + server_cpu() - server
    log.close()
    return seconds, used


def median_us(calls: list[Callable[[], object]]) -> list[float]:
    """Median µs of each call, the calls taking turns so that every one of them sees the same load."""
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(READS):
        for call, times in zip(calls, samples):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
    return [statistics.median(times) * 1e6 for times in samples]


def once_ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1e3


def grow(log: EventStore, events: pd.DataFrame, to_total: int) -> None:
    """Append copies of `events` with fresh ids and later times until the log holds `to_total` events."""
    while (total := log.counts().total) < to_total:
        chunk = events.head(to_total - total).copy()
        chunk[EVENT_ID] = [f"g{total + i}" for i in range(len(chunk))]
        chunk[EVENT_TIME] = chunk[EVENT_TIME] + total * 1_000_000
        log.append(chunk, "bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=244_210)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 0
    spec = load_spec(DEFAULT_SPEC)
    frame = landing_frame(spec, args.rows)
    events = validate_frame(frame, spec, generated_id_prefix="bench", generated_time_start_us=0).events
    cluster = PostgresCluster(durable=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            source = write(frame, folder, "parquet")
            backends = opener(cluster, folder, spec)
            ingest: dict[str, list[float]] = {name: [] for name in backends}
            append: dict[str, list[float]] = {name: [] for name in backends}
            cpu: dict[str, list[float]] = {name: [] for name in backends}
            server_cpu = {"SQLite": lambda: 0.0, "PostgreSQL": cluster.cpu_seconds}
            for _ in range(args.repeat):  # alternate, so both backends see the same load on a shared machine
                for name, open_log in backends.items():
                    ingest[name].append(time_ingest(source, spec, open_log, folder / "work"))
                    seconds, used = time_append(events, open_log, server_cpu[name])
                    append[name].append(seconds)
                    cpu[name].append(used)
            base_ingest, base_append = statistics.median(ingest["SQLite"]), statistics.median(append["SQLite"])
            rows = []
            for name in backends:
                i, a = statistics.median(ingest[name]), statistics.median(append[name])
                rows.append({"event log": name, "rows": args.rows, "ingest_file median s": f"{i:.2f}", "ingest_file rows/s": f"{args.rows / i:,.0f}",
                             "vs SQLite": f"{base_ingest / i:.2f}x", "append only median s": f"{a:.2f}", "append rows/s": f"{args.rows / a:,.0f}",
                             "append vs SQLite": f"{base_append / a:.2f}x", "append CPU s (client + server)": f"{statistics.median(cpu[name]):.2f}"})
            sensor = []
            for name, open_log in backends.items():
                logs = [open_log() for _ in SIZES]
                for log, size in zip(logs, SIZES):
                    grow(log, events, size)
                counts = median_us([log.counts for log in logs])
                halfway = [log.counts().label_watermark // 2 for log in logs]
                since = median_us([lambda log=log, seq=seq: log.labelled_since(seq) for log, seq in zip(logs, halfway)])
                for log, size, c, l in zip(logs, SIZES, counts, since):
                    sensor.append({"event log": name, "events": f"{size:,}", "counts() median µs": f"{c:.0f}", "labelled_since() median µs": f"{l:.0f}",
                                   "COUNT(*) for contrast, ms": f"{once_ms(lambda: log.count_between(-(2**62), 2**62)):.0f}"})
                    log.close()
    finally:
        cluster.stop()
    pg = statistics.median(ingest["PostgreSQL"])
    verdict = "met" if base_ingest / pg >= GOAL else "missed"
    body = (
        markdown_table(rows)
        + f"\n\nGoal (PostgreSQL ingestion >= {GOAL:.0f}x the SQLite path): **{verdict}** end to end ({base_ingest / pg:.2f}x), "
        f"{base_append / statistics.median(append['PostgreSQL']):.2f}x for the store alone. Median of {args.repeat} runs each, the two backends "
        "alternating, each run into a fresh log; same Parquet file. PostgreSQL gets the rows by COPY in binary format; its server process "
        "shares the 2 cores with this script (and whatever else runs). The CPU column is the work one append costs, wherever it runs "
        "(this process, plus every PostgreSQL process): the server's share is the heap, the WAL and four btree indexes (seq, event_id, "
        "(event_time, seq), label_seq), which SQLite maintains too.\n\n"
        + markdown_table(sensor)
        + f"\n\nSensor reads: median of {READS} calls on an open log of each size, grown by `append`; the sizes take turns call by call, "
        "so both see the same load. The "
        "counters are rows updated in each writing transaction, so the reads stay flat while a COUNT(*) grows with the log."
    )
    print(body)
    record("eventlog_backends", COMMAND + f" --rows {args.rows} --repeat {args.repeat}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
