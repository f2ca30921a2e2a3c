"""The champion/challenger gate: the rule a challenger must pass to become champion.

Pure logic: both models' metrics on the same holdout rows go in, a decision with its reasons
comes out. The ``challenger_model`` asset computes the metrics and reports the decision as a
blocking check; ``champion_model`` only promotes a version whose recorded decision passed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlops_assets.train.metrics import GATE_METRICS, HoldoutMetrics


@dataclass(frozen=True)
class GateRule:
    """Beat the champion by ``margin`` on ``metric`` and meet the absolute minimums."""

    metric: str = "pr_auc"
    margin: float = 0.005
    min_pr_auc: float = 0.2
    min_roc_auc: float = 0.8

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise ValueError(f"Unknown gate metric {self.metric!r}; choose one of {GATE_METRICS}")
        if self.margin < 0:
            raise ValueError(f"The gate margin must not be negative (got {self.margin})")


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger may replace the champion, and why (one line per reason)."""

    passed: bool
    metric: str
    margin: float
    challenger_value: float
    champion_value: float | None
    reasons: tuple[str, ...]

    @property
    def summary(self) -> str:
        verdict = "PASSED" if self.passed else "BLOCKED"
        return f"{verdict}: " + "; ".join(self.reasons)

    def as_tags(self) -> dict[str, str]:
        """The decision as MLflow model-version tags (``gate.*``)."""
        return {
            "gate.decision": "passed" if self.passed else "blocked",
            "gate.metric": self.metric,
            "gate.margin": str(self.margin),
            "gate.challenger_value": f"{self.challenger_value:.6f}",
            "gate.champion_value": (
                "none" if self.champion_value is None else f"{self.champion_value:.6f}"
            ),
            "gate.reasons": "; ".join(self.reasons)[:5000],
        }


def decide(
    rule: GateRule, challenger: HoldoutMetrics, champion: HoldoutMetrics | None
) -> GateDecision:
    """Apply ``rule`` to the challenger's and (if any) the champion's holdout metrics."""
    reasons: list[str] = []
    passed = True
    for name, minimum in (("pr_auc", rule.min_pr_auc), ("roc_auc", rule.min_roc_auc)):
        value = challenger.value(name)
        if value < minimum:
            passed = False
            reasons.append(f"challenger {name} {value:.4f} is below the minimum {minimum:.4f}")
        else:
            reasons.append(f"challenger {name} {value:.4f} meets the minimum {minimum:.4f}")
    challenger_value = challenger.value(rule.metric)
    champion_value = None if champion is None else champion.value(rule.metric)
    if champion_value is None:
        reasons.append("no current champion: the first model that meets the minimums is promoted")
    else:
        required = champion_value + rule.margin
        if challenger_value >= required:
            reasons.append(
                f"challenger {rule.metric} {challenger_value:.4f} >= champion "
                f"{champion_value:.4f} + margin {rule.margin:.4f}"
            )
        else:
            passed = False
            reasons.append(
                f"challenger {rule.metric} {challenger_value:.4f} < champion "
                f"{champion_value:.4f} + margin {rule.margin:.4f}"
            )
    return GateDecision(
        passed=passed,
        metric=rule.metric,
        margin=rule.margin,
        challenger_value=challenger_value,
        champion_value=champion_value,
        reasons=tuple(reasons),
    )
