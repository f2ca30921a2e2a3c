"""Thresholds and names the pipeline's assets apply, set once from the settings."""

from __future__ import annotations

from datetime import date

import dagster as dg


class PipelinePolicy(dg.ConfigurableResource):
    """Pipeline-wide rules: contract and drift thresholds, the model's registry name and alias."""

    paysim_epoch: str = "2026-01-01"
    max_reject_share: float = 0.05
    drift_share_threshold: float = 0.5
    drift_max_rows: int = 50_000
    model_name: str = "fraud_detector"
    model_alias: str = "champion"
    landing_settle_seconds: float = 10.0

    @property
    def epoch(self) -> date:
        return date.fromisoformat(self.paysim_epoch)
