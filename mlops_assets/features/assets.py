"""The gold ``transaction_features`` asset."""

import warnings

import dagster as dg
import pyarrow.compute as pc

from mlops_assets.features.definition import lookback_days
from mlops_assets.features.duckdb_engine import compute_features_duckdb
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS

with warnings.catch_warnings():  # allow_nonexistent_upstream_partitions is a beta parameter
    warnings.simplefilter("ignore", dg.BetaWarning)
    #: the features of a day read the validated rows of that day and of the day before
    _DAY_AND_DAY_BEFORE = dg.TimeWindowPartitionMapping(
        start_offset=-1, allow_nonexistent_upstream_partitions=True
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetDep("validated_transactions", partition_mapping=_DAY_AND_DAY_BEFORE)],
    group_name="features",
    kinds={"delta", "duckdb", "sql", "gold"},
    tags={"layer": "gold"},
)
def transaction_features(
    context: dg.AssetExecutionContext, lake: DeltaLake
) -> dg.MaterializeResult:
    """Gold: one row per validated transaction of the day with per-account behaviour features:
    the origin's and destination's transaction count and amount sum over the previous 24 hours
    (read from the day before too), balance deltas and errors, amount ratios, type indicators and
    the hour of day, plus the `isFraud` label. Defined once as SQL (`features/definition.py`),
    executed here by DuckDB over Arrow tables read with delta-rs."""
    day = partition_day(context)
    source_version = lake.version(VALIDATED_TRANSACTIONS)
    validated = lake.read(VALIDATED_TRANSACTIONS, days=lookback_days(day))
    if day not in set(pc.unique(validated.column("txn_date")).to_pylist()):
        raise dg.Failure(
            description=f"validated_transactions has no rows for {day}: materialize it first"
        )
    features = compute_features_duckdb(validated, day)
    write = lake.overwrite_day(TRANSACTION_FEATURES, features, day)
    fraud_rate = pc.mean(features.column("isFraud")).as_py() or 0.0
    return dg.MaterializeResult(
        metadata={
            **write.metadata(features.schema),
            "engine": "duckdb",
            "validated_delta_version": source_version,
            "fraud_rate": fraud_rate,
        }
    )
