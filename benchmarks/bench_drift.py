"""Drift at scale: the platform's sampled drift (mlplatform.pipeline.drift) vs full-data Evidently, read from the event log.

Synthetic events go into a temporary event log with one bulk SQL insert per side (reference = the first
rows, current = the later ones); each column drifts by a known amount, from none to far past Evidently's
threshold, with several columns close to it. Every measurement runs in its own process so peak RSS is its own.

    .venv/bin/python benchmarks/bench_drift.py            # 1M x 20 both ways, 5M x 50 sampled only
    .venv/bin/python benchmarks/bench_drift.py --quick    # 200k x 20 and 500k x 50: a smoke run
"""

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.results import markdown_table, record  # noqa: E402
from mlplatform.pipeline.drift import compare  # noqa: E402
from mlplatform.stores.eventlog import Arrival, EventLog  # noqa: E402
from mlplatform.domain.spec import DatasetSpec, parse_spec  # noqa: E402

SAMPLE_ROWS = 100_000  # the platform's default drift_sample_rows
GOAL_SECONDS, GOAL_RSS_MB = 60.0, 1024.0  # issue 17: 5M x 50 per side
POOL_ROWS = 250_000  # distinct random rows generated per side; larger windows cycle through them
CATEGORIES = ["a", "b", "c", "d", "e", "f"]
US = 1_000_000
# Drift per column cycles through these: mean shifts in reference standard deviations (Wasserstein, threshold 0.1)
# and, for categorical columns, mass moved from the first category to the last (Jensen-Shannon, threshold 0.1).
NUMERIC_SHIFTS = [0.0, 0.03, 0.06, 0.08, 0.12, 0.15, 0.25, 0.5]
# Share of rows whose category is replaced by the last one: Jensen-Shannon distance 0, .038, .086, .137, .197, .311.
CATEGORY_MIX = [0.0, 0.05, 0.12, 0.2, 0.3, 0.5]
INDEXES = {"events_time": "CREATE INDEX events_time ON events(event_time, seq)",
           "events_label_seq": "CREATE UNIQUE INDEX events_label_seq ON events(label_seq) WHERE label_seq IS NOT NULL"}


def synthetic_spec(columns: int) -> DatasetSpec:
    numeric = columns * 7 // 10
    features = {f"n{i}": "numeric" for i in range(numeric)} | {f"c{i}": "categorical" for i in range(columns - numeric)}
    return parse_spec({"name": f"synthetic{columns}", "task": "binary", "label": "y", "positive_class": "1", "classes": ["0", "1"], "features": features})


def fill(log_path: Path, spec: DatasetSpec, rows: int, drifted: bool, first: int, pool: int) -> None:
    """Generated inside SQLite, no Python per row: `pool` random rows (one INSERT ... SELECT over a recursive
    counter), then `rows` events cycling through them with their own ids and times."""
    numeric, categorical = spec.numeric_features, spec.categorical_features
    exprs = []
    for i, name in enumerate(numeric):
        shift = NUMERIC_SHIFTS[i % len(NUMERIC_SHIFTS)] if drifted else 0.0
        exprs.append(f"{shift} + 0.5513288954217921 * ln(1.0 / ((abs(random()) % 1000000 + 0.5) / 1000000.0) - 1) AS \"{name}\"")
    for i, name in enumerate(categorical):
        mix = CATEGORY_MIX[i % len(CATEGORY_MIX)] if drifted else 0.0
        exprs.append(f"CASE WHEN abs(random()) % 1000000 < {int(mix * 1_000_000)} THEN 'f' ELSE char(97 + abs(random()) % 6) END AS \"{name}\"")
    label = f"CASE WHEN abs(random()) % 100 < {35 if drifted else 25} THEN '1' ELSE '0' END AS y"
    columns = [*numeric, *categorical]
    db = sqlite3.connect(log_path)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("DROP TABLE IF EXISTS temp.pool")
    db.execute(f"""CREATE TEMP TABLE pool AS WITH RECURSIVE k(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM k WHERE x < {pool - 1})
                   SELECT {label}, {', '.join(exprs)} FROM k""")
    db.execute(f"""INSERT INTO events (event_id, event_time, ingested_at, source, label, label_seq, label_time, {', '.join(f'"f_{c}"' for c in columns)})
        WITH RECURSIVE k(x) AS (SELECT {first} UNION ALL SELECT x + 1 FROM k WHERE x < {first + rows - 1})
        SELECT printf('e%012d', x), x * {US}, 0, 'bench', p.y, x + 1, 0, {', '.join(f'p."{c}"' for c in columns)}
        FROM k JOIN pool p ON p.rowid = (x % {pool}) + 1""")
    db.execute("UPDATE meta SET value = value + ? WHERE key IN ('events', 'labelled', 'label_seq')", (rows,))
    db.commit()
    db.close()


def build_log(folder: Path, rows: int, columns: int, pool: int) -> Path:
    spec = synthetic_spec(columns)
    log = EventLog(folder / f"{spec.name}.sqlite", spec)
    log.close()
    with sqlite3.connect(log.path) as db:  # bulk load: the event log's own indexes are rebuilt once at the end
        for name in INDEXES:
            db.execute(f"DROP INDEX {name}")
    fill(log.path, spec, rows, drifted=False, first=0, pool=pool)
    fill(log.path, spec, rows, drifted=True, first=rows, pool=pool)
    with sqlite3.connect(log.path) as db:
        for sql in INDEXES.values():
            db.execute(sql)
    return log.path


def worker(log_path: Path, rows: int, columns: int, method: str) -> dict[str, object]:
    """One measurement: read both sides from the event log, run Evidently, return verdicts, time and peak RSS."""
    spec = synthetic_spec(columns)
    log = EventLog(log_path, spec)
    started = time.perf_counter()
    if method == "sampled":
        reference = log.sample_between(0, rows * US, SAMPLE_ROWS, max_label_seq=rows)
        # as the drift_report reads it: timed after the reference, or arrived after its last event (seq `rows`)
        current = log.sample_between(rows * US, 2 * rows * US, SAMPLE_ROWS, arrived_after=Arrival(rows, 0))
    else:
        reference = log.events_between(0, rows * US)
        current = log.events_between(rows * US, 2 * rows * US)
    read = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        columns_drift, _, target, _ = compare(spec, reference, current, 0.5, Path(tmp) / "report.json.xz")
    return {
        "verdicts": {c.column: c.drifted for c in columns_drift},
        "scores": {c.column: c.score for c in columns_drift},
        "target_drift": None if target is None else target.drifted,
        "read_s": read,
        "total_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows_per_side": len(reference),
    }


def measure(log_path: Path, rows: int, columns: int, method: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(log_path), str(rows), str(columns), method],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=4, metavar=("LOG", "ROWS", "COLUMNS", "METHOD"))
    args = parser.parse_args()
    if args.worker:
        path, rows, columns, method = args.worker
        print(json.dumps(worker(Path(path), int(rows), int(columns), method)))
        return
    small, large = ((200_000, 20), (500_000, 50)) if args.quick else ((1_000_000, 20), (5_000_000, 50))
    table, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rows, columns, methods in ((*small, ("sampled", "full")), (*large, ("sampled",))):
            started = time.perf_counter()
            log_path = build_log(Path(tmp) / f"{rows}x{columns}", rows, columns, min(rows, POOL_ROWS))
            build_s = time.perf_counter() - started
            results = {m: measure(log_path, rows, columns, m) for m in methods}
            sampled = results["sampled"]
            agree = None
            if "full" in results:
                full = results["full"]
                same = [c for c in full["verdicts"] if full["verdicts"][c] == sampled["verdicts"][c]]
                agree = len(same) / len(full["verdicts"])
                differing = [f"{c} (full {full['scores'][c]:.3f}, sampled {sampled['scores'][c]:.3f})" for c in full["verdicts"] if c not in same]
                notes.append(f"{rows:,} × {columns}: verdicts differ on {', '.join(differing) or 'no column'}; "
                             f"drifted columns full {sum(full['verdicts'].values())}, sampled {sum(sampled['verdicts'].values())}")
            for method, r in results.items():
                table.append({
                    "rows per side × columns": f"{rows:,} × {columns}",
                    "method": "platform (sampled 100k/side)" if method == "sampled" else "full Evidently",
                    "rows read per side": f"{r['rows_per_side']:,}",
                    "read s": f"{r['read_s']:.1f}",
                    "total s": f"{r['total_s']:.1f}",
                    "peak RSS MB": f"{r['peak_rss_mb']:.0f}",
                    "agreement with full": "" if agree is None or method == "full" else f"{agree:.0%}",
                })
            if "full" in results:
                f, s = results["full"], results["sampled"]
                table.append({"rows per side × columns": f"{rows:,} × {columns}", "method": "ratio full / platform", "rows read per side": "",
                              "read s": f"{f['read_s'] / s['read_s']:.1f}×", "total s": f"{f['total_s'] / s['total_s']:.1f}×",
                              "peak RSS MB": f"{f['peak_rss_mb'] / s['peak_rss_mb']:.1f}×", "agreement with full": ""})
            if (rows, columns) == large and not args.quick:
                met = sampled["total_s"] <= GOAL_SECONDS and sampled["peak_rss_mb"] <= GOAL_RSS_MB
                notes.append(f"{rows:,} × {columns}: goal ≤ {GOAL_SECONDS:.0f} s and ≤ {GOAL_RSS_MB:.0f} MB peak RSS — "
                             f"{'met' if met else 'missed'} ({sampled['total_s']:.1f} s, {sampled['peak_rss_mb']:.0f} MB)")
            notes.append(f"{rows:,} × {columns}: event log built in {build_s:.0f}s ({2 * rows:,} events cycling through {min(rows, POOL_ROWS):,} random rows per side, generated in SQL)")
            print(markdown_table(table[-len(results) - ("full" in results):]), flush=True)
    body = markdown_table(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + (
        "\n- Goal: agreement 100 % with full Evidently at 1M × 20 (verdicts as full Evidently)."
        f"\n- Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; every measurement "
        "is a fresh process, so its time includes importing Evidently."
        "\n- The platform reads both sides with `EventLog.sample_between` (ORDER BY random() on the time index, then only the chosen rows; the current side as the drift_report reads it, "
        "the events timed after the reference or arrived after its last event, two index ranges OR'd) "
        "and runs the same `mlplatform.pipeline.drift.compare` (Evidently DataDriftPreset + target ValueDrift) as the drift_report asset; "
        "the reference side is computed once per champion and cached, and prediction drift adds one champion prediction per sampled row."
    )
    print(body)
    if not args.quick:
        record("drift", ".venv/bin/python benchmarks/bench_drift.py", body)


if __name__ == "__main__":
    main()
