"""Canary release, the pure part: which transactions the canary decides, and when it must stop.

Routing is sticky per origin account: an account's bucket is the CRC-32 of its ``nameOrig``
modulo 10,000, and the canary decides the accounts whose bucket is below ``share`` x 10,000. So
one customer sees one model, and raising the share only adds accounts (an account routed at 5 %
stays routed at 20 %).

``CanaryGuard`` compares the canary with the champion on the traffic of the canary's run and
returns the first broken SLO (``CanarySlo``):

- **errors**: the canary's model call failed on more than ``max_error_rate`` of its passes (its
  rows were scored by the champion instead, so no request failed);
- **latency**: the canary's p99 model-call time is over ``max_latency_ratio`` times the
  champion's plus ``latency_slack_ms``;
- **score shift**: the two-sample Kolmogorov-Smirnov statistic between the canary's and the
  champion's scores is over ``max_score_shift`` (and significant at p < 0.001);
- **flagged share**: the canary flags ``max_flagged_jump`` more of its transactions than the
  champion flags of the same transactions.

The champion scores every row of a pass (one model call, as without a canary), so each routed
transaction is judged by both models: the comparisons are paired, on the same traffic.

Every rule waits for ``min_rows`` rows (``min_passes`` passes for errors and latency) so a few
requests cannot decide. A canary that has held every SLO for ``hold_seconds`` and ``hold_rows``
rows is reported as held (ready for promotion through the gate).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

BUCKETS = 10_000


def account_buckets(accounts: Sequence[str] | np.ndarray) -> np.ndarray:
    """Each account's routing bucket in ``[0, BUCKETS)`` (stable across processes and runs)."""
    return np.fromiter(
        (zlib.crc32(str(account).encode()) % BUCKETS for account in accounts),
        dtype=np.int32,
        count=len(accounts),
    )


def routed_to_canary(accounts: Sequence[str] | np.ndarray, share: float) -> np.ndarray:
    """Which of these transactions (by origin account) the canary decides at ``share``."""
    if share <= 0:
        return np.zeros(len(accounts), dtype=bool)
    return account_buckets(accounts) < round(min(share, 1.0) * BUCKETS)


@dataclass(frozen=True)
class CanarySlo:
    """The service levels a canary must hold against the champion (see the module doc)."""

    max_error_rate: float = 0.01
    max_latency_ratio: float = 2.0
    latency_slack_ms: float = 5.0
    max_score_shift: float = 0.2
    max_flagged_jump: float = 0.05
    min_rows: int = 200
    min_passes: int = 20
    window_rows: int = 20_000
    hold_seconds: float = 3600.0
    hold_rows: int = 5000

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule} (got {value})"
            for name, value, rule, ok in (
                ("max_error_rate", self.max_error_rate, "in [0, 1)", 0 <= self.max_error_rate < 1),
                ("max_latency_ratio", self.max_latency_ratio, ">= 1", self.max_latency_ratio >= 1),
                (
                    "max_score_shift",
                    self.max_score_shift,
                    "in (0, 1]",
                    0 < self.max_score_shift <= 1,
                ),
                (
                    "max_flagged_jump",
                    self.max_flagged_jump,
                    "in (0, 1]",
                    0 < self.max_flagged_jump <= 1,
                ),
                ("min_rows", self.min_rows, ">= 1", self.min_rows >= 1),
                ("min_passes", self.min_passes, ">= 1", self.min_passes >= 1),
                ("window_rows", self.window_rows, ">= min_rows", self.window_rows >= self.min_rows),
                ("hold_seconds", self.hold_seconds, ">= 0", self.hold_seconds >= 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError("invalid canary SLOs: " + "; ".join(problems))


@dataclass(frozen=True)
class Breach:
    """The SLO a canary broke, with the figures that broke it."""

    rule: str  # errors | latency | score_shift | flagged_share
    reason: str
    canary: float
    champion: float


@dataclass
class _Side:
    """Recent figures of one side (champion or canary)."""

    window_rows: int
    scores: deque[np.ndarray] = field(default_factory=deque)
    flagged: deque[np.ndarray] = field(default_factory=deque)
    rows_in_window: int = 0
    call_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    passes: int = 0
    errors: int = 0
    rows: int = 0

    def add(self, scores: np.ndarray, flagged: np.ndarray) -> None:
        self.scores.append(scores)
        self.flagged.append(flagged)
        self.rows_in_window += len(scores)
        self.rows += len(scores)
        while self.rows_in_window - len(self.scores[0]) >= self.window_rows:
            self.rows_in_window -= len(self.scores.popleft())
            self.flagged.popleft()

    def all_scores(self) -> np.ndarray:
        return np.concatenate(self.scores) if self.scores else np.empty(0)

    def flagged_share(self) -> float:
        if not self.flagged:
            return 0.0
        return float(sum(int(f.sum()) for f in self.flagged) / self.rows_in_window)

    def p99_ms(self) -> float:
        return float(np.percentile(np.fromiter(self.call_ms, float), 99)) if self.call_ms else 0.0


class CanaryGuard:
    """Watches one canary version against the champion (thread-safe: the scoring thread
    observes, a watcher thread judges)."""

    def __init__(
        self, version: str, slo: CanarySlo, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.version = version
        self.slo = slo
        self._now = now
        self.started = now()
        self._lock = threading.Lock()
        self._canary = _Side(slo.window_rows)
        self._champion = _Side(slo.window_rows)
        self.breach: Breach | None = None

    def observe(
        self,
        champion_ms: float,
        champion_scores: np.ndarray,
        champion_flagged: np.ndarray,
        canary_scores: np.ndarray | None = None,
        canary_flagged: np.ndarray | None = None,
        canary_ms: float | None = None,
        canary_error: bool = False,
    ) -> None:
        """One scoring pass: the champion's model-call time and its verdicts on the rows routed
        to the canary, and the canary's verdicts on the same rows and its call time (none when
        no row was routed). A failed canary call counts as an error pass (its rows went to the
        champion); the comparison is paired, the same transactions judged by both."""
        with self._lock:
            self._champion.call_ms.append(champion_ms)
            self._champion.passes += 1
            if canary_error:
                self._canary.passes += 1
                self._canary.errors += 1
            elif canary_scores is not None and canary_flagged is not None and len(canary_scores):
                self._champion.add(champion_scores, champion_flagged)
                self._canary.add(canary_scores, canary_flagged)
                self._canary.passes += 1
                if canary_ms is not None:
                    self._canary.call_ms.append(canary_ms)

    def judge(self) -> Breach | None:
        """The first SLO the canary breaks now (remembered: a breached canary stays out)."""
        if self.breach is not None:
            return self.breach
        with self._lock:
            breach = self._errors() or self._latency() or self._flagged() or self._score_shift()
        self.breach = breach
        return breach

    def held(self) -> bool:
        """Whether the canary has held its SLOs long enough to be promoted."""
        return (
            self.breach is None
            and self._canary.rows >= self.slo.hold_rows
            and self._now() - self.started >= self.slo.hold_seconds
        )

    def summary(self) -> dict[str, float | int | str | None]:
        with self._lock:
            canary, champion = self._canary, self._champion
            return {
                "version": self.version,
                "canary_rows": canary.rows,
                "champion_rows": champion.rows,
                "canary_passes": canary.passes,
                "canary_errors": canary.errors,
                "canary_flagged_share": round(canary.flagged_share(), 6),
                "champion_flagged_share": round(champion.flagged_share(), 6),
                "canary_p99_ms": round(canary.p99_ms(), 3),
                "champion_p99_ms": round(champion.p99_ms(), 3),
                "running_seconds": round(self._now() - self.started, 1),
                "breach": self.breach.reason if self.breach else None,
            }

    # --- the rules (called under the lock) ------------------------------------------------
    def _errors(self) -> Breach | None:
        canary = self._canary
        if canary.errors == 0:
            return None
        rate = canary.errors / canary.passes
        # a canary that fails every call from the start breaks its SLO as soon as it is clear
        # it is not a blip: min_passes calls, or 5 in a row with none succeeding
        judged = canary.passes >= self.slo.min_passes or (canary.rows == 0 and canary.errors >= 5)
        if judged and rate > self.slo.max_error_rate:
            return Breach(
                "errors",
                f"canary model calls failed in {canary.errors} of {canary.passes} passes "
                f"({rate:.1%}, SLO {self.slo.max_error_rate:.1%}); their rows were scored by "
                "the champion",
                rate,
                0.0,
            )
        return None

    def _latency(self) -> Breach | None:
        canary, champion = self._canary, self._champion
        if len(canary.call_ms) < self.slo.min_passes or len(champion.call_ms) < self.slo.min_passes:
            return None
        canary_p99, champion_p99 = canary.p99_ms(), champion.p99_ms()
        limit = champion_p99 * self.slo.max_latency_ratio + self.slo.latency_slack_ms
        if canary_p99 > limit:
            return Breach(
                "latency",
                f"canary p99 model time {canary_p99:.1f} ms over {limit:.1f} ms (champion "
                f"{champion_p99:.1f} ms x {self.slo.max_latency_ratio:g} + "
                f"{self.slo.latency_slack_ms:g} ms)",
                canary_p99,
                champion_p99,
            )
        return None

    def _enough_rows(self) -> bool:
        return (
            self._canary.rows_in_window >= self.slo.min_rows
            and self._champion.rows_in_window >= self.slo.min_rows
        )

    def _flagged(self) -> Breach | None:
        if not self._enough_rows():
            return None
        canary, champion = self._canary.flagged_share(), self._champion.flagged_share()
        if canary - champion > self.slo.max_flagged_jump:
            return Breach(
                "flagged_share",
                f"canary flags {canary:.2%} of its transactions vs {champion:.2%} for the "
                f"champion (more than {self.slo.max_flagged_jump:.0%} above)",
                canary,
                champion,
            )
        return None

    def _score_shift(self) -> Breach | None:
        if not self._enough_rows():
            return None
        from scipy.stats import ks_2samp

        result = ks_2samp(self._canary.all_scores(), self._champion.all_scores())
        statistic, p_value = float(result.statistic), float(result.pvalue)
        if statistic > self.slo.max_score_shift and p_value < 0.001:
            return Breach(
                "score_shift",
                f"canary score distribution differs from the champion's: KS statistic "
                f"{statistic:.3f} over {self.slo.max_score_shift:g} (p = {p_value:.1e})",
                statistic,
                0.0,
            )
        return None
