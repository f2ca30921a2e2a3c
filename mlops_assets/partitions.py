"""The daily partitions (by transaction date, UTC) shared by every date-partitioned asset, and
what a run over a range of them (a single-run backfill) needs: its days, batches of days by
rows, and each day's check results recorded against that day."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

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


def day_batches(days: Sequence[date], rows: Mapping[date, int], max_rows: int) -> list[list[date]]:
    """``days`` (sorted) cut into runs of consecutive days of about ``max_rows`` rows each:
    a batch closes before the day that would take it past ``max_rows`` (a day larger than that
    is a batch of its own). Days without rows join the batch they fall in, so a batch holds at
    least one day with rows unless no day has any."""
    batches: list[list[date]] = []
    current: list[date] = []
    held = 0
    for day in sorted(days):
        size = rows.get(day, 0)
        if current and size and held and held + size > max_rows:
            batches.append(current)
            current, held = [], 0
        current.append(day)
        held += size
    if current:
        batches.append(current)
    return batches


def days_with_rows(
    context: dg.AssetExecutionContext, rows: Mapping[date, int], upstream: str
) -> list[date]:
    """The days of ``rows`` that have rows upstream. A single day without any, or a range
    without any, fails; in a range the days without rows are skipped with a warning (a backfill
    through the daemon also asks for the day after the range, downstream of the features'
    24-hour look-back, which has no transactions yet)."""
    missing = sorted(day for day, count in rows.items() if not count)
    if missing and (len(rows) == 1 or len(missing) == len(rows)):
        raise dg.Failure(
            description=f"{upstream} has no rows for {', '.join(d.isoformat() for d in missing)}:"
            " materialize it first"
        )
    if missing:
        context.log.warning(
            f"{upstream} has no rows for {', '.join(d.isoformat() for d in missing)}: "
            "nothing to do for those days"
        )
    return sorted(day for day, count in rows.items() if count)


#: what an asset yields for its checks: results, or evaluations of given days with their outputs
CheckEvent = dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output


def checks_by_day(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    results_by_day: Mapping[str, Sequence[dg.AssetCheckResult]],
) -> Iterator[CheckEvent]:
    """Each day's check results, recorded against that day's partition.

    Dagster records an ``AssetCheckResult`` against the run's partition only when the run has
    one partition key. A run over a range (a single-run backfill) would record one result
    without a partition, and leave each day's planned check to be shown as skipped. So in a
    range run every result becomes an ``AssetCheckEvaluation`` of its day, aimed at that day's
    latest materialization of ``asset_key`` (what Dagster does for one partition), found with
    two queries for the whole range.
    """
    if context.has_partition_key:
        for results in results_by_day.values():
            yield from results
        return
    from dagster._core.events import DagsterEventType

    instance = context.instance
    latest = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(results_by_day)
    )
    records = (
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(latest.values())),
            limit=len(latest),
        ).records
        if latest
        else []
    )
    targets = {
        record.partition_key: AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id,
            run_id=record.run_id,
            timestamp=record.timestamp,
        )
        for record in records
    }
    assets_def = context.assets_def
    emitted: set[dg.AssetCheckKey] = set()
    for day, results in results_by_day.items():
        for result in results:
            assert result.check_name, "name the check of every result recorded by day"
            check_key = dg.AssetCheckKey(asset_key, result.check_name)
            spec = assets_def.get_spec_for_check_key(check_key)
            if check_key not in emitted and check_key in context.selected_asset_check_keys:
                # the check's output (its downstream steps wait on it), once for the range
                emitted.add(check_key)
                yield dg.Output(
                    None, output_name=assets_def.get_output_name_for_asset_check_key(check_key)
                )
            yield dg.AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=check_key.name,
                passed=result.passed,
                metadata=result.metadata,
                target_materialization_data=targets.get(day),
                severity=result.severity,
                description=result.description,
                blocking=spec.blocking,
                partition=day,
            )
