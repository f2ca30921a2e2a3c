"""The bronze ingestion's Delta committer: a thread that commits read batches (rows and next
offsets, ``BronzeWriter.write``) one after the other, in the order handed over, while the
consumer thread reads the next batch (delta-rs releases the GIL while it writes Parquet).

At most one batch waits while one is written, so reading never runs far ahead of what is
committed. A write that fails is retried with back-off until it works or the committer is
stopped (the batch is then read again after a restart). A write refused because another writer
moved the offsets (``OffsetsMoved``) is reported, and every batch of the same generation behind
it is dropped unwritten: the consumer thread resumes from the table's offsets and starts a new
generation, so no batch read before that can leave a gap. Results go back to the consumer
thread, which alone talks to Kafka.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlops_assets.stream.bronze_rows import MessageBatch
from mlops_assets.stream.bronze_writer import BronzeWriter, OffsetsMoved

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handed:
    """A read batch, when its reading started, and the generation it was read in."""

    batch: MessageBatch
    started: float
    generation: int


@dataclass(frozen=True)
class Committed:
    """A handed batch now in the table at ``version``; or not (``refused`` says why)."""

    handed: Handed
    version: int | None
    seconds: float  # from the start of its reading to its commit
    refused: str | None = None

    @property
    def batch(self) -> MessageBatch:
        return self.handed.batch


class DeltaCommitter:
    """Commits handed-over batches in order on a thread of its own."""

    def __init__(
        self,
        writer: BronzeWriter,
        max_backoff_seconds: float = 30.0,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.writer = writer
        self.max_backoff_seconds = max_backoff_seconds
        self.on_failure = on_failure or (lambda: None)
        self._queue: queue.Queue[Handed | None] = queue.Queue(maxsize=1)
        self._done: queue.SimpleQueue[Committed] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._handed = 0
        self._finished = 0
        self._refused_generation = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bronze-committer", daemon=True)
        self._thread.start()

    def offer(self, handed: Handed, timeout: float) -> bool:
        """Hand a batch over; False when the committer is still busy after ``timeout``."""
        try:
            self._queue.put(handed, timeout=timeout)
        except queue.Full:
            return False
        with self._lock:
            self._handed += 1
        return True

    def results(self) -> list[Committed]:
        """What was committed (or refused) since the last call, in order."""
        done = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every handed-over batch is committed or refused."""
        with self._lock:
            return self._lock.wait_for(lambda: self._finished >= self._handed, timeout)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._finished < self._handed

    def stop(self, timeout: float = 60.0) -> None:
        """Commit what was handed over (unless a write keeps failing past ``timeout``), then
        end the thread."""
        if not self.drain(timeout):
            self._stop.set()  # a failing write gives up: its batch is read again later
        self._queue.put(None)
        self._thread.join(10.0)

    def _run(self) -> None:
        while True:
            handed = self._queue.get()
            if handed is None:
                return
            if handed.generation <= self._refused_generation:
                result = Committed(handed, None, 0.0, "read before the offsets moved")
            else:
                result = self._commit(handed)
                if result.refused is not None:
                    self._refused_generation = handed.generation
            self._done.put(result)
            with self._lock:
                self._finished += 1
                self._lock.notify_all()

    def _commit(self, handed: Handed) -> Committed:
        backoff = 0.5
        while True:
            try:
                version = self.writer.write(handed.batch)
                return Committed(handed, version, time.perf_counter() - handed.started)
            except OffsetsMoved as moved:
                return Committed(handed, None, 0.0, str(moved))
            except Exception as error:
                self.on_failure()
                log.error("the bronze write failed, retrying in %.1fs: %s", backoff, error)
                if self._stop.wait(backoff):
                    log.error("stopping with an uncommitted batch: it is read again later")
                    return Committed(handed, None, 0.0, "not committed at stop")
                backoff = min(backoff * 2, self.max_backoff_seconds)
