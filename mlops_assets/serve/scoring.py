"""The scoring thread: requests queue up, and each pass scores everything waiting at once.

One feature computation and one model call per pass, whatever the number of requests in it, so
the cost per request falls as load rises instead of the queue growing: at low load a pass holds
one request and adds no wait; under load the requests that arrived during a pass form the next.
Requests stay independent (see ``features_for_groups``). Each pass takes the model once, so a
request is scored entirely by the version it started with while a reload swaps in another.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_assets.serve.model_holder import LoadedModel, ModelHolder
from mlops_assets.serve.online_features import OnlineFeatures

log = logging.getLogger(__name__)


class NotReady(Exception):
    """No model is loaded yet."""


@dataclass
class ScoreJob:
    """One request's parsed rows, waiting for their scores."""

    rows: list[dict[str, Any]]
    endpoint: str
    received: float = field(default_factory=time.perf_counter)
    future: Future[Scored] = field(default_factory=Future)


@dataclass(frozen=True)
class ScoredPass:
    """One pass of the scoring thread: the features, scores and decisions of all its requests
    (rows in request order), from one model version. Shared, never copied, by the requests'
    answers, the shadow scorer and the prediction log."""

    model: LoadedModel
    table: pa.Table  # the features as computed (``transaction_features`` columns)
    features: pd.DataFrame | None  # the same, as the model reads them (None once logged)
    transaction_ids: np.ndarray
    scores: np.ndarray  # float64
    decisions: np.ndarray  # bool, decided in the scorer's own dtype as batch decides
    endpoints: list[str]  # per request
    sizes: list[int]  # rows per request
    latencies_ms: list[float]  # per request: from arrival to scores (queue wait included)
    served_at: datetime

    @property
    def rows(self) -> int:
        return len(self.scores)

    def without_frame(self) -> ScoredPass:
        """The pass without its pandas frame: what waits in the prediction log holds a few
        Arrow and NumPy buffers, not the thousands of Python objects of a frame (which made
        the garbage collector stall requests)."""
        return replace(self, features=None)


@dataclass(frozen=True)
class Scored:
    """What one request got: rows ``start:end`` of a scored pass."""

    scored_pass: ScoredPass
    start: int
    end: int

    @property
    def model(self) -> LoadedModel:
        return self.scored_pass.model

    def predictions(self) -> list[dict[str, Any]]:
        scored = self.scored_pass
        return [
            {
                "transaction_id": transaction_id,
                "fraud_score": score,
                "is_fraud_predicted": decision,
            }
            for transaction_id, score, decision in zip(
                scored.transaction_ids[self.start : self.end].tolist(),
                scored.scores[self.start : self.end].tolist(),
                scored.decisions[self.start : self.end].tolist(),
                strict=True,
            )
        ]


def score_frame(model: LoadedModel, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Scores (float64) and decisions of a feature frame, decided as the batch path decides."""
    raw = np.asarray(model.scorer(features))
    return raw.astype(np.float64), raw >= model.threshold


class ScoringWorker:
    """A daemon thread that scores queued requests in passes of at most ``max_rows`` rows and
    hands every scored pass to ``on_scored`` after its callers have their answers.

    One thread: a second one could start a pass while another runs (XGBoost releases the GIL
    while it computes), but measured at 200 requests/s on two cores it did not lower the
    latency, since the passes' Python parts then contend for the GIL.
    """

    def __init__(
        self,
        holder: ModelHolder,
        features: OnlineFeatures,
        max_rows: int = 1000,
        on_scored: Callable[[ScoredPass], None] | None = None,
    ) -> None:
        self.holder = holder
        self.features = features
        self.max_rows = max_rows
        self.on_scored = on_scored
        self._queue: queue.SimpleQueue[ScoreJob | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.jobs = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="scoring", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Score what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, rows: list[dict[str, Any]], endpoint: str) -> Future[Scored]:
        job = ScoreJob(rows, endpoint)
        if self._thread is None:
            job.future.set_exception(RuntimeError("the scoring thread is not running"))
        else:
            self._queue.put(job)
        return job.future

    def _run(self) -> None:
        carried: ScoreJob | None = None
        while True:
            job = carried or self._queue.get()
            carried = None
            if job is None:
                break
            jobs, rows = [job], len(job.rows)
            while rows < self.max_rows:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    self._queue.put(None)  # stop once the requests before it are scored
                    break
                if rows + len(waiting.rows) > self.max_rows:
                    carried = waiting
                    break
                jobs.append(waiting)
                rows += len(waiting.rows)
            self._score(jobs)

    def _score(self, jobs: list[ScoreJob]) -> None:
        self.passes += 1
        self.jobs += len(jobs)
        model = self.holder.current  # the whole pass scores with this version
        if model is None:
            for job in jobs:
                job.future.set_exception(NotReady())
            return
        try:
            table = self.features.compute_groups([job.rows for job in jobs])
            features = table.to_pandas()
            scores, decisions = score_frame(model, features)
        except Exception as error:  # one bad pass fails its requests, not the thread
            log.exception("scoring pass of %d request(s) failed", len(jobs))
            for job in jobs:
                job.future.set_exception(error)
            return
        finished = time.perf_counter()
        scored = ScoredPass(
            model=model,
            table=table,
            features=features,
            transaction_ids=features["transaction_id"].to_numpy(),
            scores=scores,
            decisions=decisions,
            endpoints=[job.endpoint for job in jobs],
            sizes=[len(job.rows) for job in jobs],
            latencies_ms=[(finished - job.received) * 1000.0 for job in jobs],
            served_at=datetime.now(UTC),
        )
        start = 0
        for job in jobs:
            job.future.set_result(Scored(scored, start, start + len(job.rows)))
            start += len(job.rows)
        if self.on_scored is not None:
            try:
                self.on_scored(scored)
            except Exception:  # the log and shadow are never the request's problem
                log.exception("handing a scored pass to the prediction log failed")
