"""The bronze ``raw_transactions`` asset."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from mlops_assets.automation import DAILY_FRESHNESS
from mlops_assets.ingest.delivery import DeliveryError, load_day
from mlops_assets.partitions import daily_partitions, describe_days, partition_days
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.landing import LandingZone
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import RAW_TRANSACTIONS

#: metadata key holding {file URI: sha256} of the files a day was loaded from
SOURCE_DIGESTS = "source_digests"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    freshness_policy=DAILY_FRESHNESS,
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
    replaces that day only. Fails, naming the file, on a malformed, empty or incomplete file;
    the landing sensor requests a day when one of its files is new or changed."""
    days = partition_days(context)
    files = landing.list_files()
    ingested_at = datetime.now(UTC).replace(tzinfo=None)
    per_day: dict[str, dict[str, object]] = {}
    digests: dict[str, str] = {}
    writes = []
    unassignable_rows = 0
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
        if not sources:
            raise dg.Failure(
                description=f"No landing file for {day} under {landing.uri}: expected a .csv or "
                f".parquet file whose name contains {day.isoformat()} "
                f"(e.g. transactions_{day.isoformat()}.csv) or an undated PaySim log with "
                "steps on that day.",
                allow_retries=False,
            )
        unassignable_rows += unassignable
        if unassignable:
            context.log.warning(
                f"{unassignable} row(s) of undated PaySim logs have no valid step and belong "
                "to no day"
            )
        table = rows.to_arrow(compat_level=pl.CompatLevel.newest())  # no copy of the text
        write = lake.overwrite_day(RAW_TRANSACTIONS, table, day)
        writes.append((write, table.schema))
        digests.update(sources)
        per_day[day.isoformat()] = {"rows": write.rows, "files": len(sources)}
        context.log.info(
            f"{day}: {write.rows} rows from {len(sources)} file(s) -> v{write.version}"
        )
    last_write, schema = writes[-1]
    return dg.MaterializeResult(
        metadata={
            **last_write.metadata(schema),
            "dagster/row_count": sum(w.rows for w, _ in writes),
            "days": describe_days(days),
            "rows_by_day": dg.MetadataValue.json(per_day),
            "source_files": dg.MetadataValue.json(sorted(digests)),
            SOURCE_DIGESTS: dg.MetadataValue.json(digests),
            "unassignable_log_rows": unassignable_rows,
        }
    )
