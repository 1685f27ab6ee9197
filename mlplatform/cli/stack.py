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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from mlplatform.settings import Settings, env_name

LOCK_FILE = "dev.lock"
PRODUCTION_ENV_FILE = "production.env"
PRODUCTION = "production"
# The settings that move a store or the executor off the embedded defaults: a terminal beside a production stack needs them all.
PRODUCTION_SETTINGS = ("event_log_url", "dagster_postgres_url", "mlflow_backend_store_url", "celery_broker_url")


class StackError(RuntimeError):
    """Another stack holds the state folder, or a command would miss the running stack's stores; the message says what to do."""


@dataclass(frozen=True)
class RunningStack:
    pid: int
    profile: str


def production_env_path(state_dir: Path) -> Path:
    return state_dir / PRODUCTION_ENV_FILE


def _read(fd: int) -> RunningStack:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        data = json.loads(os.read(fd, 4096) or b"{}")
        return RunningStack(int(data["pid"]), str(data["profile"]))
    except (ValueError, KeyError, TypeError):
        return RunningStack(0, "unknown")


@contextmanager
def holding(state_dir: Path, profile: str) -> Iterator[None]:
    """The state folder's lock for as long as the stack runs (released by the kernel if the process dies)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read(fd)
            raise StackError(f"another `mlplatform dev` (pid {other.pid}, {other.profile} profile) already runs on the state folder {state_dir}: "
                             f"stop it first (Ctrl-C in its terminal), or give this one its own {env_name('state_dir')}") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "profile": profile}).encode())
        try:
            yield
        finally:
            production_env_path(state_dir).unlink(missing_ok=True)
    finally:
        os.close(fd)


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


def write_production_env(settings: Settings) -> Path:
    """The production settings of the running stack as a shell file (`export NAME='value'`), readable by its owner only
    since it holds passwords: `. <state>/production.env` gives a terminal the stack's stores."""
    path = production_env_path(settings.state_dir)
    lines = []
    for name in PRODUCTION_SETTINGS:
        value = getattr(settings, name)
        if value is not None:
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            lines.append(f"export {env_name(name)}={shlex.quote(text)}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.writelines(lines)
    return path


def check_reaches_stack(settings: Settings) -> None:
    """Refuse a command that would use the embedded stores beside a production stack running on the same state folder."""
    stack = running_stack(settings.state_dir)
    if stack is None or stack.profile != PRODUCTION:
        return
    missing = [env_name(name) for name in PRODUCTION_SETTINGS if getattr(settings, name) is None]
    if missing:
        raise StackError(f"a production stack (`make prod`, pid {stack.pid}) runs on the state folder {settings.state_dir}, its stores on "
                         f"PostgreSQL; without {', '.join(missing)} this command would read and write the embedded SQLite stores beside "
                         f"them (and switch dagster.yaml back to SQLite). Load the stack's settings first: . {production_env_path(settings.state_dir)}")
