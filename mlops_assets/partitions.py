"""The daily partitions (by transaction date, UTC) shared by every date-partitioned asset."""

from __future__ import annotations

from datetime import date

import dagster as dg

from mlops_assets.settings import load_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=load_settings().partitions_start.isoformat(), timezone="UTC"
)


def partition_day(context: dg.AssetExecutionContext) -> date:
    """The day of the partition being materialized."""
    return date.fromisoformat(context.partition_key)
