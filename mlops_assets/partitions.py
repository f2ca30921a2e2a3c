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


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days of the run: one for a single partition, several for a backfill range."""
    return sorted(date.fromisoformat(key) for key in context.partition_keys)


def describe_days(days: list[date]) -> str:
    return days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"
