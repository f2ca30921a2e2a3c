"""Thresholds and names the pipeline's assets apply, set once from the settings."""

from __future__ import annotations

from datetime import date

import dagster as dg
from pydantic import Field


class PipelinePolicy(dg.ConfigurableResource):
    """Pipeline-wide rules: contract and drift thresholds, the model's registry name and alias,
    and the promotion gate."""

    paysim_epoch: str = "2026-01-01"
    max_reject_share: float = 0.05
    drift_share_threshold: float = 0.5
    drift_max_rows: int = 50_000
    drift_share_error: float = 0.8
    performance_warn_drop: float = 0.2
    performance_error_drop: float = 0.4
    min_label_coverage: float = 0.5
    segment_recall_drop: float = 0.25
    segment_min_fraud_rows: int = 20
    #: upper bounds of the amount bands model_performance reports (the last band is open)
    segment_amount_bands: list[float] = Field(
        default_factory=lambda: [1_000.0, 10_000.0, 100_000.0, 1_000_000.0]
    )
    retrain_drift_days: int = 2
    model_name: str = "fraud_detector"
    model_alias: str = "champion"
    landing_settle_seconds: float = 10.0
    stream_settle_seconds: float = 60.0
    stream_sensor_days: int = 7
    gate_metric: str = "pr_auc"
    gate_margin: float = 0.005
    gate_min_pr_auc: float = 0.2
    gate_min_roc_auc: float = 0.8
    target_precision: float = 0.9
    explain_method: str = "treeshap"  # XGBoost's: treeshap | saabas (train/explain.py)
    #: an in-memory fit estimated to need more than this (MB) trains XGBoost from an
    #: external-memory iterator over the Delta partitions instead (train/external_memory.py)
    training_memory_budget_mb: float = Field(2048.0, ge=0.0)

    @property
    def epoch(self) -> date:
        return date.fromisoformat(self.paysim_epoch)

    def gate_rule(self):  # -> GateRule
        """The promotion gate these settings describe."""
        from mlops_assets.registry.gate import GateRule

        return GateRule(
            metric=self.gate_metric,
            margin=self.gate_margin,
            min_pr_auc=self.gate_min_pr_auc,
            min_roc_auc=self.gate_min_roc_auc,
        )
