"""A thread that calls a function every ``seconds`` until stopped (the alias and history poll)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicRefresh:
    """Runs ``refresh`` every ``seconds`` in a daemon thread; an error is logged, not raised,
    and the next round runs as planned."""

    def __init__(self, refresh: Callable[[], object], seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"refresh interval must be > 0 seconds, got {seconds}")
        self._refresh = refresh
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="refresh", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self._refresh()
            except Exception:
                log.exception("scheduled refresh failed; the next runs in %.0f s", self.seconds)
            self.rounds += 1
