"""When the champion needs retraining: persistent drift or failing performance. Pure logic.

Only evidence about the *current* champion counts: a drift report or a performance figure made
for an earlier model says nothing about the model now scoring, so after a promotion the
evidence starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class DayDrift:
    day: date
    drifted: bool
    drift_share: float
    model_version: str


@dataclass(frozen=True)
class DayQuality:
    day: date
    level: str  # ok | warn | error | unknown
    pr_auc: float
    model_version: str


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain, why, and the day of the evidence (for the run key)."""

    retrain: bool
    reason: str
    evidence_day: date | None = None

    def run_key(self, champion: str) -> str:
        day = self.evidence_day.isoformat() if self.evidence_day else "none"
        return f"retrain:v{champion}:{day}"


def persistent_drift(drift: list[DayDrift], days: int) -> list[date] | None:
    """The last ``days`` calendar-consecutive reported days if every one of them drifted."""
    if not drift:
        return None
    ordered = sorted(drift, key=lambda d: d.day)
    latest = ordered[-1].day
    wanted = [latest - timedelta(days=i) for i in range(days)][::-1]
    by_day = {d.day: d for d in ordered}
    if all(day in by_day and by_day[day].drifted for day in wanted):
        return wanted
    return None


def decide_retrain(
    champion: str | None,
    drift: list[DayDrift],
    quality: list[DayQuality],
    drift_days: int,
) -> RetrainDecision:
    """Retrain when drift (against the champion) persisted ``drift_days`` consecutive days, or
    when the champion's latest judged day is at the error level."""
    if champion is None:
        return RetrainDecision(False, "no champion yet: the first model is trained by hand")
    own_drift = [d for d in drift if d.model_version == champion]
    own_quality = sorted(
        (q for q in quality if q.model_version == champion and q.level != "unknown"),
        key=lambda q: q.day,
    )
    drifted = persistent_drift(own_drift, drift_days)
    if drifted:
        shares = ", ".join(
            f"{d.day} ({d.drift_share:.2f})" for d in own_drift if d.day in set(drifted)
        )
        return RetrainDecision(
            True,
            f"drift against champion v{champion} persisted {drift_days} day(s): {shares}",
            drifted[-1],
        )
    if own_quality and own_quality[-1].level == "error":
        latest = own_quality[-1]
        return RetrainDecision(
            True,
            f"champion v{champion} PR-AUC fell to {latest.pr_auc:.3f} on {latest.day} "
            "(error level)",
            latest.day,
        )
    return RetrainDecision(
        False,
        f"champion v{champion}: no persistent drift ({len(own_drift)} report(s)) and no "
        "failing performance",
    )
