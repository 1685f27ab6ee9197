"""A throwaway PostgreSQL cluster on 127.0.0.1 from Debian's server binaries: the production profile of
`mlplatform dev` (in the state folder), the tests and the benchmarks (in a temporary folder) share it.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user and every server
command runs through `runuser`. The cluster's folder is removed when it is stopped.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from mlplatform.ports import free_port

SERVER_USER = "postgres"
START_ATTEMPTS = 3  # a free port found by binding can be taken by someone else before the server binds it


def find_bin_dir() -> Path | None:
    """The newest installed /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb") if Path(p).with_name("pg_ctl").exists()]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, default=None)


def missing_reason() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if find_bin_dir() is None:
        return "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); `apt-get install postgresql` or `make system-deps`"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no `{SERVER_USER}` user to run PostgreSQL as"
    return None


class PostgresCluster:
    """initdb + pg_ctl in a temporary folder, listening on 127.0.0.1 only (no Unix socket), password auth."""

    def __init__(self, durable: bool = False, settings: dict[str, str] | None = None, root: Path | None = None) -> None:
        """`durable=False` turns fsync off: tests need a real server, not a crash-safe one; benchmarks pass True.

        `settings` are extra postgresql.conf lines (a benchmark sizes the buffers as a production server would).
        `root` is the cluster's folder (default: a new temporary one); a leftover cluster there is stopped and replaced.
        """
        self.bin_dir = find_bin_dir()
        if self.bin_dir is None:
            raise RuntimeError(missing_reason())
        self.durable = durable
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="mlplatform-pg-")) if root is None else root
        self.data = self.root / "data"
        self.password = secrets.token_hex(12)
        self.port = 0
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        # A session of its own: a Ctrl-C in the terminal reaches the supervisor, which stops the server in order.
        done = subprocess.run(command, capture_output=True, text=True, check=False, start_new_session=True)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def _prepare_root(self) -> None:
        """An empty folder; a cluster left there by an earlier run killed before it could stop its server is stopped and removed."""
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass  # no server behind the stale pid file
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)

    def start(self) -> "PostgresCluster":
        if not self.root.exists() or any(self.root.iterdir()):
            self._prepare_root()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if self._as_root:
            owner = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SERVER_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale")
        pwfile.unlink()
        last_error = ""
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            settings = {"listen_addresses": "'127.0.0.1'", "port": str(self.port), "unix_socket_directories": "''", "max_connections": "100"}
            if not self.durable:
                settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
            settings |= self.settings
            with (self.data / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
                conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            try:
                return self.resume()
            except RuntimeError as exc:
                last_error = f"{exc}\n{self.log_tail()}"
        raise RuntimeError(f"PostgreSQL did not start after {START_ATTEMPTS} attempts: {last_error}")

    def pause(self) -> None:
        """Stop the server, keeping its data and port (clients see it down, as in a restart): undone by `resume`."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> "PostgresCluster":
        """Start the server of the initialised cluster on its configured port."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        return self

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server: the postmaster, its live processes and those it has reaped (Linux /proc)."""
        postmaster = int((self.data / "postmaster.pid").read_text(encoding="utf-8").split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
            except OSError:  # the process ended while we looked
                continue
            pid, ppid = int(stat.parent.name), int(fields[1])
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            elif ppid == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def log_tail(self, lines: int = 20) -> str:
        log = self.root / "server.log"
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        return f"postgresql://{SERVER_USER}:{self.password if password is None else password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (default: a random name); returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.port:
            self.pause()
        shutil.rmtree(self.root, ignore_errors=True)
