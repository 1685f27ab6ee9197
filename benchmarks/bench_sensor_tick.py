"""Sensor tick cost with 10k vs 10M events in the event log: it must stay flat (≤ 100 ms).

A real state folder: Adult events, a champion trained and evaluated through the Dagster assets, a drift
report; then the log grows to 10M events with one bulk INSERT ... SELECT. Each tick is a real evaluation
of the code location's sensor against the instance (`build_sensor_context` + `evaluate_tick`).

    .venv/bin/python benchmarks/bench_sensor_tick.py
"""

import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("MLPLATFORM_TUNING_TRIALS", "1")
os.environ.setdefault("MLPLATFORM_NUM_BOOST_ROUND", "100")

import dagster as dg  # noqa: E402

from benchmarks.results import markdown_table, record  # noqa: E402
from mlplatform.orchestration.definitions import defs  # noqa: E402
from mlplatform.orchestration.instance import prepare_dagster_home  # noqa: E402
from mlplatform.orchestration.resources import PlatformResource  # noqa: E402
from mlplatform.orchestration.sensors import DRIFT_SENSOR_NAME, SENSOR_NAME  # noqa: E402
from mlplatform.pipeline.replay import read_source, write_batches  # noqa: E402
from mlplatform.settings import Settings  # noqa: E402
from mlplatform.domain.spec import load_spec  # noqa: E402

SIZES = [10_000, 10_000_000]
TICKS = 30
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def materialize(instance: dg.DagsterInstance, *keys: str) -> None:
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey(k) for k in keys})
    job.execute_in_process(instance=instance, run_config=QUIET)


def grow(log_path: Path, to_total: int) -> None:
    """Labelled events appended in SQL up to `to_total`, keeping the log's counters and indexes as ingestion would."""
    db = sqlite3.connect(log_path)
    db.execute("PRAGMA synchronous=OFF")
    total, seq = (int(db.execute("SELECT value FROM meta WHERE key = ?", (k,)).fetchone()[0]) for k in ("events", "label_seq"))
    start_time = int(db.execute("SELECT max(event_time) FROM events").fetchone()[0]) + 1
    n = to_total - total
    db.execute(
        f"""INSERT INTO events (event_id, event_time, ingested_at, source, label, label_seq, label_time, f_age, "f_hours-per-week", f_sex)
            WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < {n})
            SELECT printf('bulk-%012d', {total} + x), {start_time} + x * 1000000, 0, 'bench', CASE WHEN x % 4 = 0 THEN '>50K' ELSE '<=50K' END,
                   {seq} + x, 0, 20 + x % 50, 40, CASE WHEN x % 2 = 0 THEN 'Male' ELSE 'Female' END FROM k"""
    )
    db.execute("UPDATE meta SET value = value + ? WHERE key IN ('events', 'labelled', 'label_seq')", (n,))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as SQLite's automatic checkpoints would have done along the way
    db.close()


def tick_ms(instance: dg.DagsterInstance, name: str, cursor: str | None) -> list[float]:
    sensor = defs.resolve_sensor_def(name)
    times = []
    for _ in range(TICKS):
        started = time.perf_counter()
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, sensor_name=name, resources={"platform": PlatformResource()})
        sensor.evaluate_tick(context)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLPLATFORM_STATE_DIR"] = str(Path(tmp) / "state")
        settings = Settings()
        prepare_dagster_home(settings)
        spec = load_spec(settings.dataset_spec)
        write_batches(read_source(spec).iloc[:3000], spec, settings.landing_dir, 3000)
        with dg.DagsterInstance.get() as instance:
            materialize(instance, "raw_events", "features", "trained_model", "evaluation_report")
            log_path = PlatformResource().get_event_log().path
            for size in SIZES:
                started = time.perf_counter()
                grow(log_path, size)
                grown_s = time.perf_counter() - started
                if size == SIZES[0]:
                    materialize(instance, "drift_report")  # the retraining tick reads its latest verdict
                retrain = tick_ms(instance, SENSOR_NAME, None)  # no cursor: the tick also rebuilds it from run tags
                drift = tick_ms(instance, DRIFT_SENSOR_NAME, str(size))
                rows_out.append({
                    "events in log": f"{size:,}",
                    "retraining_sensor median ms": f"{statistics.median(retrain):.1f}",
                    "retraining_sensor max ms": f"{max(retrain):.1f}",
                    "drift_report_sensor median ms": f"{statistics.median(drift):.1f}",
                    "drift_report_sensor max ms": f"{max(drift):.1f}",
                    "log built in s": f"{grown_s:.0f}",
                })
                print(markdown_table(rows_out), flush=True)
    small, large = rows_out[0], rows_out[-1]
    ratio = float(large["retraining_sensor median ms"]) / float(small["retraining_sensor median ms"])
    body = (
        markdown_table(rows_out)
        + f"\n\n- retraining_sensor median at 10M / at 10k: {ratio:.2f}× (flat means ≈ 1×); budget ≤ 100 ms per tick."
        + f"\n- {TICKS} ticks per size, each a fresh `build_sensor_context` + `evaluate_tick` against the real SQLite Dagster instance, "
        "with a trained champion and a drift report present. The tick reads the event log's counters table and the latest "
        "materialization metadata: no row of the event log."
    )
    print(body)
    record("sensor_tick", ".venv/bin/python benchmarks/bench_sensor_tick.py", body)


if __name__ == "__main__":
    main()
