"""`mlplatform dev` on a fresh state: every server answers on loopback, one process holds the code location (reloaded
when its files change), the servers stop a tier after the other, and Ctrl-C leaves no process behind."""

import faulthandler
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from mlplatform.stores.reports import report_url
from mlplatform.settings import IN_STACK_ENV, REPO_ROOT, Settings
from mlplatform.cli.dev import CODE_CLIENTS, HEALTH_CHECK_SECONDS, RELOAD_CHECK_SECONDS, RESTART_GRACE_SECONDS, RETRY_FAILED_LOAD_SECONDS, SERVICES, STACK_WORKSPACE_FILE, CodeReloader, DevServerError, Server, _watch_the_stop, code_servers, running, running_in, stack_workspace, stop_all
from mlplatform.ports import free_port
from mlplatform.orchestration.instance import STACK_STOPPING_FILE
from mlplatform_tests.support.processes import wait_until

SERVERS = ("mlflow", "reports", "evidently-ui", "code-server-mlplatform", "dagster-daemon", "dagster-webserver")



def _processes_with(marker: str) -> list[int]:
    """Processes whose environment holds the marker: everything `dev` started inherits it."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_code_process(pid: int) -> bool:
    """A process serving the code location: `dagster api grpc`, what a code server (or the daemon, or the webserver, given
    a python_module workspace) starts to import it."""
    return " api grpc " in _cmdline(pid)


def test_report_url_points_into_the_served_reports_folder(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, reports_url="http://127.0.0.1:4000/")
    assert report_url(settings, settings.reports_dir / "drift" / "adult v1.html") == "http://127.0.0.1:4000/drift/adult%20v1.html"
    with pytest.raises(ValueError):
        report_url(settings, tmp_path / "elsewhere.html")


def test_dev_serves_a_fresh_state_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "state"
    urls = {f"MLPLATFORM_{key}": f"http://127.0.0.1:{free_port()}" for key in ("DAGSTER_UI_URL", "MLFLOW_UI_URL", "REPORTS_URL", "EVIDENTLY_UI_URL")}
    env = {**os.environ, **urls, "MLPLATFORM_STATE_DIR": str(state)}
    proc = subprocess.Popen([sys.executable, "-m", "mlplatform.cli", "dev"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    marker = f"MLPLATFORM_STATE_DIR={state}\0"
    try:
        printed = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        while not any(line.strip().startswith("dagster-webserver") for line in printed) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line)
        assert [s for s in SERVERS if any(line.strip().startswith(s) for line in printed)] == list(SERVERS), "".join(printed)
        for url in (urls["MLPLATFORM_DAGSTER_UI_URL"] + "/server_info", urls["MLPLATFORM_MLFLOW_UI_URL"] + "/health", urls["MLPLATFORM_REPORTS_URL"] + "/",
                    urls["MLPLATFORM_EVIDENTLY_UI_URL"] + "/api/projects"):
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200, url
        assert (state / "dagster" / "dagster.yaml").exists() and (state / "mlflow" / "mlflow.db").exists()
        # One process holds the code location, the shared code server's: the daemon, which loads it every 60 s, and the
        # webserver start none of their own.
        assert len([p for p in _processes_with(marker) if _is_code_process(p)]) == 1, [_cmdline(p) for p in _processes_with(marker)]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)  # past its watchdog (60 s) the stop prints where it waits, and exits 1
        assert proc.returncode == 0 and "stopped" in out, out[-8000:]
        assert _processes_with(marker) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# `mlplatform dev` itself, its servers swapped for one that only sleeps: the stop path without the engines' start-up.
# `terminal`: a hang-up kills, as in a terminal, whatever this suite inherited (under `nohup` it is ignored).
SLEEPING_STACK = """
import os
import signal
import sys
if sys.argv[1:2] == ["terminal"]:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
import mlplatform.cli.dev as dev
from mlplatform.settings import Settings
dev.STOP_WATCHDOG_SECONDS = float(os.environ.get("STOP_WATCHDOG_SECONDS", dev.STOP_WATCHDOG_SECONDS))
sleeper = [sys.executable, "-c", sys.argv[2] if sys.argv[2:] else "import time; time.sleep(120)", *sys.argv[3:]]
dev.build_servers = lambda settings, production=False: [dev.Server("sleeper", "(test)", sleeper, lambda: True)]
sys.exit(dev.serve_until_stopped(Settings(), say=lambda line: print(line, flush=True)))
"""


@contextmanager
def _sleeping_stack(tmp_path: Path, prefix: list[str], args: list[str], processes: int = 1) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    """SLEEPING_STACK started and its sleeper up (`processes`: with what it spawns): the supervisor, the marker in every
    server's environment, the sleeper's pid. Whatever is left of them is killed on the way out."""
    state = tmp_path / "state"
    (state / "dagster").mkdir(parents=True)
    (state / "dagster" / STACK_STOPPING_FILE).touch()  # a stop's, left: the start removes it, or its runs would start no step
    urls = {f"MLPLATFORM_{key}": f"http://127.0.0.1:{free_port()}" for key in ("DAGSTER_UI_URL", "MLFLOW_UI_URL", "REPORTS_URL", "EVIDENTLY_UI_URL")}
    proc = subprocess.Popen([*prefix, sys.executable, "-c", SLEEPING_STACK, *args], cwd=REPO_ROOT, env={**os.environ, **urls, "MLPLATFORM_STATE_DIR": str(state)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    marker = f"MLPLATFORM_STATE_DIR={state}\0"
    try:
        assert proc.stdout is not None
        printed = [proc.stdout.readline() for _ in range(2)]
        assert printed[1].strip().startswith("sleeper"), "".join(printed) + proc.stdout.read()
        deadline = time.monotonic() + 60
        while len(started := [pid for pid in _processes_with(marker) if pid != proc.pid]) < processes and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(started) == processes, started
        assert not (state / "dagster" / STACK_STOPPING_FILE).exists()
        assert f"{IN_STACK_ENV}=1".encode() in Path(f"/proc/{min(started)}/environ").read_bytes().split(b"\0"), "what tells a step it is the stack's"
        yield proc, marker, min(started)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_a_supervisor_killed_outright_leaves_no_server_behind(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) gives `mlplatform dev` no chance to stop its servers, and each runs in a session of its
    own: before, they ran on without it, holding the ports the next `make dev` needs. Its reaper stops them."""
    with _sleeping_stack(tmp_path, [], []) as (proc, marker, sleeper):
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_with(marker) == [], f"the sleeper (pid {sleeper}) outlived its supervisor"
        assert (tmp_path / "state" / "dagster" / STACK_STOPPING_FILE).exists(), "the reaper says the stack is stopping: its runs start no step again"


SCRIPT_JOB = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]  # as a script's `mlplatform dev &` starts: SIGINT ignored


@pytest.mark.parametrize(("prefix", "stops"), [([], [signal.SIGTERM]), ([], [signal.SIGHUP]), (["nohup"], [signal.SIGHUP, signal.SIGTERM]),
                                               (SCRIPT_JOB, [signal.SIGINT])], ids=["sigterm", "sighup", "nohup", "a script's job"])
def test_a_stop_signal_or_the_terminal_hanging_up_stops_every_server(tmp_path: Path, prefix: list[str], stops: list[signal.Signals]) -> None:
    """Closing the terminal (SIGHUP) killed `mlplatform dev` alone: every server, each in its own session, ran on
    without it, holding the ports the next `make dev` needs. Under `nohup` a hang-up stays ignored (the review: the
    handler overrode it, and `nohup mlplatform dev &` died at logout). A script's background job, started with SIGINT
    ignored, stops on `kill -INT` (the upgrade probe: it ran on, every server with it)."""
    with _sleeping_stack(tmp_path, prefix, [] if prefix else ["terminal"]) as (proc, marker, _):
        *ignored, stop = stops
        for sig in ignored:
            proc.send_signal(sig)
            time.sleep(1.0)
            assert proc.poll() is None and _processes_with(marker), f"{sig.name} is ignored under nohup"
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.strip().endswith("stopped"), out
        assert _processes_with(marker) == [], "no server outlives the stack"


# A server deaf to the stop's first SIGINT: the stop waits out the servers' grace period.
DEAF_TO_ONE_SIGINT = "import signal, time; signal.signal(signal.SIGINT, lambda *_: signal.signal(signal.SIGINT, signal.SIG_DFL)); time.sleep(120)"


def test_a_stop_that_hangs_says_where_and_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop of `mlplatform dev` once hung in CI past the test's 90 s, and nothing said where. Past its watchdog the
    stop prints every thread's stack and exits 1; the reaper stops the servers it left."""
    monkeypatch.setenv("STOP_WATCHDOG_SECONDS", "1")
    with _sleeping_stack(tmp_path, [], ["-", DEAF_TO_ONE_SIGINT]) as (proc, marker, _):
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 1 and "Timeout (0:00:01)!" in out and "in stop_all" in out, out
        deadline = time.monotonic() + 30
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_with(marker) == []


def test_the_stop_watchdog_without_a_standard_error_leaves_the_stop_to_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The review: `mlplatform dev 2>&-` made arming the watchdog raise, and the stop of the servers was skipped."""
    try:
        for stream in (None, io.StringIO()):
            monkeypatch.setattr(sys, "stderr", stream)
            _watch_the_stop(60.0)
    finally:
        faulthandler.cancel_dump_traceback_later()


# A stop signal landing inside a weakref callback: its handler's KeyboardInterrupt is printed as "Exception ignored" and
# lost, as CI saw at a production stack's stop.
LOSES_THE_STOP_SIGNAL = """
import os, signal, time, weakref
from mlplatform.cli import dev
class Held:
    pass
def lands_in_a_callback(_ref):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
signal.signal(signal.SIGINT, dev._interrupt)
held = Held()
ref = weakref.ref(held, lands_in_a_callback)
del held
print("signal lost", flush=True)
try:
    dev.supervise([], print, poll_seconds=0.05)
except KeyboardInterrupt:
    print("stopping")
"""


def test_a_stop_signal_whose_interrupt_python_lost_still_stops_the_stack() -> None:
    """CI: the SIGINT stopping a production stack landed in a weakref callback; Python printed "Exception ignored in:
    ... KeyboardInterrupt" and went on, so the stack ran on, deaf to every later stop signal (repeats are ignored), until
    the test killed it. The supervisor's loop now sees that a stop was asked, and unwinds into the shutdown."""
    proc = subprocess.run([sys.executable, "-c", LOSES_THE_STOP_SIGNAL], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert "Exception ignored" in proc.stderr and proc.stdout.splitlines() == ["signal lost", "stopping"], (proc.stdout, proc.stderr)


# A server that stops what it spawned itself, as the Dagster daemon stops its code server after its last sensor tick.
STOPS_ITS_CHILD = """
import signal, subprocess, sys, time
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
def stop(*_):
    time.sleep(0.5)
    Path(sys.argv[1]).write_text("alive" if child.poll() is None else f"ended with {child.returncode}")
    child.terminate()
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
time.sleep(120)
"""


def test_ctrl_c_lets_each_server_stop_what_it_spawned(tmp_path: Path) -> None:
    """SIGINT went to every server's process group at once: the daemon's code server ended under it, and the sensor
    ticks in flight at each stop failed (the soak probe's stop 37). The server hears it first, its group only later."""
    said = tmp_path / "said"
    with _sleeping_stack(tmp_path, [], ["-", STOPS_ITS_CHILD, str(said)], processes=2) as (proc, marker, _):
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.strip().endswith("stopped"), out
        assert said.read_text() == "alive", "the server's child was interrupted before the server could stop it"
        assert _processes_with(marker) == []
        assert (tmp_path / "state" / "dagster" / STACK_STOPPING_FILE).exists(), "the stop says the stack is stopping: its runs start no step again"


# A server slow to stop (past two thirds of the grace period), counting the SIGINTs it hears, and a child of its group
# that says whether it heard one.
SLOW_TO_STOP = """
import signal, subprocess, sys, time
from pathlib import Path
said = Path(sys.argv[1])
subprocess.Popen([sys.executable, "-c", "import signal, sys, time; from pathlib import Path; "
                  "signal.signal(signal.SIGINT, lambda *_: (Path(sys.argv[1]).write_text('interrupted'), sys.exit(0))); time.sleep(120)",
                  str(said) + ".child"])
heard = 0
def stop(*_):
    global heard
    heard += 1
    if heard == 1:
        time.sleep(2.5)
        said.write_text(str(heard))
        sys.exit(0)
signal.signal(signal.SIGINT, stop)
time.sleep(120)
"""


def _stopped(script: str, argument: Path, processes: int) -> Server:
    """A server running `script` with `argument`, stopped by `stop_all` (3 s of grace) once its group holds `processes`
    processes; whatever is left of the group is killed after."""
    server = Server("test-server", "(test)", [sys.executable, "-c", script, str(argument)], lambda: True, restartable=False)
    server.start(dict(os.environ), None)
    try:
        wait_until(f"the server's {processes} processes", lambda: len(running_in(server.groups)) == processes, 60)
        stop_all([server], grace_seconds=3.0)
    finally:
        server.signal_group(signal.SIGKILL)
    return server


def test_a_server_still_stopping_is_not_interrupted_again_while_its_group_is(tmp_path: Path) -> None:
    """The review: at two thirds of the grace period the group's SIGINT also hit a server still stopping, cutting its own
    shutdown short; what is left of its group hears it, the server does not."""
    said = tmp_path / "said"
    server = _stopped(SLOW_TO_STOP, said, processes=2)
    assert said.read_text() == "1", "the server heard SIGINT once"
    assert (tmp_path / "said.child").read_text() == "interrupted", "its group's other processes heard it"
    assert running_in(server.groups) == []


# A server slow to stop whose step mirrors its compute log as Dagster's run workers do: `tail` watched by Dagster's own
# watch_orphans.py, its stderr kept in a file.
MIRRORING = """
import signal, subprocess, sys, time
from pathlib import Path
from dagster._core.execution.scripts import watch_orphans
tail = subprocess.Popen(["sleep", "120"])
with open(sys.argv[1], "wb") as err:
    subprocess.Popen([sys.executable, watch_orphans.__file__, str(subprocess.os.getpid()), str(tail.pid)], stderr=err)
def stop(*_):
    time.sleep(2.5)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
time.sleep(120)
"""


def test_dagsters_compute_log_helpers_are_not_interrupted_and_print_no_traceback(tmp_path: Path) -> None:
    """The operator probe: every stop of `mlplatform dev` with a step running printed a KeyboardInterrupt traceback of
    Dagster's watch_orphans.py, which the group's SIGINT reached in its sleep. It ends by itself with its parent."""
    err = tmp_path / "watch_orphans.err"
    server = _stopped(MIRRORING, err, processes=3)
    assert running_in(server.groups) == []
    assert err.read_text() == "", err.read_text()


# A server that, on SIGINT, waits argv[2] seconds, writes the time into argv[1] and exits; argv[1].ready says it listens.
STOPS_AFTER = """
import signal, sys, time
from pathlib import Path
def stop(*_):
    time.sleep(float(sys.argv[2]))
    Path(sys.argv[1]).write_text(repr(time.time()))
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
Path(sys.argv[1] + ".ready").touch()
time.sleep(120)
"""


def test_a_tier_hears_the_stop_only_once_the_tier_above_it_has_stopped(tmp_path: Path) -> None:
    """The daemon's sensor ticks in flight need the code server: it is interrupted once the daemon (a higher tier) is gone."""
    clients = Server("clients", "(test)", [sys.executable, "-c", STOPS_AFTER, str(tmp_path / "clients"), "1.0"], lambda: True, restartable=False,
                     tier=CODE_CLIENTS)
    code = Server("code", "(test)", [sys.executable, "-c", STOPS_AFTER, str(tmp_path / "code"), "0"], lambda: True, restartable=False, tier=SERVICES)
    for server in (code, clients):
        server.start(dict(os.environ), None)
    try:
        wait_until("both servers to listen for SIGINT", lambda: all((tmp_path / f"{name}.ready").exists() for name in ("code", "clients")), 60)
        stop_all([code, clients], grace_seconds=10.0)
    finally:
        for server in (code, clients):
            server.signal_group(signal.SIGKILL)
    assert float((tmp_path / "code").read_text()) >= float((tmp_path / "clients").read_text())


CODE_LOCATION = """
import dagster as dg
{assets}
defs = dg.Definitions(assets=[{names}])
"""


def _code_location(names: list[str]) -> str:
    assets = "\n".join(f"@dg.asset\ndef {name}() -> None:\n    pass\n" for name in names)
    return CODE_LOCATION.format(assets=assets, names=", ".join(names))


def _asset_names(server: Server) -> set[str]:
    """The assets the code server serves, asked as the webserver asks it."""
    import dagster as dg
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin

    assert server.reloader is not None
    origin = GrpcServerCodeLocationOrigin(host=server.reloader.host, port=server.reloader.port, location_name=server.reloader.location)
    with dg.DagsterInstance.ephemeral() as instance, origin.create_location(instance) as location:
        [repository] = location.get_repositories().values()
        return {node.asset_key.to_user_string() for node in repository.get_asset_node_snaps()}


def test_a_changed_code_location_is_reloaded_once_it_holds_still_and_a_broken_one_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon no longer re-imports the code every 60 s: `dev` reloads the shared code server when its files change
    (a saved file, `dg scaffold`, a spec), so new models still reach the daemon and the UI without a restart."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "state" / "dagster"))
    module = tmp_path / "location.py"
    module.write_text(_code_location(["first"]))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_file": {"relative_path": module.name, "attribute": "defs", "location_name": "probe"}}]}))
    settings = Settings(state_dir=tmp_path / "state")
    [server] = code_servers(settings, workspace, files=lambda: [module])
    assert yaml.safe_load((settings.dagster_home / STACK_WORKSPACE_FILE).read_text())["load_from"][0]["grpc_server"]["location_name"] == "probe"
    reloader, said = server.reloader, []
    assert reloader is not None

    clock = [time.monotonic()]

    def look() -> None:
        """A look of `dev`'s supervisor, a check after the one before."""
        clock[0] += RELOAD_CHECK_SECONDS
        reloader.poll(clock[0], said.append)
        reloader.wait()

    def look_twice() -> None:
        """The change is seen, then seen held still."""
        look()
        look()

    with running(settings, log_dir=tmp_path / "logs", timeout_seconds=120, grace_seconds=5, servers=[server]):
        assert _asset_names(server) == {"first"}
        look_twice()
        assert said == [], "nothing changed: nothing reloaded"
        module.write_text(_code_location(["first", "second"]))
        look()
        module.write_text(_code_location(["first", "second", "third"]))  # still being written: no reload yet
        look()
        assert said == []
        look_twice()
        assert said[-1] == "code location probe reloaded" and _asset_names(server) == {"first", "second", "third"}
        module.write_text("raise RuntimeError('a half-made model')\n")
        look_twice()
        assert said[-1].startswith("code location probe failed to load") and "a half-made model" in said[-1], said
        before = len(said)
        look()
        assert len(said) == before, "no change, and the failed load is recent: nothing tried"
        clock[0] += RETRY_FAILED_LOAD_SECONDS  # what it lacked may come with no file changing: tried again
        look()
        assert said[before:] == ["code location probe failed to load before: reloading it", said[-1]] and "a half-made model" in said[-1], said
        module.write_text(_code_location(["first"]))
        look_twice()
        assert said[-1] == "code location probe reloaded" and _asset_names(server) == {"first"}
        # The process holding the code ends (the OOM killer), the code server lives on and answers nothing: restarted.
        assert server.process is not None
        code_processes = [pid for pid in running_in(server.groups) if _is_code_process(pid)]  # with those of earlier loads still ending
        for pid in code_processes:
            os.kill(pid, signal.SIGKILL)
        wait_until("the code processes to end", lambda: not set(code_processes) & set(running_in(server.groups)), 30)
        before = len(said)
        clock[0] += HEALTH_CHECK_SECONDS
        look()
        assert said[before:] == ["code location probe does not answer: reloading it", "code location probe reloaded"], said
        assert _asset_names(server) == {"first"}


def test_a_folder_removed_while_the_files_are_walked_skips_that_look(tmp_path: Path) -> None:
    """The review: Path.rglob raises FileNotFoundError for a folder removed while it walks (a model deleted, a `git
    checkout`), which unwound through the supervisor and stopped the whole stack."""
    module = tmp_path / "location.py"
    module.write_text("")
    walks = iter([[module], FileNotFoundError(2, "No such file or directory", str(tmp_path / "gone"))])

    def files() -> list[Path]:
        walked = next(walks)
        if isinstance(walked, OSError):
            raise walked
        return walked

    said: list[str] = []
    reloader = CodeReloader("probe", "127.0.0.1", free_port(), files)
    reloader.poll(time.monotonic(), said.append)
    assert said == [] and reloader.loaded == reloader._seen


@pytest.mark.parametrize(("entry", "said"), [
    ({"grpc_server": {"host": "127.0.0.1", "port": 4000, "location_name": "elsewhere"}}, "python_module and python_file entries, not ['grpc_server']"),
    ({"python_module": {"module_name": "mlplatform.orchestration.definitions"}}, "each python_module entry needs a location_name"),
    ({"python_module": "mlplatform.orchestration.definitions"}, "each python_module entry needs a location_name"),
    ({"python_file": {"relative_path": "a.py", "location_name": "a"}, "python_module": {"module_name": "b", "location_name": "b"}},
     "not ['python_file', 'python_module']"),
    ([{"python_module": {"module_name": "a", "location_name": "same"}}, {"python_file": {"relative_path": "b.py", "location_name": "same"}}],
     "two entries are named 'same'"),
], ids=["grpc_server", "no-location-name", "short-form", "two-in-one", "same-location-name"])
def test_a_workspace_entry_dev_cannot_serve_is_refused_naming_the_file(tmp_path: Path, entry: dict[str, object] | list[object], said: str) -> None:
    """`dev` starts a code server per entry: one it cannot start is a clear error before anything runs, not a KeyError."""
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": entry if isinstance(entry, list) else [entry]}))
    with pytest.raises(DevServerError, match=re.escape(said)) as raised:
        code_servers(Settings(state_dir=tmp_path / "state"), workspace, files=list)
    assert str(workspace) in str(raised.value)


def test_the_code_server_port_can_be_fixed_and_a_taken_one_is_refused_naming_the_setting(tmp_path: Path) -> None:
    """The new-user probe: every server's port could be set but the code server's, which took a random one (53637, then
    53837), outside the range a restricted machine allows."""
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {"module_name": "a", "location_name": "a"}},
                                                       {"python_module": {"module_name": "b", "location_name": "b"}}]}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        base = taken.getsockname()[1]
        settings = Settings(state_dir=tmp_path / "state", code_server_port=base - 1)
        with pytest.raises(DevServerError, match=re.escape(f"port {base} on 127.0.0.1 (code location b; MLPLATFORM_CODE_SERVER_PORT: {base - 1}) cannot be bound")):
            code_servers(settings, workspace, files=list)
    shared = Settings(state_dir=tmp_path / "state", code_server_port=base, dagster_ui_url=f"http://127.0.0.1:{base + 1}")
    with pytest.raises(DevServerError, match=re.escape(f"port {base + 1} (code location b; MLPLATFORM_CODE_SERVER_PORT: {base}) is also "
                                                       "MLPLATFORM_DAGSTER_UI_URL's")):
        code_servers(shared, workspace, files=list)  # the review: bound first, it left the UI's health check reading gRPC bytes
    with pytest.raises(DevServerError, match=re.escape("port 65536 (code location b; MLPLATFORM_CODE_SERVER_PORT: 65535) is past 65535")):
        code_servers(Settings(state_dir=tmp_path / "state", code_server_port=65535), workspace, files=list)
    fixed = Settings(state_dir=tmp_path / "state", code_server_port=base)
    assert [s.url for s in code_servers(fixed, workspace, files=list)] == [f"grpc://127.0.0.1:{base} (no UI: code location a)",
                                                                           f"grpc://127.0.0.1:{base + 1} (no UI: code location b)"]
    assert [e["grpc_server"]["port"] for e in yaml.safe_load(stack_workspace(fixed).read_text())["load_from"]] == [base, base + 1]


def test_a_code_location_that_fails_to_load_at_start_stops_dev_naming_the_users_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe: `dev` failed saying only Dagster's "Error occurred during the loading of Dagster definitions in
    executable_path=…", the file and field at fault hidden in the tracebacks above it."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "state" / "dagster"))
    module = tmp_path / "location.py"
    module.write_text("raise RuntimeError('defs/churn/defs.yaml: attributes.spec: nowhere.yaml does not exist')\n")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_file": {"relative_path": module.name, "attribute": "defs", "location_name": "probe"}}]}))
    settings = Settings(state_dir=tmp_path / "state")
    with pytest.raises(DevServerError) as raised:
        with running(settings, log_dir=tmp_path / "logs", timeout_seconds=120, grace_seconds=5, servers=code_servers(settings, workspace, files=list)):
            pass
    assert str(raised.value) == "code location probe failed to load: RuntimeError: defs/churn/defs.yaml: attributes.spec: nowhere.yaml does not exist"


def test_a_restarted_code_server_is_not_health_checked_while_it_imports(tmp_path: Path) -> None:
    """The probe: after each restart, `dev` said "does not answer: reloading it" and "did not reload" while the new code
    server was still importing the code. Here nothing listens on the port: checked only after the grace."""
    module = tmp_path / "location.py"
    module.write_text("")
    said: list[str] = []
    reloader = CodeReloader("probe", "127.0.0.1", free_port(), lambda: [module])
    now = time.monotonic()
    reloader.restarted(now)
    reloader.poll(now + HEALTH_CHECK_SECONDS, said.append)
    reloader.wait()
    assert said == []
    reloader.poll(now + RESTART_GRACE_SECONDS, said.append)
    reloader.wait()
    assert said[0] == "code location probe does not answer: reloading it" and said[1].startswith("code location probe: its code server did not reload")
