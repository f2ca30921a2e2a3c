"""How the champion did on a day, once that day's labels arrived: pure logic, no Dagster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np


Level = Literal["ok", "warn", "error", "unknown"]


@dataclass(frozen=True)
class DayPerformance:
    """Precision, recall (at the model's decision) and PR-AUC of the scores on labelled rows."""

    labelled_rows: int
    scored_rows: int
    fraud_rows: int
    precision: float
    recall: float
    pr_auc: float

    @property
    def label_coverage(self) -> float:
        return self.labelled_rows / self.scored_rows if self.scored_rows else 0.0


def day_performance(
    labels: np.ndarray, scores: np.ndarray, flagged: np.ndarray, scored_rows: int
) -> DayPerformance:
    """Metrics of one day; PR-AUC is NaN when the day has no fraud label (undefined)."""
    # imported here: sklearn.metrics costs ~2 s, paid by every step process loading the code
    from sklearn.metrics import average_precision_score, precision_score, recall_score

    fraud = int(labels.sum())
    return DayPerformance(
        labelled_rows=len(labels),
        scored_rows=scored_rows,
        fraud_rows=fraud,
        precision=float(precision_score(labels, flagged, zero_division=0)),
        recall=float(recall_score(labels, flagged, zero_division=0)) if fraud else float("nan"),
        pr_auc=float(average_precision_score(labels, scores)) if fraud else float("nan"),
    )


@dataclass(frozen=True)
class PerformanceRule:
    """How far the day's PR-AUC may fall below the model's holdout PR-AUC (relative drop)."""

    warn_drop: float = 0.2
    error_drop: float = 0.4
    min_fraud_rows: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.warn_drop <= self.error_drop <= 1:
            raise ValueError(
                f"Need 0 <= warn_drop ({self.warn_drop}) <= error_drop ({self.error_drop}) <= 1"
            )


def performance_level(
    day: DayPerformance, holdout_pr_auc: float, rule: PerformanceRule
) -> tuple[Level, float, str]:
    """(level, relative PR-AUC drop, explanation) of a day against the holdout figure."""
    import numpy as np

    if day.fraud_rows < rule.min_fraud_rows or np.isnan(day.pr_auc):
        return (
            "unknown",
            float("nan"),
            f"only {day.fraud_rows} fraud label(s): PR-AUC is not judged below "
            f"{rule.min_fraud_rows}",
        )
    drop = 1.0 - day.pr_auc / holdout_pr_auc if holdout_pr_auc > 0 else 0.0
    text = (
        f"PR-AUC {day.pr_auc:.4f} vs {holdout_pr_auc:.4f} on the holdout: "
        f"{drop:+.1%} drop (warn at {rule.warn_drop:.0%}, error at {rule.error_drop:.0%})"
    )
    if drop >= rule.error_drop:
        return "error", drop, text
    if drop >= rule.warn_drop:
        return "warn", drop, text
    return "ok", drop, text
