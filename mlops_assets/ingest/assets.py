"""The bronze ``raw_transactions`` asset."""

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.automation import DAILY_FRESHNESS
from mlops_assets.ingest.delivery import DeliveryError, load_day
from mlops_assets.ingest.streamed import FILE_ROWS, StreamedDay, has_streamed_rows, streamed_days
from mlops_assets.partitions import daily_partitions, describe_days, partition_days
from mlops_assets.resources.lake import DeltaLake, PartitionWrite
from mlops_assets.resources.landing import LandingZone
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import PARTITION_COLUMN, RAW_TRANSACTIONS

if TYPE_CHECKING:
    import pyarrow as pa

#: metadata key holding {file URI: sha256} of the files a day was loaded from
SOURCE_DIGESTS = "source_digests"
#: metadata key holding how many streamed rows the days had when loaded
STREAM_ROWS = "stream_rows"
#: the transactions topic, an external asset observed by the stream sensor
TRANSACTION_STREAM = dg.AssetKey("transaction_stream")


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    freshness_policy=DAILY_FRESHNESS,
    group_name="ingest",
    kinds={"delta", "polars", "bronze"},
    tags={"layer": "bronze"},
    deps=[TRANSACTION_STREAM],
)
def raw_transactions(
    context: dg.AssetExecutionContext,
    landing: LandingZone,
    lake: DeltaLake,
    policy: PipelinePolicy,
) -> dg.MaterializeResult:
    """Bronze: the day's transactions exactly as delivered (every column as text), from the
    landing zone's files (with `_source_file`, `_source_row`) and from the transactions topic
    (with `_source_topic`, `_source_partition`, `_source_offset`, written by the bronze
    ingestion exactly once), all with `_ingested_at`. Re-materializing a day replaces that day's
    file rows only; its streamed rows stay. Fails, naming the file, on a malformed, empty or
    incomplete file, and when the day has neither a file nor a streamed message; the landing
    and stream sensors request a day when its files or streamed rows change."""
    import polars as pl

    days = partition_days(context)
    files = landing.list_files()
    ingested_at = datetime.now(UTC).replace(tzinfo=None)
    per_day: dict[str, dict[str, object]] = {}
    digests: dict[str, str] = {}
    offsets: dict[str, dict[str, object]] = {}
    writes: list[tuple[PartitionWrite, pa.Schema]] = []
    unassignable_rows = 0
    stream_rows = 0
    streamed = has_streamed_rows(lake)
    # a range's days are loaded one by one and written in batches of about lake.batch_rows
    # rows, one Delta commit each (only the loaded days are replaced)
    pending: list[tuple[date, pl.DataFrame]] = []

    def write_pending() -> None:
        if not pending:
            return
        frame = pl.concat([rows for _, rows in pending], how="diagonal_relaxed")
        table = frame.to_arrow(compat_level=pl.CompatLevel.newest())  # no copy of the text
        write = lake.overwrite_dates(
            RAW_TRANSACTIONS,
            table,
            [day for day, _ in pending],
            only_rows=FILE_ROWS if streamed else None,
        )
        writes.append((write, table.schema))
        pending.clear()

    for day in days:
        try:
            rows, sources, unassignable = load_day(
                day, files, landing.read_bytes, policy.epoch, ingested_at
            )
        except DeliveryError as error:
            raise dg.Failure(
                description=f"{error}. Nothing was written for {day}; fix or remove the file "
                "and re-materialize the day.",
                allow_retries=False,
            ) from error
        stream = streamed_days(lake, [day]).get(day, StreamedDay(day)) if streamed else None
        if not sources and (stream is None or stream.rows == 0):
            raise dg.Failure(
                description=f"No landing file for {day} under {landing.uri} and no streamed "
                f"transaction of that day in {lake.table_uri(RAW_TRANSACTIONS)}: expected a "
                f".csv or .parquet file whose name contains {day.isoformat()} "
                f"(e.g. transactions_{day.isoformat()}.csv), an undated PaySim log with steps "
                "on that day, or messages on the transactions topic.",
                allow_retries=False,
            )
        unassignable_rows += unassignable
        if unassignable:
            context.log.warning(
                f"{unassignable} row(s) of undated PaySim logs have no valid step and belong "
                "to no day"
            )
        file_rows = 0
        if sources:
            file_rows = rows.height
            if pending and sum(r.height for _, r in pending) + file_rows > lake.batch_rows:
                write_pending()
            pending.append((day, rows.with_columns(pl.lit(day).alias(PARTITION_COLUMN))))
            digests.update(sources)
        streamed_rows = stream.rows if stream is not None else 0
        stream_rows += streamed_rows
        if stream is not None and streamed_rows:
            offsets[day.isoformat()] = stream.metadata()
        per_day[day.isoformat()] = {
            "rows": file_rows + streamed_rows,
            "files": len(sources),
            "file_rows": file_rows,
            "stream_rows": streamed_rows,
        }
    write_pending()
    file_rows_total = sum(int(d["file_rows"]) for d in per_day.values())
    context.log.info(
        f"{describe_days(days)}: {file_rows_total} rows from {len(digests)} file(s), "
        f"{stream_rows} streamed"
        + (f" -> v{writes[-1][0].version} ({len(writes)} commit(s))" if writes else "")
    )
    version = lake.version(RAW_TRANSACTIONS)
    metadata = (
        writes[-1][0].metadata(writes[-1][1])
        if writes
        else {
            "delta_version": version,
            "table_uri": dg.MetadataValue.path(lake.table_uri(RAW_TRANSACTIONS)),
        }
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "dagster/row_count": sum(int(d["rows"]) for d in per_day.values()),
            "days": describe_days(days),
            "rows_by_day": dg.MetadataValue.json(per_day),
            "source_files": dg.MetadataValue.json(sorted(digests)),
            SOURCE_DIGESTS: dg.MetadataValue.json(digests),
            "unassignable_log_rows": unassignable_rows,
            STREAM_ROWS: stream_rows,
            "stream_offsets": dg.MetadataValue.json(offsets),
            "stream_bronze_version": version,
        }
    )
