"""Shadow mode: the challenger scores what the champion served, off the request path.

Requests are answered by the champion first; their features then queue here, and a thread of
its own scores them with the version behind the shadow alias (``challenger``) in one model call
per pass, and hands both verdicts to the prediction log side by side. When the queue is over
``max_pending_rows`` (the shadow cannot keep up) or no shadow model is loaded, requests are
logged without a shadow score and counted as skipped; the champion's answers never wait.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import numpy as np
import pandas as pd

from mlops_assets.serve.model_holder import ModelHolder
from mlops_assets.serve.prediction_log import ServedRecord, ShadowScores
from mlops_assets.serve.scoring import ScoredPass, score_frame

log = logging.getLogger(__name__)


class ShadowScorer:
    """Scores served requests with ``holder``'s model and passes the pairs to ``sink``."""

    def __init__(
        self,
        holder: ModelHolder,
        sink: Callable[[list[ServedRecord]], None],
        max_pending_rows: int = 50_000,
        on_compared: Callable[[int, int], None] | None = None,
        on_skipped: Callable[[int], None] | None = None,
    ) -> None:
        self.holder = holder
        self.sink = sink
        self.max_pending_rows = max_pending_rows
        self._on_compared = on_compared or (lambda rows, disagreements: None)
        self._on_skipped = on_skipped or (lambda rows: None)
        self._queue: queue.SimpleQueue[ScoredPass | None] = queue.SimpleQueue()
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.compared_rows = 0
        self.skipped_rows = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Score what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, scored: ScoredPass) -> None:
        """Queue a scored pass for the shadow (never blocks)."""
        with self._lock:
            full = self._pending_rows + scored.rows > self.max_pending_rows
            if not full:
                self._pending_rows += scored.rows
        if full or self._thread is None:
            self._skip([scored])
            return
        self._queue.put(scored)

    def _skip(self, passes: list[ScoredPass]) -> None:
        rows = sum(p.rows for p in passes)
        self.skipped_rows += rows
        self._on_skipped(rows)
        self.sink([ServedRecord(p) for p in passes])

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while True:  # everything waiting goes into this pass
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            rows = sum(p.rows for p in batch)
            try:
                self._score(batch)
            except Exception:
                log.exception("shadow scoring of %d row(s) failed; logged without it", rows)
                self._skip(batch)
            finally:
                with self._lock:
                    self._pending_rows -= rows
            if stop:
                return

    def _score(self, batch: list[ScoredPass]) -> None:
        model = self.holder.current
        if model is None:
            self._skip(batch)
            return
        frames = [p.features for p in batch if p.features is not None]
        features = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        scores, decisions = score_frame(model, features)
        records: list[ServedRecord] = []
        start = 0
        disagreements = 0
        for served in batch:
            end = start + served.rows
            shadow = ShadowScores(model.version, scores[start:end], decisions[start:end])
            disagreements += int(np.count_nonzero(shadow.decisions != served.decisions))
            records.append(ServedRecord(served, shadow))
            start = end
        self.compared_rows += start
        self._on_compared(start, disagreements)
        self.sink(records)
