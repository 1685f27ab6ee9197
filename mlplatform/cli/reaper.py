"""Stops a stack's servers when the `mlplatform dev` that started them dies without stopping them (SIGKILL, the OOM killer).

Each server runs in a session of its own, out of the terminal's reach, so before nothing stopped them: they ran on
without a supervisor, holding the ports and the state the next `make dev` needs. The reaper is a small child of the
supervisor reading, from a pipe, the process groups it starts; a supervisor that stops in order says `release` last.
A pipe that closes without it means the supervisor is gone, and the reaper stops every group as `dev` would have.
(The production profile's PostgreSQL cluster is not a group here: the next `make prod` stops a leftover one first.)

Run as a script (not through the package) so it starts in a few milliseconds and imports nothing of the platform.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

RELEASE = "release"
GRACE_SECONDS = 15.0  # as `dev` gives its servers: SIGINT, then SIGKILL for what is left


class Reaper:
    """The supervisor's end of the pipe. Writing fails only when the reaper itself was killed: the stack then runs on
    without its safety net, as before, rather than failing."""

    def __init__(self, stopping: Path | None = None) -> None:
        """`stopping`: the file to write before the groups are stopped (the stack's runs then start no step again)."""
        # No environment (isolated mode needs none): what looks for a stack's processes by its settings does not find it.
        self.process = subprocess.Popen([sys.executable, "-I", __file__, *([str(stopping)] if stopping else [])], stdin=subprocess.PIPE, text=True,
                                        env={}, start_new_session=True)

    def watch(self, group: int) -> None:
        """Stop process group `group` if this process dies before `release`."""
        self._say(f"{group}\n")

    def release(self) -> None:
        """The stack stopped in order: the reaper exits without signalling anything."""
        self._say(f"{RELEASE}\n")
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        self.process.wait()

    def _say(self, line: str) -> None:
        if self.process.stdin is None:
            return
        try:
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except OSError:
            pass

    def __enter__(self) -> "Reaper":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.release()


def _alive(groups: list[int]) -> list[int]:
    left = []
    for group in groups:
        try:
            os.killpg(group, 0)
            left.append(group)
        except ProcessLookupError:
            continue
        except PermissionError:  # a group of another user's processes now: the number was reused, not ours
            continue
    return left


def reap(groups: list[int], grace_seconds: float) -> None:
    """SIGINT to every group still there, SIGKILL to what is left after the grace period."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        for group in _alive(groups):
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                continue
        deadline = time.monotonic() + (grace_seconds if sig == signal.SIGINT else 0.0)
        while _alive(groups) and time.monotonic() < deadline:
            time.sleep(0.2)


def main() -> int:
    groups: list[int] = []
    for line in sys.stdin:
        if line.strip() == RELEASE:
            return 0
        if line.strip().isdigit():
            groups.append(int(line))
    if len(sys.argv) > 1:  # before any signal: a step its interrupt sends to retry finds it there
        try:
            Path(sys.argv[1]).touch()
        except OSError:
            pass
    reap(groups, GRACE_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
