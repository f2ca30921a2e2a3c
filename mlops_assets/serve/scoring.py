"""The scoring thread: requests queue up, and each pass scores everything waiting at once.

One feature query and one model call per pass, whatever the number of requests in it, so the
cost per request falls as load rises instead of the queue growing: at low load a pass holds one
request and adds no wait; under load the requests that arrived during a pass form the next.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

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
class Scored:
    """What one request got: its features, scores and decisions, from one model version."""

    model: LoadedModel
    features: pd.DataFrame
    scores: np.ndarray  # float64
    decisions: np.ndarray  # bool, decided in the scorer's own dtype as batch decides
    endpoint: str
    served_at: datetime
    latency_ms: float  # from arrival to scores (queue wait included)

    def predictions(self) -> list[dict[str, Any]]:
        return [
            {
                "transaction_id": transaction_id,
                "fraud_score": float(score),
                "is_fraud_predicted": bool(decision),
            }
            for transaction_id, score, decision in zip(
                self.features["transaction_id"], self.scores, self.decisions, strict=True
            )
        ]


def score_frame(model: LoadedModel, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Scores (float64) and decisions of a feature frame, decided as the batch path decides."""
    raw = np.asarray(model.scorer(features))
    return raw.astype(np.float64), raw >= model.threshold


class ScoringWorker:
    """A daemon thread that scores queued requests in passes of at most ``max_rows`` rows and
    hands every scored request to ``on_scored`` after its caller has it."""

    def __init__(
        self,
        holder: ModelHolder,
        features: OnlineFeatures,
        max_rows: int = 1000,
        on_scored: Callable[[list[Scored]], None] | None = None,
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
        self.features.close()

    def _score(self, jobs: list[ScoreJob]) -> None:
        self.passes += 1
        self.jobs += len(jobs)
        model = self.holder.current  # the whole pass scores with this version
        if model is None:
            for job in jobs:
                job.future.set_exception(NotReady())
            return
        try:
            frames = self.features.compute_groups([job.rows for job in jobs])
            scores, decisions = score_frame(model, pd.concat(frames, ignore_index=True))
        except Exception as error:  # one bad pass fails its requests, not the thread
            log.exception("scoring pass of %d request(s) failed", len(jobs))
            for job in jobs:
                job.future.set_exception(error)
            return
        finished = time.perf_counter()
        served_at = datetime.now(UTC)
        scored: list[Scored] = []
        start = 0
        for job, frame in zip(jobs, frames, strict=True):
            end = start + len(frame)
            result = Scored(
                model,
                frame,
                scores[start:end],
                decisions[start:end],
                job.endpoint,
                served_at,
                (finished - job.received) * 1000.0,
            )
            start = end
            job.future.set_result(result)
            scored.append(result)
        if self.on_scored is not None:
            try:
                self.on_scored(scored)
            except Exception:  # the log and shadow are never the request's problem
                log.exception("handing scored requests to the prediction log failed")
