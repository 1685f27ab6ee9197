"""A serving process's background loops (champion watcher, live-quality gauges, shadow challenger): one daemon thread
each, started with the app and stopped with it, so shutdown waits for a loop's current round instead of cutting it."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


class BackgroundLoop(ABC):
    """Runs `self._run` on a daemon thread named `name`; `_run` returns once `self._stop` is set."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @abstractmethod
    def _run(self) -> None:
        """One loop until `self._stop` is set."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
