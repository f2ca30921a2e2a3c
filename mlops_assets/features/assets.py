"""The gold ``transaction_features`` asset."""

import warnings
from datetime import date

import dagster as dg

from mlops_assets.automation import DAILY_FRESHNESS, refresh_when_upstream_day_changes
from mlops_assets.deployment import SPARK_STEP_OP_TAGS
from mlops_assets.features.definition import COLUMN_SOURCES
from mlops_assets.features.engines import FeatureEngine
from mlops_assets.partitions import daily_partitions, day_batches
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import VALIDATED_TRANSACTIONS

with warnings.catch_warnings():  # allow_nonexistent_upstream_partitions is a beta parameter
    warnings.simplefilter("ignore", dg.BetaWarning)
    #: the features of a day read the validated rows of that day and of the day before
    _DAY_AND_DAY_BEFORE = dg.TimeWindowPartitionMapping(
        start_offset=-1, allow_nonexistent_upstream_partitions=True
    )

COLUMN_LINEAGE = dg.TableColumnLineage(
    deps_by_column={
        column: [
            dg.TableColumnDep(asset_key=dg.AssetKey("validated_transactions"), column_name=source)
            for source in sources
        ]
        for column, sources in COLUMN_SOURCES.items()
    }
)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetDep("validated_transactions", partition_mapping=_DAY_AND_DAY_BEFORE)],
    backfill_policy=dg.BackfillPolicy.single_run(),
    automation_condition=refresh_when_upstream_day_changes(),
    freshness_policy=DAILY_FRESHNESS,
    group_name="features",
    kinds={"delta", "sql", "duckdb", "spark", "gold"},
    op_tags=SPARK_STEP_OP_TAGS,
    tags={"layer": "gold"},
)
def transaction_features(
    context: dg.AssetExecutionContext, lake: DeltaLake, feature_engine: FeatureEngine
) -> dg.MaterializeResult:
    """Gold: one row per validated transaction of the day with per-account behaviour features:
    the origin's and destination's transaction count and amount sum over the previous 24 hours
    (read from the day before too), balance deltas and errors, amount ratios, type indicators and
    the hour of day, plus the `isFraud` label. Defined once as SQL (`features/definition.py`) and
    run by the configured engine: DuckDB over delta-rs by default, Spark with delta-spark when
    `MLOPS_FEATURE_ENGINE=spark`. A backfill of many days is one run, and one Delta commit per
    batch of about `MLOPS_LAKE_BATCH_ROWS` rows."""
    days = sorted(date.fromisoformat(key) for key in context.partition_keys)
    first, last = days[0], days[-1]
    # a long range is built in batches of about lake.batch_rows validated rows (each reads its
    # own day before): memory stays bounded, and each batch is one Delta commit
    batches = day_batches(days, lake.day_rows(VALIDATED_TRANSACTIONS, days), lake.batch_rows)
    builds = [feature_engine.build(context, lake, batch[0], batch[-1]) for batch in batches]
    build = builds[-1]
    rows = sum(b.write.rows for b in builds)
    fraud_rate = sum(b.fraud_rate * b.write.rows for b in builds) / rows if rows else 0.0
    context.log.info(
        f"{feature_engine.name}: {rows} feature rows for {first}..{last} in {len(builds)} "
        f"commit(s) -> {build.write.table_uri} v{build.write.version}"
    )
    return dg.MaterializeResult(
        metadata={
            **build.write.metadata(build.schema),
            "dagster/row_count": rows,
            "engine": build.engine,
            "days": f"{first}..{last}" if first != last else first.isoformat(),
            "validated_delta_version": build.validated_version,
            "fraud_rate": fraud_rate,
            "dagster/column_lineage": COLUMN_LINEAGE,
        }
    )
