"""The bronze ``raw_transactions`` asset."""

from datetime import UTC, datetime

import dagster as dg

from mlops_assets.ingest.delivery import DeliveryError, load_day
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.landing import LandingZone
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import RAW_TRANSACTIONS


@dg.asset(
    partitions_def=daily_partitions,
    group_name="ingest",
    kinds={"delta", "polars", "bronze"},
    tags={"layer": "bronze"},
)
def raw_transactions(
    context: dg.AssetExecutionContext,
    landing: LandingZone,
    lake: DeltaLake,
    policy: PipelinePolicy,
) -> dg.MaterializeResult:
    """Bronze: the day's landing-zone files loaded exactly as delivered (every column as text),
    with `_source_file`, `_source_row` and `_ingested_at` on every row. Re-materializing a day
    replaces that day only. Fails, naming the file, on a malformed, empty or incomplete file."""
    day = partition_day(context)
    files = landing.list_files()
    try:
        rows, sources, unassignable = load_day(
            day, files, landing.read_bytes, policy.epoch, datetime.now(UTC).replace(tzinfo=None)
        )
    except DeliveryError as error:
        raise dg.Failure(
            description=f"{error}. Nothing was written for {day}; fix or remove the file "
            "and re-materialize the day.",
            allow_retries=False,
        ) from error
    if not sources:
        raise dg.Failure(
            description=f"No landing file for {day} under {landing.uri}: expected a .csv or "
            f".parquet file whose name contains {day.isoformat()} "
            f"(e.g. transactions_{day.isoformat()}.csv) or an undated PaySim log with steps "
            "on that day.",
            allow_retries=False,
        )
    if unassignable:
        context.log.warning(
            f"{unassignable} row(s) of undated PaySim logs have no valid step and belong to no day"
        )
    table = rows.to_arrow()
    write = lake.overwrite_day(RAW_TRANSACTIONS, table, day)
    context.log.info(f"{write.rows} rows from {len(sources)} file(s) -> {write.table_uri}")
    return dg.MaterializeResult(
        metadata={
            **write.metadata(table.schema),
            "source_files": dg.MetadataValue.json(sources),
            "unassignable_log_rows": unassignable,
        }
    )
