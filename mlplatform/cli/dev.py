"""`mlplatform dev`: the Dagster webserver and daemon, the MLflow UI, the reports folder and the Evidently UI, on loopback, on one state.

Each server runs in its own process group, so stopping one also stops what it spawned (code servers, run
workers, gunicorn/uvicorn workers) and a Ctrl-C in the terminal reaches only this supervisor, which then
stops them in order. If the supervisor dies without stopping them (SIGKILL, the OOM killer), its reaper
(mlplatform.cli.reaper) does.
"""

import contextlib
import faulthandler
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import yaml

from mlplatform import TELEMETRY_OFF
from mlplatform.cli.reaper import Reaper
from mlplatform.orchestration.executor import celery_worker_command, celery_worker_env
from mlplatform.orchestration.instance import CODE_SERVER_STARTUP_SECONDS, STACK_STOPPING_FILE, prepare_dagster_home
from mlplatform.ports import bind_error, free_port
from mlplatform.root import code_files
from mlplatform.settings import IN_STACK_ENV, REPO_ROOT, WARM_RUNS_PRESTART_ENV, Settings, env_name

WORKSPACE = REPO_ROOT / "workspace.yaml"
BIN = Path(sys.executable).parent
# Telemetry off (no internet, no phoning home) and no MLflow GenAI job workers (a dozen idle processes here).
# gRPC calls to the code server (run launches, sensor ticks, schedules) may take 180 s instead of Dagster's 60 s
# before DEADLINE_EXCEEDED: on a loaded box a slow answer is still an answer (the queue re-tries launches that time out).
CHILD_ENV_DEFAULTS = {**TELEMETRY_OFF, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "DAGSTER_GRPC_TIMEOUT_SECONDS": "180"}
LOCATIONS_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"


RESTARTS_PER_WINDOW, RESTART_WINDOW_SECONDS = 3, 300.0
ENGINES, SERVICES, CODE_CLIENTS = 0, 1, 2  # Server.tier
STACK_WORKSPACE_FILE = "stack-workspace.yaml"  # in the Dagster home: the code servers the daemon and the webserver load
WORKSPACE_TARGETS = ("python_module", "python_file")  # the workspace entries `dev` starts a code server for


class DevServerError(RuntimeError):
    """A server did not come up (or died); the message names it and its log."""


def _bind(url: str) -> tuple[str, int]:
    """Host and port of a loopback URL from the settings (links in metadata and the servers must agree)."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise DevServerError(f"{url!r} needs an explicit host and port")
    return parts.hostname, parts.port


@dataclass
class Server:
    """One child server: how to start it and how to tell it is ready to answer."""

    name: str
    url: str
    command: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict, repr=False)  # secrets go here, not on the command line (`ps` shows it)
    # Started once every server of a lower tier answers, and stopped after those of higher tiers: ENGINES (a broker, a
    # tracking server the others use as they start), SERVICES, CODE_CLIENTS (the daemon and the webserver, which load the
    # code location from the code server).
    tier: int = SERVICES
    # Every server of the stack keeps its state in the stores, not in itself: one that dies is started again, not the end
    # of the stack and of the runs in flight (a test's server may say otherwise).
    restartable: bool = True
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)
    _started_with: tuple[dict[str, str], Path | None] = field(default=({}, None), repr=False)
    _restarts: list[float] = field(default_factory=list, repr=False)
    _old_groups: list[int] = field(default_factory=list, repr=False)  # process groups of its earlier lives
    reaper: Reaper | None = field(default=None, repr=False)  # stops its group if the supervisor dies without doing so
    reloader: "CodeReloader | None" = field(default=None, repr=False)  # a code server's: reloads it when the code changes

    def start(self, env: dict[str, str], log_dir: Path | None) -> None:
        self._started_with = (env, log_dir)
        self.close_log()
        if log_dir is not None:
            self.log_path = log_dir / f"{self.name}.log"
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env={**env, **self.env}, stdout=self._log, stderr=subprocess.STDOUT if self._log else None, start_new_session=True)
        if self.reaper is not None:
            self.reaper.watch(self.process.pid)

    def restart(self, now: float) -> bool:
        """Start a restartable server that died again, unless it died RESTARTS_PER_WINDOW times within RESTART_WINDOW_SECONDS
        (then it is broken, not unlucky); False when it was not started again."""
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS]
        if not self.restartable or len(self._restarts) >= RESTARTS_PER_WINDOW:
            return False
        self._restarts.append(now)
        if self.process is not None:  # what it spawned (a daemon's run workers) may finish its work: stopped with the stack
            self._old_groups.append(self.process.pid)
        self.start(*self._started_with)
        return True

    def died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    @property
    def groups(self) -> list[int]:
        """The process groups of its lives: each life starts a session of its own."""
        return [*self._old_groups, *([self.process.pid] if self.process is not None else [])]

    def interrupt(self) -> None:
        """SIGINT to the server itself, so it stops what it spawned in its own order; to the groups of its earlier lives,
        whose leaders are gone, and to its own group when it has exited (nothing is left to stop the rest)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            for group in self._old_groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGINT)
        else:
            self.signal_group(signal.SIGINT)

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the whole process group: the server and whatever it spawned (code servers, run workers, web workers),
        and what its earlier lives spawned."""
        for group in self.groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def describe_failure(self) -> str:
        """Which program ended and how: `python -m celery` and "killed by SIGKILL", not `python -m` and "-9"."""
        where = f"; log: {self.log_path}" if self.log_path else ""
        code = self.process.poll() if self.process else None
        program = " ".join(self.command[:3] if self.command[1:2] == ["-m"] else self.command[:2])
        if code is None:
            ended = "did not become ready"
        else:
            ended = f"killed by {_signal_name(-code)}" if code < 0 else f"exited with {code}"
        return f"{self.name} ({program}) {ended}{where}"


def _signal_name(number: int) -> str:
    """SIGKILL for 9; a real-time signal, which `signal.Signals` does not name, by its number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


KILLED_EXIT_SECONDS = 5.0  # how long `dev` waits for SIGKILLed processes to end before returning anyway


LEADERS_SHARE_OF_GRACE = 2 / 3  # of the grace period, what the servers themselves get before their groups are interrupted


def stop_all(servers: list[Server], grace_seconds: float) -> None:
    """SIGINT to every server itself, a tier after the other from the highest, then to what is left of their groups,
    SIGKILL to what is left after the grace period, and return once the killed processes have ended.

    The servers first, and the code server after the daemon and the webserver, whose sensor ticks and queries in flight
    need it (Dagster's daemon does not wait for the ticks it runs on threads, so a few can still fail). SIGINT to the
    whole group at once ended the code server under the daemon's feet, and each stop left failed sensor ticks in the UI. The groups are interrupted and killed even when their leader exited, so no code
    server or run worker outlives `dev`.
    """
    groups = [g for s in servers for g in s.groups]
    start = time.monotonic()
    leaders_deadline, deadline = start + grace_seconds * LEADERS_SHARE_OF_GRACE, start + grace_seconds
    for tier in sorted({s.tier for s in servers}, reverse=True):
        members = [s for s in servers if s.tier == tier]
        for server in members:
            server.interrupt()
        for server in members:
            if server.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.process.wait(max(0.1, leaders_deadline - time.monotonic()))
    leaders = {s.process.pid for s in servers if s.process is not None and s.process.poll() is None}
    for pid in running_in(groups):  # not a leader still stopping: a second SIGINT would cut its own shutdown short
        if pid not in leaders and not _ends_with_its_parent(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
    _await_exits(groups, deadline - time.monotonic())
    for server in servers:
        server.signal_group(signal.SIGKILL)
        if server.process is not None:
            server.process.wait()
        server.close_log()
    _await_exits(groups, KILLED_EXIT_SECONDS)


def _await_exits(groups: list[int], timeout_seconds: float) -> None:
    """Until no process of these groups still runs (a zombie waiting for its parent has ended): SIGKILL is delivered
    as the kill returns, but a process takes a moment to end, and `dev` returning must mean its children are gone."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and running_in(groups):
        time.sleep(0.02)


# Dagster's helpers beside a step that mirror its compute logs (watch_orphans.py, poll_compute_logs.py) end by themselves
# within a second of the run worker that started them; a SIGINT printed their KeyboardInterrupt traceback at every stop.
ENDS_WITH_ITS_PARENT = "dagster/_core/execution/scripts/"


def _ends_with_its_parent(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return ENDS_WITH_ITS_PARENT in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return False


def running_in(groups: list[int]) -> list[int]:
    """The processes that run (are no zombies) in one of `groups`, from /proc; one gone meanwhile is not."""
    return [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _runs_in(stat, groups)]


def _runs_in(stat: Path, groups: list[int]) -> bool:
    """The process of a /proc/<pid>/stat runs (is no zombie) in one of `groups`; one gone meanwhile does not."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = stat.read_text().rsplit(") ", 1)[1].split()
        return fields[0] != "Z" and int(fields[2]) in groups
    return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(200 <= response.status < 400)
    except (urllib.error.URLError, OSError):
        return False


def _dagster_locations_loaded(url: str) -> bool:
    """True once every code location finished loading; a location that failed to load is an error, not a wait."""
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": LOCATIONS_QUERY}).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
    except (urllib.error.URLError, OSError, KeyError, TypeError, ValueError):
        return False
    for entry in entries:
        error = entry.get("locationOrLoadError") or {}
        if error.get("__typename") == "PythonError":
            raise DevServerError(f"code location {entry['name']} failed to load: {error.get('message', '').strip()}")
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def _daemon_heartbeat(settings: Settings) -> Callable[[], bool]:
    """The daemon has no port: it is ready once it wrote a heartbeat into the instance."""

    def ready() -> bool:
        import dagster as dg
        from sqlalchemy.exc import OperationalError

        try:
            with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
                return bool(instance.get_daemon_heartbeats())
        except OperationalError:  # "database is locked" while the starting servers write to the instance: not ready yet
            return False

    return ready


def serving_server(settings: Settings) -> Server:
    """`mlplatform serve`: every model's champion, from the same settings (so the same registry) as the rest."""
    url = f"http://{settings.serve_host}:{settings.serve_port}"
    return Server("serving", url, [sys.executable, "-m", "mlplatform.cli", "serve"], lambda: http_ok(f"{url}/healthz"))


def mlflow_server(settings: Settings) -> Server:
    """The MLflow server on its store (SQLite, or PostgreSQL from `mlflow_backend_store_url`). With a database it also
    proxies artifacts into the state folder, since the platform then tracks through it over HTTP."""
    host, port = _bind(settings.mlflow_ui_url)
    artifacts = settings.artifacts_dir_uri
    proxied = settings.mlflow_backend_store_url is not None
    where = ["--serve-artifacts"] if proxied else ["--default-artifact-root", artifacts]
    return Server("mlflow", settings.mlflow_ui_url,
                  # no access log: serving polls each model's @champion alias, a line per poll that buried everything else
                  [str(BIN / "mlflow"), "server", *where, "--artifacts-destination", artifacts, "--host", host, "--port", str(port), "--workers", "1",
                   "--uvicorn-opts", "--no-access-log"],
                  lambda: http_ok(f"{settings.mlflow_ui_url}/health"), env={"MLFLOW_BACKEND_STORE_URI": settings.mlflow_server_store_uri},
                  tier=ENGINES if proxied else SERVICES)  # tracked through over HTTP: serving and the code location need it from their start


def evidently_server(settings: Settings) -> Server:
    """`evidently ui` on the workspace the drift reports are added to (stores/evidently_workspace.py); it picks up the
    projects and snapshots added while it runs (mlplatform/cli/evidently_ui.py keeps its watcher alive)."""
    host, port = _bind(settings.evidently_ui_url)
    assert settings.evidently_workspace_dir is not None  # resolved by Settings
    settings.evidently_workspace_dir.mkdir(parents=True, exist_ok=True)
    return Server("evidently-ui", settings.evidently_ui_url,
                  [sys.executable, "-m", "mlplatform.cli.evidently_ui", "--workspace", str(settings.evidently_workspace_dir), "--host", host,
                   "--port", str(port)],
                  lambda: http_ok(f"{settings.evidently_ui_url}/api/projects"))


def require_binary(name: str, why: str) -> str:
    """The path of a system binary the stack needs; missing, it fails at start saying which and how to get it."""
    found = shutil.which(name)
    if found is None:
        raise DevServerError(f"`{name}` not found on PATH ({why}); `apt-get install` it or run `make system-deps`")
    return found


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def redis_server(settings: Settings) -> Server:
    """Redis for Celery on the host and port of `celery_broker_url`, its files in <state>/redis, emptied as a stack starts,
    with an append-only file (fsync every second) for the restarts within it. Without one, a Redis restarted after a
    crash came back empty: no queued step, and none of kombu's exchange bindings, which a Celery producer declares once
    per connection; a step a run submitted then went to kombu's undeliverable list, and its run stayed STARTED with no
    step run until run monitoring's limit."""
    url = settings.celery_broker_url
    if url is None:
        raise DevServerError(f"{env_name('celery_broker_url')} is not set: no Redis to start")
    host, port = _bind(url)
    folder = settings.state_dir / "redis"
    shutil.rmtree(folder, ignore_errors=True)  # a stack that stopped left steps of its runs queued: not this stack's to run
    folder.mkdir(parents=True, exist_ok=True)
    binary = require_binary("redis-server", f"the Celery broker of {env_name('celery_broker_url')}")
    return Server("redis", url, [binary, "--bind", host, "--port", str(port), "--dir", str(folder), "--save", "", "--appendonly", "yes",
                                  "--appendfsync", "everysec"],
                  lambda: _redis_answers(url), tier=ENGINES)


def _worker_answers(url: str, name: str) -> bool:
    from celery import Celery

    try:
        return bool(Celery(broker=url, backend=url).control.ping(destination=[name], timeout=1.0))
    except OSError:
        return False


def celery_worker(settings: Settings, name: str = "mlplatform") -> Server:
    """One Celery worker executing the steps of runs (`celery_worker_concurrency` at once), ready once it answers a ping
    through the broker."""
    full_name = f"{name}@{socket.gethostname()}"
    env = celery_worker_env(settings)
    concurrency = settings.celery_worker_concurrency
    return Server("celery-worker", f"{full_name} (no UI: executes {concurrency} run step{'s' * (concurrency > 1)} at a time)",
                  celery_worker_command(sys.executable, full_name, concurrency),
                  lambda: _worker_answers(env["CELERY_BROKER_URL"], full_name), env=env)


def _load_error(listed: str) -> str | None:
    """The user's own error in a code server's answer to ListRepositories, if its code failed to load: Dagster's
    "Error occurred during the loading of Dagster definitions in executable_path=…" wraps it and names no file."""
    from dagster._serdes import deserialize_value
    from dagster._utils.error import SerializableErrorInfo

    error = deserialize_value(listed)
    if not isinstance(error, SerializableErrorInfo):
        return None
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _code_server_answers(location: str, host: str, port: int) -> Callable[[], bool]:
    """Ready once it lists its repositories; one whose code failed to load fails the start, naming the user's error
    (before, the webserver's outer message named none). The code server binds its port only after the import."""

    def ready() -> bool:
        from dagster._core.errors import DagsterUserCodeUnreachableError
        from dagster._grpc.client import DagsterGrpcClient

        try:
            listed = DagsterGrpcClient(port=port, host=host).list_repositories()
        except DagsterUserCodeUnreachableError:
            return False
        if (error := _load_error(listed)) is not None:
            raise DevServerError(f"code location {location} failed to load: {error}")
        return True

    return ready


RELOAD_CHECK_SECONDS = 2.0  # how often `dev` looks at the code location's files; a change is reloaded once it held a look
# A code location that failed to load is tried again this often with no change seen: what it lacked may not be among the
# files looked at (a spec's data file copied in at last), which Dagster's daemon found by re-importing every 60 s.
RETRY_FAILED_LOAD_SECONDS = 60.0
# How often `dev` asks a code server for its repositories: the process holding the code (`dagster api grpc`, which the
# code server starts) may end while the code server lives on, answering nothing (the OOM killer takes the largest
# process), and nothing else starts it again; the daemon's own code servers were replaced at its next 60 s refresh.
HEALTH_CHECK_SECONDS = 10.0
RESTART_GRACE_SECONDS = 60.0  # a code server started again imports the code before it answers: no health check meanwhile


def _fingerprint(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """Each file's modification time and size (-1, -1: gone), so a change, a new file and a removed one all show."""
    seen = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            seen.append((str(path), -1, -1))
        else:
            seen.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(seen)


@dataclass
class CodeReloader:
    """Reloads a code server once the code location's files changed and then held still for a look: an editor's save,
    `dg scaffold`, a spec edited. The code server imports the new code in a new process; the webserver and the daemon
    follow within seconds (they watch the server's id). A change that breaks the load is said on the terminal, and the UI
    shows it; the next change is reloaded as well, and a failed load is tried again every RETRY_FAILED_LOAD_SECONDS. A code
    server whose code process no longer answers is reloaded too, which starts that process again (HEALTH_CHECK_SECONDS)."""

    location: str
    host: str
    port: int
    files: Callable[[], list[Path]]
    loaded: tuple[tuple[str, int, int], ...] = ()  # the files as the running code read them
    _seen: tuple[tuple[str, int, int], ...] = ()
    _next_look: float = 0.0
    _failed_at: float | None = None  # when the last reload left the code location failing to load
    _next_health_check: float = 0.0
    _reloading: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.loaded = self._seen = _fingerprint(self.files())
        self._next_health_check = time.monotonic() + HEALTH_CHECK_SECONDS

    def poll(self, now: float, say: Callable[[str], None]) -> None:
        """Look at the files when it is time to (RELOAD_CHECK_SECONDS), and reload if they changed and held still, if a
        failed load is due to be tried again, or if the code server's code process does not answer (HEALTH_CHECK_SECONDS)."""
        if now < self._next_look or (self._reloading is not None and self._reloading.is_alive()):
            return
        self._next_look = now + RELOAD_CHECK_SECONDS
        try:
            seen = _fingerprint(self.files())
        except OSError:  # a folder removed while it was walked (a model deleted, a `git checkout`): the next look sees it
            return
        changed = seen != self.loaded and seen == self._seen
        checked = now >= self._next_health_check
        if checked:
            self._next_health_check = now + HEALTH_CHECK_SECONDS
        if changed or checked or self._retry_due(now):
            work = self._reload if changed or not checked else self._check
            self._reloading = threading.Thread(target=work, args=(seen, now, say), name=f"reload-{self.location}", daemon=True)
            self._reloading.start()
        self._seen = seen

    def restarted(self, now: float) -> None:
        """Its code server was started again: not asked whether it answers before RESTART_GRACE_SECONDS (it said "does
        not answer" and "did not reload" while it imported the code)."""
        self._next_health_check = now + RESTART_GRACE_SECONDS

    def wait(self) -> None:
        """Until a reload under way has ended."""
        if self._reloading is not None:
            self._reloading.join()

    def _check(self, seen: tuple[tuple[str, int, int], ...], now: float, say: Callable[[str], None]) -> None:
        """Reload a code server whose code process does not answer; one that answers (its repositories, or the error
        that stopped it loading them) is left as it is, and a failed load waits for its own retry."""
        from dagster._core.errors import DagsterUserCodeUnreachableError
        from dagster._grpc.client import DagsterGrpcClient

        try:
            DagsterGrpcClient(port=self.port, host=self.host).list_repositories()
        except DagsterUserCodeUnreachableError:
            self._reload(seen, now, say, why="does not answer")
            return
        if self._retry_due(now):
            self._reload(seen, now, say)

    def _retry_due(self, now: float) -> bool:
        """The last reload left the code location failing to load, RETRY_FAILED_LOAD_SECONDS ago or more."""
        return self._failed_at is not None and now - self._failed_at >= RETRY_FAILED_LOAD_SECONDS

    def _reload(self, seen: tuple[tuple[str, int, int], ...], now: float, say: Callable[[str], None], why: str | None = None) -> None:
        """Reload the code server with the files as `seen`; one it could not reach (restarting, or busy past the
        deadline) leaves them unloaded, so the next look tries again."""
        from dagster._core.errors import DagsterUserCodeUnreachableError
        from dagster._grpc.client import DagsterGrpcClient

        why = why or ("changed" if seen != self.loaded else "failed to load before")
        say(f"code location {self.location} {why}: reloading it")
        client = DagsterGrpcClient(port=self.port, host=self.host)
        with contextlib.suppress(DagsterUserCodeUnreachableError):  # raised also after the new code process started, when
            client.reload_code(timeout=CODE_SERVER_STARTUP_SECONDS)  # shutting the old one down fails as it is gone: asked below
        try:
            error = _load_error(client.list_repositories())
        except DagsterUserCodeUnreachableError as exc:
            say(f"code location {self.location}: its code server did not reload: {exc}")
            return
        self.loaded = seen
        if error is not None:
            self._failed_at = now
            say(f"code location {self.location} failed to load: {error}")
        else:
            self._failed_at = None
            say(f"code location {self.location} reloaded")


def code_servers(settings: Settings, workspace: Path = WORKSPACE, files: Callable[[], list[Path]] = code_files) -> list[Server]:
    """A `dagster code-server start` for each code location of the workspace file, and the workspace file of their
    addresses (STACK_WORKSPACE_FILE in the Dagster home) that the daemon and the webserver load, as `dagster dev` does.
    Each is reloaded when `files` change (CodeReloader).

    Given workspace.yaml itself, the daemon and the webserver each started a code server of their own, and the daemon
    started a new one every 60 s (Dagster's RELOAD_WORKSPACE_INTERVAL): a fresh import of the code location, seconds of
    CPU each minute for as long as the stack ran (the soak probe)."""
    servers, entries = [], []
    others = {} if settings.code_server_port is None else _fixed_ports(settings, production=True)  # read once, for a fixed port alone
    for index, entry in enumerate(yaml.safe_load(workspace.read_text(encoding="utf-8"))["load_from"]):
        kind = next(iter(entry)) if len(entry) == 1 else None
        if kind not in WORKSPACE_TARGETS:
            raise DevServerError(f"{workspace}: `dev` starts code servers for {' and '.join(WORKSPACE_TARGETS)} entries, not {sorted(entry)}")
        target = entry[kind]
        if not isinstance(target, dict) or "location_name" not in target:
            raise DevServerError(f"{workspace}: each {kind} entry needs a location_name for `dev` to name its code server")
        name = target["location_name"]
        port = free_port() if settings.code_server_port is None else _fixed_code_server_port(settings.code_server_port, index, name, others)
        if any(e["grpc_server"]["location_name"] == name for e in entries):  # the stack workspace would name one location twice
            raise DevServerError(f"{workspace}: two entries are named {name!r}: give each code location its own location_name")
        load = ["-m", target["module_name"]] if kind == "python_module" else ["-f", str(workspace.parent / target["relative_path"])]
        load += ["-a", target["attribute"]] if "attribute" in target else []
        load += ["-d", str(workspace.parent / target["working_directory"])] if "working_directory" in target else []
        server = Server(f"code-server-{name}", f"grpc://127.0.0.1:{port} (no UI: code location {name})",
                        [str(BIN / "dagster"), "code-server", "start", *load, "--location-name", name,
                         "-h", "127.0.0.1", "-p", str(port), "--startup-timeout", str(CODE_SERVER_STARTUP_SECONDS)],
                        _code_server_answers(name, "127.0.0.1", port))
        server.reloader = CodeReloader(name, "127.0.0.1", port, files)
        servers.append(server)
        entries.append({"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": name}})
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    stack_workspace(settings).write_text(yaml.safe_dump({"load_from": entries}, sort_keys=False), encoding="utf-8")
    return servers


def stack_workspace(settings: Settings) -> Path:
    """The workspace file of the code servers' addresses, which code_servers writes and the daemon and webserver load."""
    return settings.dagster_home / STACK_WORKSPACE_FILE


def dagster_daemon(settings: Settings) -> Server:
    """The daemon, on the code servers' workspace (code_servers writes it): sensors, schedules and the run queue."""
    return Server("dagster-daemon", "(no UI: runs sensors and queued runs)",
                  [str(BIN / "dagster-daemon"), "run", "-w", str(stack_workspace(settings))], _daemon_heartbeat(settings),
                  env={WARM_RUNS_PRESTART_ENV: "1"}, tier=CODE_CLIENTS)


def daemon_servers(settings: Settings) -> list[Server]:
    """The daemon with the code server it loads the code location from: a stack with no UI that runs sensors and runs."""
    return [*code_servers(settings), dagster_daemon(settings)]


def build_servers(settings: Settings, production: bool = False) -> list[Server]:
    """The servers, bound to the host and port of the URLs in the settings: MLflow, the reports route, Evidently, the code
    server the daemon and the webserver share, those two, a Celery worker when runs execute on Celery, and in the
    production profile the prediction service."""
    dagster_host, dagster_port = _bind(settings.dagster_ui_url)
    reports_host, reports_port = _bind(settings.reports_url)
    return [
        mlflow_server(settings),
        Server("reports", settings.reports_url,
               [sys.executable, "-m", "mlplatform.cli.reports_server", str(reports_port), "--bind", reports_host, "--directory", str(settings.reports_dir)],
               lambda: http_ok(f"{settings.reports_url}/")),
        evidently_server(settings),
        *daemon_servers(settings),
        Server("dagster-webserver", settings.dagster_ui_url,
               [str(BIN / "dagster-webserver"), "-w", str(stack_workspace(settings)), "-h", dagster_host, "-p", str(dagster_port)],
               lambda: _dagster_locations_loaded(settings.dagster_ui_url), tier=CODE_CLIENTS),
    ] + ([celery_worker(settings)] if settings.celery_broker_url else []) + ([serving_server(settings)] if production else [])


def _fixed_ports(settings: Settings, production: bool) -> dict[str, tuple[str, str, int]]:
    """The ports the stack's servers are given, by the setting that gives each: (its URL, host, port)."""
    urls = {name: getattr(settings, name) for name in ("dagster_ui_url", "reports_url", "evidently_ui_url", "mlflow_ui_url")}
    if production:
        urls["serve_port"] = f"http://{settings.serve_host}:{settings.serve_port}"
    return {name: (url, *_bind(url)) for name, url in urls.items()}


def _fixed_code_server_port(base: int, index: int, name: str, others: dict[str, tuple[str, str, int]]) -> int:
    """The `index`th code location's port from `code_server_port` (`base`): one past 65535, one another server of the stack
    is given (`others`, the prediction service's too), or one taken now is refused naming the setting (the review: a port
    shared with the Dagster UI's was bound by the code server first, and `dev` died of the UI's health check reading gRPC
    bytes)."""
    setting = env_name("code_server_port")
    port, what = base + index, f"code location {name}; {setting}: {base}"
    if port > 65535:
        raise DevServerError(f"port {port} ({what}) is past 65535: set {setting} lower")
    for other, (_, _, taken) in others.items():
        if taken == port:
            raise DevServerError(f"port {port} ({what}) is also {env_name(other)}'s: set {setting} to ports no other server of the stack is given")
    if (error := bind_error("127.0.0.1", port)) is not None:
        raise DevServerError(f"port {port} on 127.0.0.1 ({what}) cannot be bound: {error}; stop what listens there or set {setting}")
    return port


def _check_ports_free(settings: Settings, production: bool) -> None:
    """Every fixed port the stack binds is free, before anything starts: a port taken by another process was found only
    after the engines were up, as one server's traceback (or its URL was printed while another program answered there)."""
    for name, (url, host, port) in _fixed_ports(settings, production).items():
        if (error := bind_error(host, port)) is not None:
            raise DevServerError(f"port {port} on {host} ({env_name(name)}: {url}) cannot be bound: {error}; stop what listens "
                                 f"there or set {env_name(name)}")


def _wait_ready(servers: list[Server], timeout_seconds: float) -> None:
    pending = list(servers)
    deadline = time.monotonic() + timeout_seconds
    while pending:
        _stop_if_asked()
        for server in list(pending):
            if server.died():
                raise DevServerError(server.describe_failure())
            if server.ready():
                pending.remove(server)
        if pending and time.monotonic() > deadline:
            raise DevServerError("; ".join(s.describe_failure() for s in pending))
        time.sleep(0.5)


def _prepare_instance(settings: Settings) -> None:
    """Create the instance's SQLite storage once, here: left to the servers, the daemon, the webserver and the
    readiness probe create it at the same moment on a fresh state, and one of them can fail on the race. And fail the
    runs an earlier stack, killed outright, left starting or started with no worker, so run retries launch them now."""
    import dagster as dg

    from mlplatform.orchestration.warm_runs import fail_runs_left_behind, on_this_machine

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        fail_runs_left_behind(instance, this_machine_only=on_this_machine(instance))


@contextmanager
def running(settings: Settings, log_dir: Path | None = None, timeout_seconds: float = 180.0, grace_seconds: float = 15.0,
            servers: list[Server] | None = None, env: dict[str, str] | None = None, reaper: Reaper | None = None,
            on_stop: Callable[[], None] | None = None) -> Iterator[list[Server]]:
    """Start the servers (default: `build_servers`) on the settings' state, wait until each answers, stop them all on exit.

    Children inherit this process's environment (so the `MLPLATFORM_*` settings reach the code location
    and every run) with telemetry off, plus `env`; `log_dir` captures their output instead of the terminal. The servers
    of a tier are started and awaited before those of the next. `reaper`: told each server's process group as it starts.
    `on_stop`: called as the stop begins.
    """
    prepare_dagster_home(settings)
    _prepare_instance(settings)
    stopping = settings.dagster_home / STACK_STOPPING_FILE  # written as the stack stops: its run workers start no step again
    stopping.unlink(missing_ok=True)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    child_env = {**CHILD_ENV_DEFAULTS, **os.environ, **(env or {}), "DAGSTER_HOME": str(settings.dagster_home), "MLPLATFORM_STATE_DIR": str(settings.state_dir),
                 IN_STACK_ENV: "1"}
    servers = build_servers(settings) if servers is None else servers
    for server in servers:
        server.reaper = reaper
    try:
        for tier in sorted({s.tier for s in servers}):
            group = [s for s in servers if s.tier == tier]
            for server in group:
                server.start(child_env, log_dir)
            _wait_ready(group, timeout_seconds)
        yield servers
    finally:
        try:
            if on_stop is not None:
                on_stop()
        finally:
            stopping.touch()
            stop_all(servers, grace_seconds)


def supervise(servers: list[Server], say: Callable[[str], None], poll_seconds: float = 1.0) -> int:
    """Watch the running servers until one dies that cannot be started again (returns 1): a restartable one is started
    again, at most RESTARTS_PER_WINDOW times per window; a code server is reloaded when its code changed. Before, any
    server exiting stopped the stack as a whole, failing the runs in flight, and for `make prod` deleting the throwaway
    cluster and everything the stores held."""
    while True:
        _stop_if_asked()
        dead = [s for s in servers if s.died()]
        if dead:
            failures = [s.describe_failure() for s in dead]
            if not all(s.restart(time.monotonic()) for s in dead):
                say("stopping: " + "; ".join(failures))
                return 1
            say("restarted: " + "; ".join(failures))
            for server in dead:
                if server.reloader is not None:
                    server.reloader.restarted(time.monotonic())
        for server in servers:
            if server.reloader is not None:
                server.reloader.poll(time.monotonic(), say)
        time.sleep(poll_seconds)


# What stops the stack cleanly: Ctrl-C, SIGTERM, and the hang-up of its terminal (a closed window, a dropped SSH session),
# which before killed `mlplatform dev` alone and left every server (each in its own session) running without it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# Set by the first stop signal. The KeyboardInterrupt its handler raises is lost when the signal lands in a weakref
# callback or a __del__ (Python prints "Exception ignored in: ..." and goes on): CI saw a stack that had printed so keep
# running with every later stop signal ignored. The loops that wait (start-up, supervise) check it, and stop.
_STOP_ASKED = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    """The first stop signal unwinds into the shutdown; repeats are ignored so they cannot cut it short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _STOP_ASKED.set()
    raise KeyboardInterrupt


def _stop_if_asked() -> None:
    """Unwind into the shutdown if a stop signal came whose KeyboardInterrupt was lost."""
    if _STOP_ASKED.is_set():
        raise KeyboardInterrupt


# A stop takes the servers' grace period and the kill's wait (about 20 s): well under this. The production profile's
# engines stop after them, PostgreSQL's `pg_ctl -w stop` waiting up to its own 60 s.
STOP_WATCHDOG_SECONDS, ENGINES_STOP_SECONDS = 60.0, 60.0


def _watch_the_stop(seconds: float) -> None:
    """Bound the stop: one not over, exit included, in `seconds` prints where each thread of `dev` waits and exits 1.
    A stop once hung in CI past the test's 90 s and left nothing that said where; its servers are stopped by then or,
    on this exit, by the reaper. Left armed once `serve_until_stopped` returns (the exit is what it watches last): it
    is the `dev` command's. With no standard error to print to (`2>&-`) there is no watchdog, and the stop goes on."""
    with contextlib.suppress(RuntimeError, ValueError, OSError):  # no stderr, or one without a file descriptor
        faulthandler.dump_traceback_later(seconds, exit=True)


def serve_until_stopped(settings: Settings, say: Callable[[str], None] = print, production: bool = False) -> int:
    """Run the servers until a stop signal (STOP_SIGNALS); exit non-zero if one of them fails to start or dies on its own.

    `production`: on real engines (mlplatform.cli.production), those the settings do not name started here first.
    """
    from mlplatform.cli.production import POSTGRES_SETTINGS, local_engines
    from mlplatform.cli.stack import PRODUCTION, StackError, holding, write_production_env

    # The production probe: a restart emptied every store, which docs/production.md says, and the console did not.
    throwaway = [env_name(name) for name in POSTGRES_SETTINGS if getattr(settings, name) is None] if production else []

    # Under `nohup` a hang-up is ignored, as asked: that stays so. Not so an interrupt: a script's background job
    # starts with SIGINT ignored (so that a Ctrl-C of the script leaves it be), and a `kill -INT` of it then left the
    # whole stack running (the upgrade probe); a stop asked for by name stops the stack.
    _STOP_ASKED.clear()
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS if sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        with holding(settings.state_dir, PRODUCTION if production else "embedded"), Reaper(settings.dagster_home / STACK_STOPPING_FILE) as reaper:
            # Once the state folder is this stack's: a second one on it printed "starting" before its refusal (the production probe).
            say(f"starting on state {settings.state_dir}{' (production profile)' if production else ''} (Ctrl-C stops everything)")
            _check_ports_free(settings, production)
            with local_engines(settings, enabled=production) as (settings, env, engines):
                env_file = write_production_env(settings) if production else None
                with running(settings, servers=engines + build_servers(settings, production), env=env, reaper=reaper,
                             on_stop=lambda: _watch_the_stop(STOP_WATCHDOG_SECONDS + (ENGINES_STOP_SECONDS if production else 0.0))) as servers:
                    for server in servers:
                        say(f"  {server.name:<24} {server.url}")
                    if env_file is not None:
                        say(f"  {'terminal':<24} . {shlex.quote(str(env_file))}   (the stack's settings, before mlplatform commands in another terminal)")
                    if throwaway:
                        say(f"  throwaway: the PostgreSQL cluster in {settings.state_dir / 'postgres'} holds what {', '.join(throwaway)} would (events, "
                            "runs, the registry): it is removed when the stack stops, and at the next start; set them to keep it (docs/production.md)")
                    return supervise(servers, say)
    except KeyboardInterrupt:
        say("stopped" + (" (the throwaway PostgreSQL cluster and what it held are removed)" if throwaway else ""))
        return 0
    except StackError as exc:
        say(f"dev failed: {exc}")
        return 2
    except DevServerError as exc:
        say(f"dev failed: {exc}")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _STOP_ASKED.clear()
