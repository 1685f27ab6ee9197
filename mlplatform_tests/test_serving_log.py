"""The group-commit prediction log on a real event log: every handed-over row lands, a failed commit reaches its requests,
on the event loop while the write lock is free and on the writer thread while it is not."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from mlplatform.stores.eventlog import SERVING_SOURCE, EventIdsTaken, EventLog
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.predictionlog import _RESTART, CHECKPOINT_EVERY_COMMITS, CHECKPOINTS_PER_WAL_RESTART, PredictionLog, PredictionLogError, _Pending
from mlplatform.domain.spec import DatasetSpec

ON_LOOP = pytest.mark.parametrize("on_loop", [True, False], ids=["on-loop", "writer-thread"])


def _row(spec: DatasetSpec, event_id: str) -> tuple[object, ...]:
    features = [39.0 if name in spec.numeric_features else "Private" for name in spec.features]
    return (event_id, 1_700_000_000_000_000, "3", "<=50K", 0.25, *features)


@ON_LOOP
def test_concurrent_requests_are_all_committed(log: EventLog, adult_spec: DatasetSpec, on_loop: bool) -> None:
    metrics = ServingMetrics().model(adult_spec.name)
    writer = PredictionLog(log, metrics, linger_s=0.0, max_rows=50, on_loop=on_loop)
    writer.start()

    async def requests() -> None:
        await asyncio.gather(*(writer.write([_row(adult_spec, f"r{i}-{j}") for j in range(1 + i % 3)]) for i in range(200)))

    asyncio.run(requests())
    writer.close()
    ids = [f"r{i}-{j}" for i in range(200) for j in range(1 + i % 3)]
    stored = log.get(ids)
    assert sorted(stored["event_id"]) == sorted(ids)
    assert (stored["source"] == SERVING_SOURCE).all() and (stored["model_version"] == "3").all() and stored["label"].isna().all()
    assert log.counts().total == len(ids)
    assert metrics.registry.get_sample_value("mlplatform_prediction_log_rows_total", {"model": "adult"}) == len(ids)
    assert metrics.registry.get_sample_value("mlplatform_prediction_log_pending_rows", {"model": "adult"}) == 0


@ON_LOOP
def test_a_failed_commit_fails_its_requests_and_not_the_writer(log: EventLog, adult_spec: DatasetSpec, on_loop: bool,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Commits failing in a row log the first's traceback and a line each after it (an outage's 619 requests printed 619
    tracebacks: the production probe), then say when commits succeed again."""
    metrics = ServingMetrics().model(adult_spec.name)
    writer = PredictionLog(log, metrics, linger_s=0.0, max_rows=50, on_loop=on_loop)
    writer.start()

    async def write(event_id: str) -> None:
        await writer.write([_row(adult_spec, event_id)])

    async def write_malformed() -> None:
        await writer.write([_row(adult_spec, "malformed")[:-1]])  # a value short: the insert fails

    asyncio.run(write("first"))
    for _ in range(3):
        with pytest.raises(PredictionLogError, match="could not record"):
            asyncio.run(write_malformed())  # the request must not be acknowledged
    assert writer.failure is not None
    asyncio.run(write("second"))
    writer.close()
    assert sorted(log.get(["first", "second", "malformed"])["event_id"]) == ["first", "second"] and writer.failure is None
    assert metrics.registry.get_sample_value("mlplatform_errors_total", {"model": "adult", "kind": "prediction_log"}) == 3
    said = [r for r in caplog.records if r.name == "mlplatform.serving.predictionlog"]
    assert [bool(r.exc_info) for r in said] == [True, False, False, False], [r.getMessage() for r in said]
    assert said[2].getMessage().startswith("prediction log: could not commit 1 predictions, 3 commits in a row: ")
    assert said[3].getMessage() == "prediction log: commits succeed again, after 3 that failed"


@ON_LOOP
def test_an_id_already_taken_fails_only_the_request_holding_it(log: EventLog, adult_spec: DatasetSpec, on_loop: bool) -> None:
    """A caller's id that another serving process logged first: of the requests committed together, the one holding it gets
    EventIdsTaken with nothing of it written; the others are committed, and the log is not counted as failing."""
    log.append_served([_row(adult_spec, "taken")], SERVING_SOURCE)  # another process's commit
    metrics = ServingMetrics().model(adult_spec.name)
    writer = PredictionLog(log, metrics, linger_s=0.0, max_rows=50, on_loop=on_loop)
    writer.start()

    async def requests() -> list[BaseException | None]:
        groups = [["before"], ["mine", "taken"], ["after"]]
        return await asyncio.gather(*(writer.write([_row(adult_spec, i) for i in ids]) for ids in groups), return_exceptions=True)

    outcomes = asyncio.run(requests())
    writer.close()
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], EventIdsTaken) and outcomes[1].event_ids == ["taken"]
    assert sorted(log.get(["before", "mine", "taken", "after"])["event_id"]) == ["after", "before", "taken"] and log.counts().total == 3
    assert metrics.registry.get_sample_value("mlplatform_errors_total", {"model": "adult", "kind": "prediction_log"}) is None
    assert writer.failure is None and metrics.registry.get_sample_value("mlplatform_prediction_log_pending_rows", {"model": "adult"}) == 0


def test_one_turn_of_the_loop_is_one_commit_on_the_loop(log: EventLog, adult_spec: DatasetSpec) -> None:
    """With the write lock free the requests of one loop turn share one commit made on the loop: no writer thread needed."""
    metrics = ServingMetrics().model(adult_spec.name)
    writer = PredictionLog(log, metrics, linger_s=0.0, max_rows=50, on_loop=True)  # the writer thread is not started

    async def requests() -> None:
        await asyncio.gather(*(writer.write([_row(adult_spec, f"t{i}")]) for i in range(40)))
        await writer.write([_row(adult_spec, "next-turn")])

    asyncio.run(requests())
    assert log.counts().total == 41
    assert metrics.registry.get_sample_value("mlplatform_prediction_log_commits_total", {"model": "adult"}) == 2

    async def batches() -> None:  # 7 requests of 20 rows in one turn, at most 50 rows a commit: 4 commits, of 40, 40, 40 and 20
        await asyncio.gather(*(writer.write([_row(adult_spec, f"b{i}-{j}") for j in range(20)]) for i in range(7)))

    asyncio.run(batches())
    assert log.counts().total == 41 + 140
    assert metrics.registry.get_sample_value("mlplatform_prediction_log_commits_total", {"model": "adult"}) == 2 + 4


def test_a_held_write_lock_sends_the_group_to_the_writer_thread_and_leaves_the_loop_free(log: EventLog, adult_spec: DatasetSpec) -> None:
    """While another connection (a landing run, say) holds the write lock, a request waits for its commit off the loop: the
    loop keeps turning, and the rows land once the lock is released."""
    metrics = ServingMetrics().model(adult_spec.name)
    writer = PredictionLog(log, metrics, linger_s=0.0, max_rows=50, on_loop=True)
    writer.start()

    async def scenario(other: sqlite3.Connection) -> int:
        request = asyncio.ensure_future(writer.write([_row(adult_spec, "held")]))
        turns = 0
        while turns < 20:  # the loop is not blocked by the held lock
            await asyncio.sleep(0.005)
            turns += 1
        assert not request.done()  # not acknowledged while it is not committed
        other.execute("ROLLBACK")
        await request
        return turns

    with closing(sqlite3.connect(log.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        assert asyncio.run(scenario(other)) == 20
    writer.close()
    assert log.get(["held"])["source"].tolist() == [SERVING_SOURCE]


class _CountingCheckpoints(EventLog):
    """The real SQLite log, counting the checkpoints asked of it."""

    checkpoints = 0

    def checkpoint(self) -> None:
        self.checkpoints += 1
        super().checkpoint()


def _count_held(writer: PredictionLog) -> list[int]:
    """The writer's restarting checkpoints during which the loop held its commits, counted as they run. Counting every
    checkpoint that found the loop holding counted, under load, an ordinary one the writer thread reached only after
    the loop had asked for the next restart."""
    held = [0]
    checkpoint = writer._checkpoint

    def counting(restart: bool) -> None:
        held[0] += restart and writer._checkpointing.is_set()
        checkpoint(restart)

    writer._checkpoint = counting  # type: ignore[method-assign]
    return held


def test_the_writer_thread_checkpoints_what_the_loop_committed(tmp_path: Path, adult_spec: DatasetSpec) -> None:
    """Commits on the loop never checkpoint: the writer thread does, every CHECKPOINT_EVERY_COMMITS of them, beside the
    loop's commits; for one in CHECKPOINTS_PER_WAL_RESTART the loop holds its commits meanwhile, so SQLite restarts the
    WAL and it stays bounded under a steady stream of commits."""
    log = _CountingCheckpoints(tmp_path / "events.sqlite", adult_spec)
    writer = PredictionLog(log, ServingMetrics().model(adult_spec.name), linger_s=0.0, max_rows=50, on_loop=True)
    held = _count_held(writer)
    writer.start()
    commits = 2 * CHECKPOINTS_PER_WAL_RESTART * CHECKPOINT_EVERY_COMMITS + CHECKPOINT_EVERY_COMMITS // 2  # ends past the 2nd restart

    async def one_by_one() -> None:
        for i in range(commits):
            await writer.write([_row(adult_spec, f"c{i}")])

    asyncio.run(one_by_one())
    writer.close()
    on_loop = writer._loop_commits  # the others went to the writer thread while the loop held its commits
    assert on_loop > commits - 50 and log.counts().total == commits
    assert (log.checkpoints, held[0]) == (on_loop // CHECKPOINT_EVERY_COMMITS, on_loop // (CHECKPOINT_EVERY_COMMITS * CHECKPOINTS_PER_WAL_RESTART)) != (0, 0)
    with closing(sqlite3.connect(log.path)) as probe:
        busy, frames, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    log.close()
    after_restart = commits - 2 * CHECKPOINTS_PER_WAL_RESTART * CHECKPOINT_EVERY_COMMITS
    assert busy == 0 and 0 < frames < 8 * after_restart, "a commit writes ~4 pages: the WAL holds only what came after its latest restart"


def test_a_checkpoint_asked_for_while_the_writer_gathers_a_group_is_done(tmp_path: Path, adult_spec: DatasetSpec) -> None:
    """The loop asks for a checkpoint (and holds its commits) while the writer thread drains its queue into a group: the
    checkpoint is done after that group's commit, and the loop commits again, instead of the request being lost with the
    loop holding its commits for good. The queue is filled before the thread starts, as that race would leave it."""
    log = _CountingCheckpoints(tmp_path / "events.sqlite", adult_spec)
    writer = PredictionLog(log, ServingMetrics().model(adult_spec.name), linger_s=0.0, max_rows=50, on_loop=True)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        first, second = (_Pending([_row(adult_spec, name)], loop.create_future(), loop) for name in ("first", "second"))
        writer._checkpointing.set()
        for item in (first, _RESTART, second):
            writer._queue.put(item)
        writer.start()
        await asyncio.wait_for(asyncio.gather(first.future, second.future), 30)
        for _ in range(300):
            if not writer._checkpointing.is_set():
                break
            await asyncio.sleep(0.01)
        await writer.write([_row(adult_spec, "after")])

    asyncio.run(scenario())
    writer.close()
    assert log.checkpoints == 1 and not writer._checkpointing.is_set()
    assert log.counts().total == 3
    log.close()
