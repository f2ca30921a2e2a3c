"""The champion/challenger gate rule, on its own."""

from __future__ import annotations

import pytest

from mlops_assets.registry.gate import GateRule, decide
from mlops_assets.train.metrics import HoldoutMetrics


def metrics(pr_auc: float, roc_auc: float = 0.95, recall: float = 0.5) -> HoldoutMetrics:
    return HoldoutMetrics(
        pr_auc=pr_auc,
        roc_auc=roc_auc,
        precision=0.8,
        recall=recall,
        f1=0.6,
        recall_at_precision=recall,
        target_precision=0.9,
        threshold=0.5,
        fraud_rate=0.01,
        rows=1000,
    )


def test_a_challenger_that_beats_the_champion_by_the_margin_passes() -> None:
    decision = decide(GateRule(margin=0.01), metrics(0.72), metrics(0.70))
    assert decision.passed
    assert decision.champion_value == pytest.approx(0.70)
    assert decision.as_tags()["gate.decision"] == "passed"


def test_a_challenger_within_the_margin_or_worse_is_blocked() -> None:
    for challenger in (0.705, 0.70, 0.5):
        decision = decide(GateRule(margin=0.01), metrics(challenger), metrics(0.70))
        assert not decision.passed
        assert "< champion 0.7000 + margin 0.0100" in decision.summary


def test_the_first_model_needs_only_the_minimums() -> None:
    assert decide(GateRule(), metrics(0.5), None).passed
    weak = decide(GateRule(min_pr_auc=0.3), metrics(0.25), None)
    assert not weak.passed
    assert "pr_auc 0.2500 is below the minimum 0.3000" in weak.summary
    assert weak.as_tags()["gate.champion_value"] == "none"


def test_minimums_apply_even_when_the_champion_is_beaten() -> None:
    decision = decide(GateRule(min_roc_auc=0.9), metrics(0.8, roc_auc=0.85), metrics(0.5))
    assert not decision.passed
    assert "roc_auc 0.8500 is below the minimum" in decision.summary


def test_the_gate_can_judge_on_another_metric() -> None:
    rule = GateRule(metric="recall_at_precision", margin=0.0)
    assert decide(rule, metrics(0.6, recall=0.7), metrics(0.9, recall=0.6)).passed


def test_a_wrong_rule_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="Unknown gate metric 'accuracy'"):
        GateRule(metric="accuracy")
    with pytest.raises(ValueError, match="must not be negative"):
        GateRule(margin=-0.1)
