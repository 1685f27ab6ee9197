"""`evidently ui` as `mlplatform dev` runs it, with a workspace watcher that outlives a project file read mid-write.

Evidently's watcher reloads a project when its `metadata.json` is created or changed. A snapshot read mid-write is
skipped (its handler catches the JSONDecodeError); a project's is not: the first one read while it was being written
ended the watcher's thread, and no project created after it showed in the UI until a restart (the soak probe: the
drift reports' project links answered 404). Here a project file read mid-write is read again a moment later.

    python -m mlplatform.cli.evidently_ui --workspace <dir> --host 127.0.0.1 --port 3002
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from json import JSONDecodeError
from typing import Any

from evidently.cli import app
from evidently.ui.service.storage.local.watcher import WorkspaceDirHandler

READ_AGAIN_EVERY_S = 0.05
READ_AGAIN_FOR_S = 5.0  # a metadata.json is a few kB: its writer is done long before this


def patient(on_project_event: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """The handler, read again while the project file it reads is not yet whole JSON; a file still not JSON after
    READ_AGAIN_FOR_S is left (its next change reloads it) and the watcher goes on."""

    def handle(handler: Any, event: Any) -> None:
        deadline = time.monotonic() + READ_AGAIN_FOR_S
        while True:
            try:
                return on_project_event(handler, event)
            except JSONDecodeError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(READ_AGAIN_EVERY_S)

    return handle


def main() -> None:
    WorkspaceDirHandler.on_project_event = patient(WorkspaceDirHandler.on_project_event)  # type: ignore[method-assign]
    sys.exit(app(["ui", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
