"""The scoring thread: requests queue up, and each pass scores everything waiting at once.

One feature computation and one model call per pass, whatever the number of requests in it, so
the cost per request falls as load rises instead of the queue growing: at low load a pass holds
one request and adds no wait; under load the requests that arrived during a pass form the next.
Requests stay independent (see ``features_for_groups``). Each pass takes the model once, so a
request is scored entirely by the version it started with while a reload swaps in another.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_assets.serve.canary_control import CanaryController
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
    explain: bool = False  # add each row's top feature contributions
    received: float = field(default_factory=time.perf_counter)
    future: Future[Scored] = field(default_factory=Future)


@dataclass(frozen=True)
class ScoredPass:
    """One pass of the scoring thread: the features, scores and decisions of all its requests
    (rows in request order), served by the champion and, on the rows routed to it, a canary.
    Shared, never copied, by the requests' answers, the shadow scorer and the prediction log."""

    model: LoadedModel  # the champion: it scored every row and decided the unrouted ones
    table: pa.Table  # the features as computed (``transaction_features`` columns)
    features: pd.DataFrame | None  # the same, as the model reads them (None once logged)
    transaction_ids: np.ndarray
    scores: np.ndarray  # float64
    decisions: np.ndarray  # bool, decided in the scorer's own dtype as batch decides
    endpoints: list[str]  # per request
    sizes: list[int]  # rows per request
    latencies_ms: list[float]  # per request: from arrival to scores (queue wait included)
    served_at: datetime
    canary: LoadedModel | None = None  # the canary that decided ``canary_rows``
    canary_rows: np.ndarray | None = None  # bool mask: rows decided by the canary

    @property
    def rows(self) -> int:
        return len(self.scores)

    def _per_row(self, champion: Any, canary: Any, dtype: Any, rows: slice) -> np.ndarray:
        values = np.full(len(range(*rows.indices(self.rows))), champion, dtype=dtype)
        if self.canary is not None and self.canary_rows is not None:
            values[self.canary_rows[rows]] = canary
        return values

    def row_versions(self, rows: slice = slice(None)) -> np.ndarray:
        """The model version that decided each of these rows (default: all)."""
        canary = int(self.canary.version) if self.canary else 0
        return self._per_row(int(self.model.version), canary, np.int64, rows)

    def row_thresholds(self, rows: slice = slice(None)) -> np.ndarray:
        canary = self.canary.threshold if self.canary else 0.0
        return self._per_row(self.model.threshold, canary, np.float64, rows)

    def row_aliases(self, rows: slice = slice(None)) -> np.ndarray:
        canary = self.canary.model.alias if self.canary else ""
        return self._per_row(self.model.model.alias, canary, object, rows)

    def deciding_model(self, row: int) -> LoadedModel:
        if self.canary is not None and self.canary_rows is not None and self.canary_rows[row]:
            return self.canary
        return self.model

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
    explanations: list[list[dict[str, Any]]] | None = None  # when the request asked
    explain_error: str | None = None  # why they could not be computed (the scores stand)

    @property
    def model(self) -> LoadedModel:
        return self.scored_pass.model

    def predictions(self) -> list[dict[str, Any]]:
        """Each row's answer, naming the version (and alias) that decided it."""
        scored = self.scored_pass
        window = slice(self.start, self.end)
        return [
            {
                "transaction_id": transaction_id,
                "fraud_score": score,
                "is_fraud_predicted": decision,
                "model_version": version,
                "model_alias": alias,
                "threshold": threshold,
            }
            for transaction_id, score, decision, version, alias, threshold in zip(
                scored.transaction_ids[window].tolist(),
                scored.scores[window].tolist(),
                scored.decisions[window].tolist(),
                scored.row_versions(window).tolist(),
                scored.row_aliases(window).tolist(),
                scored.row_thresholds(window).tolist(),
                strict=True,
            )
        ]


def score_frame(model: LoadedModel, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Scores (float64) and decisions of a feature frame, decided as the batch path decides."""
    raw = np.asarray(model.scorer(features))
    return raw.astype(np.float64), raw >= model.threshold


def _resolve(future: Future[Scored], result: Scored) -> None:
    """Answer a request unless its caller gave up (a cancelled future must not kill the
    scoring thread)."""
    with contextlib.suppress(InvalidStateError):
        future.set_result(result)


def _fail(future: Future[Scored], error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)


def _explained(results: list[Scored]) -> list[Scored]:
    """The answers of a pass's explaining requests with their explanations, computed in one go
    for all of them (by the model that decided each row); a failure leaves the scores standing
    and says why."""
    from mlops_assets.serve.explain import explain_rows

    scored_pass = results[0].scored_pass
    rows = [row for result in results for row in range(result.start, result.end)]
    try:
        answers = explain_rows(scored_pass, rows)
    except Exception as error:
        log.exception("explaining %d row(s) failed", len(rows))
        reason = f"{type(error).__name__}: {error}"
        return [replace(result, explain_error=reason) for result in results]
    return [
        replace(result, explanations=[answers[row] for row in range(result.start, result.end)])
        for result in results
    ]


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
        canary: CanaryController | None = None,
    ) -> None:
        self.holder = holder
        self.canary = canary
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

    def submit(
        self, rows: list[dict[str, Any]], endpoint: str, explain: bool = False
    ) -> Future[Scored]:
        job = ScoreJob(rows, endpoint, explain)
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
                _fail(job.future, NotReady())
            return
        try:
            table = self.features.compute_groups([job.rows for job in jobs])
            features = table.to_pandas()
            started = time.perf_counter()
            scores, decisions = score_frame(model, features)
            champion_ms = (time.perf_counter() - started) * 1000.0
        except Exception as error:  # one bad pass fails its requests, not the thread
            log.exception("scoring pass of %d request(s) failed", len(jobs))
            for job in jobs:
                _fail(job.future, error)
            return
        canary = (
            self.canary.score(features, scores, decisions, champion_ms)
            if self.canary is not None
            else None
        )
        if canary is not None:  # the routed rows get the canary's verdicts
            scores, decisions = scores.copy(), decisions.copy()
            scores[canary.rows] = canary.scores
            decisions[canary.rows] = canary.decisions
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
            canary=canary.model if canary is not None else None,
            canary_rows=canary.rows if canary is not None else None,
        )
        explaining: list[tuple[ScoreJob, Scored]] = []
        start = 0
        for job in jobs:  # the answers that need nothing more go first
            result = Scored(scored, start, start + len(job.rows))
            if job.explain:
                explaining.append((job, result))
            else:
                _resolve(job.future, result)
            start += len(job.rows)
        if explaining:
            explained = _explained([result for _, result in explaining])
            for (job, _), result in zip(explaining, explained, strict=True):
                _resolve(job.future, result)
        if self.on_scored is not None:
            try:
                self.on_scored(scored)
            except Exception:  # the log and shadow are never the request's problem
                log.exception("handing a scored pass to the prediction log failed")
