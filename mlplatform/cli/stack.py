"""The stack `mlplatform dev` runs on a state folder: one at a time, and how a terminal reaches a production one.

A second `make prod` on the same state folder took the first one's PostgreSQL cluster for a leftover and deleted it.
A terminal command beside a running `make prod`, without the stack's settings, read and wrote the embedded SQLite
stores instead (and rewrote dagster.yaml to SQLite under the running daemon). So `mlplatform dev` holds a lock on its
state folder while it runs, naming its pid and profile; the production profile also writes the settings it filled
(the throwaway cluster's URLs, the local broker's) to a file only its owner can read, for a terminal to load; and the
other commands refuse to run beside a production stack without them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


from mlplatform.settings import Settings, env_name, env_value

LOCK_FILE = "dev.lock"
IN_USE_FILE = "in-use.lock"  # held shared by each `serve`: see in_use
PRODUCTION_ENV_FILE = "production.env"
PRODUCTION = "production"
# The settings that move a store or the executor off the embedded defaults: a terminal beside a production stack needs them all.
PRODUCTION_SETTINGS = ("event_log_url", "dagster_postgres_url", "mlflow_backend_store_url", "celery_broker_url")
# What else a terminal must share with the stack to reach the same stores: the folder, the tracking server, the cluster.
SHARED_SETTINGS = ("state_dir", "mlflow_ui_url", "dask_scheduler")
LOCK_WAIT_SECONDS = 0.5  # a `status` that looks at the lock holds it shared for an instant: not a running stack


class StackError(RuntimeError):
    """Another stack holds the state folder, or a command would miss the running stack's stores; the message says what to do."""


@dataclass(frozen=True)
class RunningStack:
    pid: int
    profile: str


def production_env_path(state_dir: Path) -> Path:
    return state_dir / PRODUCTION_ENV_FILE


def _read(fd: int) -> RunningStack:
    """Who holds the lock; a holder that has not written yet (it writes right after locking) is waited for briefly."""
    for _ in range(int(LOCK_WAIT_SECONDS / 0.05)):
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            data = json.loads(os.read(fd, 4096))
            return RunningStack(int(data["pid"]), str(data["profile"]))
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return RunningStack(0, "unknown")


def _lock(fd: int) -> bool:
    """The exclusive lock, waiting out a reader's instant; False when a stack holds it."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


@contextmanager
def holding(state_dir: Path, profile: str) -> Iterator[None]:
    """The state folder's lock for as long as the stack runs (released by the kernel if the process dies)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _lock(fd):
            other = _read(fd)
            raise StackError(f"another `mlplatform dev` (pid {other.pid}, {other.profile} profile) already runs on the state folder {state_dir}: "
                             f"stop it first (Ctrl-C in its terminal), or give this one its own {env_name('state_dir')}")
        production_env_path(state_dir).unlink(missing_ok=True)  # a stack killed with SIGKILL left its passwords
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "profile": profile}).encode())
        try:
            yield
        finally:
            production_env_path(state_dir).unlink(missing_ok=True)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


@contextmanager
def in_use(state_dir: Path) -> Iterator[None]:
    """A shared hold on the state folder for as long as a long-running command (`serve`) reads and writes it; several
    may hold it at once. What `demo` looks at before it deletes the folder (`empty_unless_used`). A folder this process cannot
    write (a serving host whose stores are all servers) is served without the hold: nothing there for a demo to delete."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / IN_USE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def empty_unless_used(state_dir: Path) -> str | None:
    """Delete what the state folder holds unless a stack or a prediction service uses it; returns who does, or None
    once it is empty. Both locks are held across the deletion and their files kept: a `serve` starting meanwhile waits
    for its shared hold and then runs on the emptied folder, a `dev` is refused. Before, the check and the deletion were
    two steps, and what started between them lost its files (a `demo` deleted a folder that a `serve` had just opened)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _lock(stack_fd):
            other = _read(stack_fd)
            return f"`mlplatform dev` (pid {other.pid}, {other.profile} profile)"
        serve_fd = os.open(state_dir / IN_USE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(serve_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "a prediction service (`mlplatform serve`)"
            for entry in state_dir.iterdir():
                if entry.name in (LOCK_FILE, IN_USE_FILE):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            return None
        finally:
            os.close(serve_fd)
    finally:
        os.close(stack_fd)


def running_stack(state_dir: Path) -> RunningStack | None:
    """The stack running on the state folder now, or None."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        return None
    finally:
        os.close(fd)


def _shared(settings: Settings) -> dict[str, str]:
    """The settings a terminal must share with a production stack, by environment variable (unset ones left out)."""
    return {env_name(name): env_value(getattr(settings, name)) for name in (*PRODUCTION_SETTINGS, *SHARED_SETTINGS) if getattr(settings, name) is not None}


def write_production_env(settings: Settings) -> Path:
    """The running stack's production settings, state folder and tracking server as a shell file (`export NAME='value'`),
    readable by its owner only since it holds passwords: `. <state>/production.env` gives a terminal the stack's stores.
    The other settings its environment set follow (ports, links, the loop's): without them a terminal's `replay --to
    api` went to the default port and its `materialize` tuned with other settings than the stack (the production probe)."""
    shared = _shared(settings)
    settings_names = {env_name(name) for name in Settings.model_fields}
    others = {name: value for name, value in sorted(os.environ.items()) if name in settings_names and name not in shared}
    path = production_env_path(settings.state_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file already there kept its mode
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.writelines(f"export {name}={shlex.quote(value)}\n" for name, value in {**shared, **others}.items())
    return path


def check_reaches_stack(settings: Settings) -> None:
    """Refuse a command that would use other stores than a production stack running on the same state folder: the
    embedded SQLite ones beside them, or another stack's left in the environment."""
    stack = running_stack(settings.state_dir)
    if stack is None or stack.profile != PRODUCTION:
        return
    env_file = production_env_path(settings.state_dir)
    try:
        wanted = {name: value for name, _, value in (shlex.split(line.removeprefix("export "))[0].partition("=")
                                                     for line in env_file.read_text(encoding="utf-8").splitlines() if line.strip())}
    except (ValueError, UnicodeDecodeError):  # not the file the stack wrote (an unclosed quote, bytes that are not text)
        raise StackError(f"a production stack (`make prod`, pid {stack.pid}) runs on the state folder {settings.state_dir}, but its "
                         f"settings file {env_file} cannot be read: stop the stack and start it again, which writes it anew") from None
    except FileNotFoundError:
        raise StackError(f"a production stack (`make prod`, pid {stack.pid}) is starting or stopping on the state folder {settings.state_dir}: "
                         f"run this again once it prints its `terminal` line, after loading that file") from None
    ours = _shared(settings)
    shared = {env_name(name) for name in (*PRODUCTION_SETTINGS, *SHARED_SETTINGS)} - {env_name("state_dir")}  # the other lines: the stack's, not a must
    differ = sorted(name for name in wanted if name in shared and ours.get(name) != wanted[name])
    if differ:
        raise StackError(f"a production stack (`make prod`, pid {stack.pid}) runs on the state folder {settings.state_dir}; this command's "
                         f"{', '.join(differ)} {'is' if len(differ) == 1 else 'are'} not the stack's, so it would read and write other stores "
                         f"(the embedded SQLite ones, or another stack's). Load the stack's settings first: . {shlex.quote(str(env_file))}")
