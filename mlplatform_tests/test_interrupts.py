"""Ctrl-C and SIGTERM around a run executing in this process: the races the review found, on a real instance."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from mlplatform.orchestration.console import console
from mlplatform.orchestration.interrupts import _settle
from mlplatform.settings import REPO_ROOT


@dg.op
def quick() -> None:
    pass


@dg.job
def short() -> None:
    quick()


def test_a_run_left_canceling_gets_its_real_end(instance: dg.DagsterInstance) -> None:
    """The mark of canceling, written after the run's last word, had overwritten a success: every later retraining command
    refused, the run "already running"."""
    succeeded = short.execute_in_process(instance=instance).dagster_run
    instance.report_run_canceling(succeeded)
    assert _settle(instance, instance.get_run_by_id(succeeded.run_id)).status == dg.DagsterRunStatus.SUCCESS  # type: ignore[union-attr]
    ended_on_the_interrupt = create_run_for_test(instance, job_name="short", status=dg.DagsterRunStatus.STARTED)
    instance.report_run_canceling(ended_on_the_interrupt)
    assert _settle(instance, instance.get_run_by_id(ended_on_the_interrupt.run_id)).status == dg.DagsterRunStatus.CANCELED  # type: ignore[union-attr]


# A job `job` defined by a script, executed in the script's own process as `mlplatform materialize` executes one.
HEADER = textwrap.dedent("""
    import os, signal, sys, threading, time
    import dagster as dg
    from dagster._core.utils import make_new_run_id
    from mlplatform.orchestration.interrupts import Stopped, raise_deferred, stops_on_signal, uninterrupted
""")
EXECUTE = textwrap.dedent("""
    instance = dg.DagsterInstance.ephemeral()
    run_id = make_new_run_id()
    try:
        with stops_on_signal(instance, "job", lambda: instance.get_run_by_id(run_id)):
            job.execute_in_process(instance=instance, raise_on_error=False, run_id=run_id)
    except Stopped as exc:  # as the CLI's main reports it
        print(f"job: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
""")


def executed(job_script: str, setting: str = "") -> subprocess.CompletedProcess[str]:
    """`job_script` run with HEADER and EXECUTE, after `setting` (its constants)."""
    return subprocess.run([sys.executable, "-c", f"{setting}\n{HEADER}\n{job_script}\n{EXECUTE}"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


SCRIPT = textwrap.dedent("""
    failed = []

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=0.1))
    def flaky():
        if not failed:
            failed.append(1)
            raise RuntimeError("a hiccup, retried")

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))
    def slow(_after):
        try:
            threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            time.sleep(30)
        finally:
            time.sleep(0.5)
            print("cleanup done", flush=True)

    @dg.job
    def job():
        slow(flaky())

""")


def test_a_step_retried_before_the_signal_does_not_cut_the_interrupted_steps_cleanup_short() -> None:
    """The review: a retry counted from the start made the first Ctrl-C exit at once, while the step unwound."""
    done = executed(SCRIPT)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "cleanup done" in done.stdout and "job: stopped by SIGINT (Ctrl-C): its interrupted step was to be retried; run " in done.stderr


TOGETHER = textwrap.dedent("""
    @dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))
    def decide(context):
        with uninterrupted(defer=context.run_id if DEFER else None):
            print("tags written", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)  # a Terminate, between two writes that go together
            time.sleep(0.5)
            print("alias moved", flush=True)
        print("went on after the signal", flush=True)

    @dg.op
    def then(context, _after):
        raise_deferred(context.run_id)  # as the run's IO manager does, loading what `decide` handed over
        print("the next step ran", flush=True)

    @dg.job
    def job():
        then(decide()) if NEXT else decide()
""")


@pytest.mark.parametrize("defer, next_step", [(False, False), (True, False), (True, True)])
def test_writes_that_go_together_are_all_made_before_a_signal_stops_the_step(defer: bool, next_step: bool) -> None:
    """The probe: an evaluation stopped between its decision's tags and the alias move left a version reading "promoted"
    while another stayed champion; then, one stopped after its decision left no record of it. evaluation_report's rest of
    the step, and trained_model's logging, are deferring blocks: the step ends as it would have, and the run stops before
    its next step, or, that step the last, ends as it would have."""
    done = executed(TOGETHER, f"DEFER = {defer}\nNEXT = {next_step}")
    assert done.returncode == (0 if defer and not next_step else 143), done.stderr[-2000:]
    assert done.stdout.splitlines() == ["tags written", "alias moved", *(["went on after the signal"] if defer else [])], done.stdout
    if defer and not next_step:
        assert "job: SIGTERM (Terminate in the Dagster UI, or `kill`) came as run " in done.stderr and "it succeeded" in done.stderr
    if next_step:
        assert "job: stopped by SIGTERM (Terminate in the Dagster UI, or `kill`): run " in done.stderr and done.stderr.rstrip().endswith(" canceled")


LOST_AS_IT_ENDS = textwrap.dedent("""
    from dagster._utils import interrupts as dagster_interrupts

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))
    def fit():
        restore = signal.signal

        def restoring(signum, handler):
            if signum == signal.SIGINT and handler is not None and getattr(handler, "__name__", "") != "<lambda>":
                os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C as the block ends, before its handlers are back
            return restore(signum, handler)

        signal.signal = restoring
        try:
            with uninterrupted():
                pass
        finally:
            signal.signal = restore
        time.sleep(5)
        print("went on", flush=True)

    @dg.job
    def job():
        fit()
""")


def test_a_signal_as_a_holding_block_ends_is_not_lost() -> None:
    """The review: Dagster's capture reset its flag as it ended, so a Ctrl-C that came after the block had looked was
    forgotten, and the run went on to succeed."""
    done = executed(LOST_AS_IT_ENDS)
    assert done.returncode == 130 and "went on" not in done.stdout, (done.stdout, done.stderr[-2000:])


AT_CHECKPOINT = textwrap.dedent("""
    @dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))
    def fit():
        with uninterrupted() as checkpoint:
            checkpoint()  # no signal yet: goes on
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C inside LightGBM's wrapper, between two of its statements
            time.sleep(0.5)  # taken by another thread (the main one holds SIGINT back), handled here meanwhile
            print("held", flush=True)
            checkpoint()  # the next boosting round
            print("went past the checkpoint", flush=True)

    @dg.job
    def job():
        fit()

""")


def test_a_signal_during_training_is_held_until_its_checkpoint() -> None:
    """LightGBM's Python wrapper interrupted anywhere freed a booster twice (a segfault: an interrupt between
    Booster.model_from_string's free and its new handle) or lost the interrupt (one raised in a Dataset's __del__ is
    only printed, and the run went on to succeed: a CI failure). Training holds the signal and raises it at a checkpoint."""
    done = executed(AT_CHECKPOINT)
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["held"], done.stdout
    assert "job: stopped by SIGINT (Ctrl-C): its interrupted step was to be retried; run " in done.stderr


IN_A_DESTRUCTOR = textwrap.dedent("""
    class Pooled:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C while a destructor runs (SQLAlchemy's _collection_gced, in the probe)
            time.sleep(0.2)

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))
    def slow():
        Pooled()
        print("went on after the signal", flush=True)
        time.sleep(30)

    @dg.job
    def job():
        slow()
""")


def test_a_signal_lost_in_a_destructor_is_sent_again() -> None:
    """An interrupt raised in a __del__ or a weakref callback is only printed ("Exception ignored in"): the probe's Ctrl-C
    was lost one time in four, the step went on and the command waited out the 20 s grace."""
    done = executed(IN_A_DESTRUCTOR)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "job: stopped by SIGINT (Ctrl-C): its interrupted step was to be retried; run " in done.stderr, done.stderr[-2000:]
    assert "Exception ignored" not in done.stderr and done.stdout.splitlines() == ["went on after the signal"]


FROM_A_TERMINAL = textwrap.dedent("""
    import pathlib, sys

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))
    def slow():
        pathlib.Path(sys.argv[1]).touch()
        time.sleep(60)  # a blocking call on the main thread

    @dg.job
    def job():
        slow()

    with dg.DagsterInstance.local_temp() as instance:  # stderr copied to the run's compute log by a `tail` child, as in a command
        run_id = make_new_run_id()
        with stops_on_signal(instance, "job", lambda: instance.get_run_by_id(run_id)):
            job.execute_in_process(instance=instance, raise_on_error=False, run_id=run_id)
""")


def test_a_ctrl_c_from_a_terminal_is_said_there_once_with_no_tracebacks(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group: it killed Dagster's compute-log `tail` (stderr is sent to the
    run's compute log while it executes), so the command's one line was lost every time, and that tail's watcher printed
    its own KeyboardInterrupt traceback (the stop probe: 14 of 14 Ctrl-Cs during a step)."""
    started = tmp_path / "started"
    process = subprocess.Popen([sys.executable, "-c", f"{HEADER}\n{FROM_A_TERMINAL}", str(started)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)
    signalled = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert err.count("job: stopped by SIGINT (Ctrl-C): its interrupted step was to be retried; run ") == 1, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert time.monotonic() - signalled < 15, "the main thread's sleep was ended for the signal, not waited out (or the 20 s grace)"


AS_THE_RUN_ENDS = textwrap.dedent("""
    from mlplatform.orchestration import interrupts

    restore = signal.signal
    sent = []

    def installing(signum, handler):
        if signum == signal.SIGINT and "stops_on_signal" in getattr(handler, "__qualname__", "") and not sent:  # the cleanup's first step
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C as the run ends, pending as the handlers change
            time.sleep(0.2)
        return restore(signum, handler)

    interrupts.signal.signal = installing

    @dg.op
    def quick():
        pass

    @dg.job
    def job():
        quick()
""")


def test_a_signal_as_the_run_ends_is_noted_and_the_cleanup_is_whole() -> None:
    """The review: a Ctrl-C pending as the cleanup began escaped it, leaving the stop watcher running (20 s later it
    said "did not stop" and killed the command, whose run had succeeded), SIGINT held back and SIGUSR1 taken."""
    check = "print(sorted(t.name for t in threading.enumerate()), signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []), " \
            "signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL, flush=True)"
    done = executed(AS_THE_RUN_ENDS + check)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "job: SIGINT (Ctrl-C) came as run " in done.stderr and done.stdout.splitlines()[-1] == "['MainThread'] False True", done.stdout


HELD_PAST_THE_GRACE = textwrap.dedent("""
    from mlplatform.orchestration import interrupts

    interrupts.STOP_GRACE_SECONDS = 1.0

    @dg.op
    def decide(context):
        with uninterrupted(defer=context.run_id):
            print("tags written", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(3)  # a slow log_model, or mlflow.evaluate against a remote store
            print("alias moved", flush=True)

    @dg.job
    def job():
        decide()
""")


def test_the_grace_waits_for_a_stretch_that_is_never_cut() -> None:
    """The review: the watcher's 20 s grace ran on while a block held the signal, and cut it (a slow log_model would
    leave a registered @challenger with no materialization). It counts from the block's end."""
    done = executed(HELD_PAST_THE_GRACE)
    assert done.returncode == 0 and done.stdout.splitlines() == ["tags written", "alias moved"], (done.stdout, done.stderr[-2000:])


DURING_CLEANUP = textwrap.dedent("""
    import os, signal, sys, threading
    import dagster as dg
    from mlplatform.orchestration import interrupts

    restore = signal.set_wakeup_fd
    calls = []

    def restoring(fd, **kwargs):
        calls.append(fd)
        if len(calls) == 2:  # the restore, in the cleanup: a SIGTERM comes right then
            os.kill(os.getpid(), signal.SIGTERM)
        return restore(fd, **kwargs)

    interrupts.signal.set_wakeup_fd = restoring
    threading.Thread(target=threading.Event().wait, args=(30,), daemon=True).start()  # another thread the kernel may pick
    try:
        with interrupts.stops_on_signal(dg.DagsterInstance.ephemeral(), "job", lambda: None):
            pass
    except interrupts.Stopped as exc:
        print(f"Stopped {exc.exit_code}", flush=True)
""")


def test_a_signal_during_the_cleanup_is_noted_not_fatal() -> None:
    """The second review: the cleanup masked signals on the main thread alone; one the kernel gave another thread ended
    the process (SIGTERM) or escaped as a KeyboardInterrupt, the run never settled."""
    done = subprocess.run([sys.executable, "-c", DURING_CLEANUP], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "Stopped 143", (done.returncode, done.stdout, done.stderr[-1500:])


@dg.op
def stopped() -> None:
    from dagster._core.errors import DagsterExecutionInterruptedError

    raise DagsterExecutionInterruptedError()  # as Dagster raises a signal that came between two steps, at the next one's start


@dg.op
def broken() -> None:
    raise RuntimeError("a real failure")


@dg.op
def found() -> None:
    raise dg.Failure(description="features: only 0 labelled events in the window")  # as a step says what it found


@pytest.mark.parametrize("op, shown", [(stopped, False), (found, False), (broken, True)])
def test_the_console_leaves_out_what_a_signal_stopped_and_says_real_failures(op: dg.OpDefinition, shown: bool, capfd: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C between two steps printed the interrupt's stack twice (the step's failure, the run's cancel), 80 lines
    before the command's own one-line message; a step's finding (a Failure, which the command prints) printed its
    stack twice too (the new-user probe's "only 0 labelled events")."""
    job = dg.GraphDefinition(name="one", node_defs=[op]).to_job(logger_defs={"console": console})
    result = job.execute_in_process(run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}}, raise_on_error=False)
    assert not result.success
    err = capfd.readouterr().err
    assert ("STEP_FAILURE" in err) is shown and ("Stack Trace" in err) is shown, err[-2000:]
