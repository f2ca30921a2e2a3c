"""The ``scored_transactions`` asset."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.automation import DAILY_FRESHNESS, refresh_when_upstream_day_changes
from mlops_assets.features.definition import FEATURE_COLUMNS
from mlops_assets.partitions import (
    daily_partitions,
    day_batches,
    days_with_rows,
    describe_days,
    partition_days,
)
from mlops_assets.registry.champion import load_scorer, resolve_alias
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import SCORED_TRANSACTIONS, TRANSACTION_FEATURES

if TYPE_CHECKING:
    import pyarrow as pa

#: what a champion of either family reads: the features and the transaction type (the MLP)
SCORING_COLUMNS = [*FEATURE_COLUMNS, "type"]
#: feature rows scored at a time (a few tens of MB of model input)
SCORING_ROWS = 262_144


def _scored_schema() -> "pa.Schema":
    import pyarrow as pa  # with the step, not with the code location

    return pa.schema(
        [
            ("transaction_id", pa.string()),
            ("fraud_score", pa.float64()),
            ("is_fraud_predicted", pa.bool_()),
            ("model_name", pa.string()),
            ("model_version", pa.int64()),
            ("model_alias", pa.string()),
            ("scored_at", pa.timestamp("us", tz="UTC")),
            ("txn_date", pa.date32()),
        ]
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=["transaction_features", "champion_model"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    automation_condition=refresh_when_upstream_day_changes(ignore=("champion_model",)),
    freshness_policy=DAILY_FRESHNESS,
    group_name="score",
    kinds={"delta", "mlflow"},
)
def scored_transactions(
    context: dg.AssetExecutionContext,
    lake: DeltaLake,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
) -> dg.MaterializeResult:
    """Batch fraud scores for the day's transactions from the registered model version behind
    the scoring alias (`champion`): score, decision at the model's threshold, and the model
    name and version on every row. A new model version does not re-score past days on its own;
    scores change from the next materialization of a day on."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = _scored_schema()
    days = partition_days(context)
    champion = resolve_alias(mlflow_tracking, policy.model_name, policy.model_alias)
    score = load_scorer(champion)
    rows = flagged_rows = 0
    score_sum = 0.0
    write = None
    day_rows = lake.day_rows(TRANSACTION_FEATURES, days)
    days_with_rows(context, day_rows, "transaction_features")
    features = lake.dataset(TRANSACTION_FEATURES)
    scored_at = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    # a long range is scored in batches of about lake.batch_rows rows, one Delta commit each
    # (a day of the range without features is replaced by no scores, as it has no features);
    # within a batch the features stream through the model SCORING_ROWS rows at a time, only
    # the columns it reads, so that a big day's memory stays bounded
    for batch in day_batches(days, day_rows, lake.batch_rows):
        chunks = features.to_batches(
            columns=["transaction_id", "txn_date", *SCORING_COLUMNS],
            filter=pc.field("txn_date").isin(pa.array(batch, pa.date32())),
            batch_size=SCORING_ROWS,
            batch_readahead=1,  # a batch or two in flight, not pyarrow's 16
            fragment_readahead=1,
        )
        scored: list[pa.RecordBatch] = []
        for chunk in chunks:
            if chunk.num_rows == 0:
                continue
            scores = score(chunk.select(SCORING_COLUMNS).to_pandas())
            flagged = scores >= champion.threshold
            count = chunk.num_rows
            scored.append(
                pa.record_batch(
                    {
                        "transaction_id": chunk.column("transaction_id").cast(pa.string()),
                        "fraud_score": pa.array(scores, pa.float64()),
                        "is_fraud_predicted": pa.array(flagged),
                        "model_name": pa.repeat(pa.scalar(champion.name, pa.string()), count),
                        "model_version": pa.repeat(pa.scalar(int(champion.version)), count),
                        "model_alias": pa.repeat(pa.scalar(champion.alias, pa.string()), count),
                        "scored_at": pa.repeat(scored_at, count),
                        "txn_date": chunk.column("txn_date").cast(pa.date32()),
                    }
                )
            )
            rows += count
            flagged_rows += int(flagged.sum())
            score_sum += float(scores.sum())
        table = pa.Table.from_batches(scored, schema=schema)
        del scored
        write = lake.overwrite_days(SCORED_TRANSACTIONS, table, batch[0], batch[-1])
    assert write is not None
    context.log.info(
        f"Scored {rows} transactions of {describe_days(days)} with {champion.name} "
        f"v{champion.version}: {flagged_rows} flagged"
    )
    return dg.MaterializeResult(
        metadata={
            **write.metadata(schema),
            "dagster/row_count": rows,
            "days": describe_days(days),
            "model_version": int(champion.version),
            "model_alias": champion.alias,
            "threshold": champion.threshold,
            "flagged_rows": flagged_rows,
            "flagged_share": flagged_rows / rows if rows else 0.0,
            "mean_fraud_score": score_sum / rows if rows else 0.0,
        }
    )
