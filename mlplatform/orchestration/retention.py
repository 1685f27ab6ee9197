"""Run history retention. Dagster keeps every run and its event log for ever; on the embedded instance each run is a
SQLite file of its own (about 140 kB, however small the run) and a folder of captured logs, and `live_quality` alone
starts 288 runs a day per model. A daily job deletes the finished runs older than `run_history_keep_days`, except the
runs a model's history rests on: retrainings, every run that trained or judged a version, the runs carrying a policy
trigger (the policy's record), the champion jobs' runs, and the run holding the latest materialization or observation of
each asset (what the sensors, the freshness policies and the UI read)."""

from collections.abc import Iterable
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from mlplatform.domain.keys import POLICY_TRIGGER_TAG, RETRAIN_TAG
from mlplatform.orchestration.names import EVALUATION_REPORT, SET_CHAMPION_JOB_SUFFIX, TRAINED_MODEL
from mlplatform.orchestration.resources import PlatformResource

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
BATCH = 500  # runs looked at per query: a first pass over a year of history goes in batches, never one huge read
SCHEDULE_NAME = "run_history_retention"
LINEAGE_ASSETS = (TRAINED_MODEL, EVALUATION_REPORT)  # every run that materialized one of a model's is kept


DELETE_BUDGET_SECONDS = 1200.0  # per pass: a first pass over a year of history (about 90 ms a run) goes on the next nights,
# oldest first, well within run monitoring's hour of max runtime


@dataclass(frozen=True)
class Pruned:
    deleted: int
    kept: int  # older than the cut-off, kept for what rests on them
    left: int = 0  # old enough, not deleted yet: the pass ran out of its budget

    def summary(self, keep_days: int) -> str:
        later = f"; {self.left} more are left for the next pass (DELETE_BUDGET_SECONDS)" if self.left else ""
        return (f"deleted {self.deleted} finished runs older than {keep_days} days; kept {self.kept} as old that a model's history rests on "
                f"(retrainings, policy triggers, champion jobs, the latest materialization or observation of an asset){later}")


def rests_on(run: dg.DagsterRun) -> bool:
    """A run a model's history rests on, whatever its age."""
    return RETRAIN_TAG in run.tags or POLICY_TRIGGER_TAG in run.tags or run.job_name.endswith(SET_CHAMPION_JOB_SUFFIX)


def kept_runs(instance: dg.DagsterInstance) -> set[str]:
    """The runs holding the latest materialization or observation of each asset, and every run that trained or judged a
    model version, whoever started it (the demo's first retraining carries no retraining tag; the champion timeline
    names its run)."""
    runs: set[str] = set()
    for key in instance.get_asset_keys():
        for records in (instance.fetch_materializations(key, limit=1).records, instance.fetch_observations(key, limit=1).records):
            runs.update(record.run_id for record in records)
        if key.path[-1] in LINEAGE_ASSETS:
            cursor = None
            while True:
                page = instance.fetch_materializations(key, limit=BATCH, cursor=cursor)
                runs.update(record.run_id for record in page.records)
                if not page.has_more:
                    break
                cursor = page.cursor
    return runs


def _delete(instance: dg.DagsterInstance, run_id: str) -> None:
    """The run, its events and its captured logs; on the embedded instance also its event log's own SQLite file, which
    Dagster empties but leaves."""
    instance.delete_run(run_id)
    instance.compute_log_manager.delete_logs(prefix=[run_id])
    storage = instance.event_log_storage
    if isinstance(storage, SqliteEventLogStorage):
        for suffix in ("", "-wal", "-shm"):
            Path(storage.path_for_shard(run_id) + suffix).unlink(missing_ok=True)


def _old_runs(instance: dg.DagsterInstance, before: datetime) -> Iterable[dg.DagsterRun]:
    """Finished runs last updated before `before`, newest first, read BATCH at a time."""
    cursor = None
    while True:
        records = instance.get_run_records(filters=dg.RunsFilter(statuses=FINISHED, updated_before=before), limit=BATCH, cursor=cursor)
        yield from (record.dagster_run for record in records)
        if len(records) < BATCH:
            return
        cursor = records[-1].dagster_run.run_id


def prune_run_history(instance: dg.DagsterInstance, keep_days: int, now: datetime | None = None, budget_seconds: float = DELETE_BUDGET_SECONDS) -> Pruned:
    """Delete the finished runs older than `keep_days` that no model's history rests on, oldest first, for at most
    `budget_seconds`."""
    before = (now or datetime.now(timezone.utc)) - timedelta(days=keep_days)
    protected = kept_runs(instance)
    doomed, kept = [], 0
    for run in _old_runs(instance, before):
        if rests_on(run) or run.run_id in protected:
            kept += 1
        else:
            doomed.append(run.run_id)
    deadline = time.monotonic() + budget_seconds
    deleted = 0
    for run_id in reversed(doomed):  # after the reading (deleting while paging would move the cursor's ground), oldest first
        if time.monotonic() > deadline:
            break
        _delete(instance, run_id)
        deleted += 1
    return Pruned(deleted, kept, len(doomed) - deleted)


@dg.op(name="prune_run_history", description="Deletes the finished runs older than run_history_keep_days that no model's history rests on.")
def prune_run_history_op(context: dg.OpExecutionContext, platform: PlatformResource) -> dg.Output[int]:
    keep_days = platform.step_platform().settings.run_history_keep_days
    pruned = prune_run_history(context.instance, keep_days)
    context.log.info(pruned.summary(keep_days))
    return dg.Output(pruned.deleted, metadata={"deleted": pruned.deleted, "kept": pruned.kept, "left": pruned.left, "keep_days": keep_days})


@dg.job(name=SCHEDULE_NAME, description="Deletes old finished runs, their events and captured logs (run_history_keep_days).")
def run_history_retention_job() -> None:
    prune_run_history_op()


run_history_schedule = dg.ScheduleDefinition(name=SCHEDULE_NAME, job=run_history_retention_job, cron_schedule="17 3 * * *",
                                             default_status=dg.DefaultScheduleStatus.RUNNING,
                                             description="Every night at 03:17: the run history older than run_history_keep_days, pruned.")
