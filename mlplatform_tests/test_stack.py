"""One `mlplatform dev` per state folder, and terminal commands beside a production one (probe, stop 32: a second
`make prod` deleted the first one's PostgreSQL cluster; a terminal without the stack's settings used SQLite beside it)."""

import fcntl
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlplatform.cli import main
from mlplatform.cli.dev import RESTARTS_PER_WINDOW, DevServerError, Server, _check_ports_free, running, serve_until_stopped, supervise
from mlplatform.ports import free_port
from mlplatform.cli.stack import PRODUCTION, StackError, check_reaches_stack, holding, running_stack, write_production_env
from mlplatform.settings import IN_STACK_ENV, Settings

URLS = {"event_log_url": "postgresql://postgres:s3cret'x@127.0.0.1:5999/eventlog", "dagster_postgres_url": "postgresql://postgres:pw@127.0.0.1:5999/dagster",
        "mlflow_backend_store_url": "postgresql://postgres:pw@127.0.0.1:5999/mlflow", "celery_broker_url": "redis://127.0.0.1:6999/0"}


def test_a_second_stack_on_a_state_folder_is_refused_before_anything_starts(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    said: list[str] = []
    with holding(settings.state_dir, PRODUCTION):
        assert running_stack(settings.state_dir) == running_stack(settings.state_dir) and running_stack(settings.state_dir).pid == os.getpid()  # type: ignore[union-attr]
        with pytest.raises(StackError, match=rf"another `mlplatform dev` \(pid {os.getpid()}, production profile\) already runs on the state folder"):
            with holding(settings.state_dir, "embedded"):
                pass
        assert serve_until_stopped(settings, say=said.append, production=True) == 2
    assert said[-1].startswith("dev failed: another `mlplatform dev`") and not (settings.state_dir / "postgres").exists()
    assert not any(line.startswith("starting on state") for line in said), f"it said it was starting before its refusal (the production probe): {said}"
    assert running_stack(settings.state_dir) is None, "released when the stack ends"
    shared = os.open(settings.state_dir / "dev.lock", os.O_RDONLY)  # what a `status` beside it does, for an instant
    fcntl.flock(shared, fcntl.LOCK_SH)
    threading.Timer(0.2, os.close, args=(shared,)).start()
    with holding(settings.state_dir, PRODUCTION):  # waits that instant out instead of refusing to start
        assert running_stack(settings.state_dir).profile == PRODUCTION  # type: ignore[union-attr]
    assert (settings.state_dir / "dev.lock").read_text() == "", "a stopped stack names no pid"
    with holding(settings.state_dir, "embedded"):
        assert running_stack(settings.state_dir).profile == "embedded"  # type: ignore[union-attr]


def test_a_terminal_beside_a_production_stack_needs_its_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("MLPLATFORM_STATE_DIR", str(state))
    for name in URLS:
        monkeypatch.delenv(f"MLPLATFORM_{name.upper()}", raising=False)
    monkeypatch.setenv("MLPLATFORM_SERVE_PORT", "13380")  # the production probe: the stack's own port and loop, not in the file
    monkeypatch.setenv("MLPLATFORM_TUNING_TRIALS", "2")
    monkeypatch.setenv(IN_STACK_ENV, "1")  # the stack's marker for its runs, no setting: never a terminal's
    with holding(state, PRODUCTION):
        env_file = write_production_env(Settings(state_dir=state, **URLS))  # type: ignore[arg-type]
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        written = env_file.read_text(encoding="utf-8").splitlines()
        assert {"export MLPLATFORM_SERVE_PORT=13380", "export MLPLATFORM_TUNING_TRIALS=2"} <= set(written) and not any("IN_STACK" in w for w in written)
        monkeypatch.delenv("MLPLATFORM_TUNING_TRIALS")  # a terminal's own loop setting is its own: not refused
        with pytest.raises(StackError, match="this command's MLPLATFORM_CELERY_BROKER_URL, MLPLATFORM_DAGSTER_POSTGRES_URL, MLPLATFORM_EVENT_LOG_URL, "
                                             "MLPLATFORM_MLFLOW_BACKEND_STORE_URL are not the stack's"):
            check_reaches_stack(Settings())
        assert main(["status"]) == 2
        err = capsys.readouterr().err
        assert f"Load the stack's settings first: . {env_file}" in err and not (state / "events").exists(), "refused before any store is opened"
        loaded = subprocess.run(["bash", "-c", f". {env_file} && env"], capture_output=True, text=True, check=True).stdout
        assert {f"MLPLATFORM_{k.upper()}={v}" for k, v in URLS.items()} | {f"MLPLATFORM_STATE_DIR={state}"} <= set(loaded.splitlines())
        for name, url in URLS.items():
            monkeypatch.setenv(f"MLPLATFORM_{name.upper()}", url)
        check_reaches_stack(Settings())
        monkeypatch.setenv("MLPLATFORM_EVENT_LOG_URL", URLS["event_log_url"].replace("5999", "5998"))  # another stack's, left in the shell
        with pytest.raises(StackError, match="this command's MLPLATFORM_EVENT_LOG_URL is not the stack's"):
            check_reaches_stack(Settings())
        env_file.unlink()
        with pytest.raises(StackError, match="is starting or stopping"):
            check_reaches_stack(Settings())
        env_file.write_text("export MLPLATFORM_EVENT_LOG_URL='unclosed\n", encoding="utf-8")  # not the file the stack wrote: said, no traceback
        with pytest.raises(StackError, match="its settings file .* cannot be read: stop the stack and start it again"):
            check_reaches_stack(Settings())
        env_file.write_text("left by a stack killed with SIGKILL\n", encoding="utf-8")
        env_file.chmod(0o644)
        write_production_env(Settings(state_dir=state, **URLS))  # type: ignore[arg-type]
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, "a file already there is made private too"
    assert not env_file.exists(), "the passwords leave with the stack"
    with holding(state, "embedded"):
        for name in URLS:
            monkeypatch.delenv(f"MLPLATFORM_{name.upper()}")
        check_reaches_stack(Settings())  # the same SQLite stores as the embedded stack


def test_a_taken_port_is_named_with_its_setting_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free = {name: f"http://127.0.0.1:{free_port()}" for name in ("dagster_ui_url", "evidently_ui_url", "mlflow_ui_url")}
        settings = Settings(state_dir=tmp_path / "state", reports_url=f"http://127.0.0.1:{port}", **free)  # type: ignore[arg-type]
        with pytest.raises(DevServerError, match=rf"port {port} on 127.0.0.1 \(MLPLATFORM_REPORTS_URL: http://127.0.0.1:{port}\) cannot be bound"):
            _check_ports_free(settings, production=False)
        _check_ports_free(settings.model_copy(update={"reports_url": f"http://127.0.0.1:{free_port()}"}), production=False)


def test_a_failure_names_the_module_a_python_server_runs_and_the_signal_that_killed_it() -> None:
    """`restarted: celery-worker (…/python -m) exited with -9` said neither which program nor what -9 was."""
    server = Server("celery-worker", "(test)", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"], lambda: True)
    server.process = subprocess.Popen(server.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert server.describe_failure() == f"celery-worker ({sys.executable} -m http.server) did not become ready"
    server.process.kill()
    server.process.wait()
    assert server.describe_failure() == f"celery-worker ({sys.executable} -m http.server) killed by SIGKILL"
    realtime = signal.SIGRTMIN + 6  # which signal.Signals does not name: describing it raised ValueError in the supervisor
    server.process = subprocess.Popen(server.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server.process.send_signal(realtime)
    server.process.wait()
    assert server.describe_failure() == f"celery-worker ({sys.executable} -m http.server) killed by signal {int(realtime)}"


def test_a_restartable_child_that_dies_is_started_again_and_one_that_keeps_dying_stops_the_stack(tmp_path: Path) -> None:
    """Redis exiting stopped `make prod` as a whole, and its throwaway cluster was deleted with everything the stores held."""
    settings = Settings(state_dir=tmp_path / "state")
    short = [sys.executable, "-c", "import time; time.sleep(0.3)"]
    spawned = tmp_path / "spawned"  # each life leaves a child behind, as a daemon leaves its run workers
    spawning = [sys.executable, "-c", "import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                f"open({str(spawned)!r}, 'a').write(f'{{child.pid}}\\n'); time.sleep(0.3)"]
    broker = Server("broker", "(test)", spawning, lambda: True)
    steady = Server("steady", "(test)", [sys.executable, "-c", "import time; time.sleep(60)"], lambda: True)
    said: list[str] = []
    with running(settings, log_dir=tmp_path / "logs", servers=[broker, steady], grace_seconds=2):
        first = broker.process
        assert supervise([broker, steady], said.append, poll_seconds=0.05) == 1
        assert broker.process is not first and not steady.died(), "the steady server ran on through the broker's restarts"
        children = [int(pid) for pid in spawned.read_text().split()]
        assert len(children) == RESTARTS_PER_WINDOW + 1 and all(_alive(pid) for pid in children), "a restart leaves the old life's children at work"
    assert not any(_alive(pid) for pid in children), "stopping the stack stops every life's children"
    assert [line.split(":")[0] for line in said] == ["restarted"] * RESTARTS_PER_WINDOW + ["stopping"]
    assert said[-1].startswith("stopping: broker (") and "exited with 0" in said[-1]
    said.clear()
    once = Server("worker", "(test)", short, lambda: True, restartable=False)  # its death ends the stack at once
    with running(settings, servers=[once, steady], grace_seconds=2):
        assert supervise([once, steady], said.append, poll_seconds=0.05) == 1
    assert len(said) == 1 and said[0].startswith("stopping: worker (")


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
