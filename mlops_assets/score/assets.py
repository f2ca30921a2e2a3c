"""The ``scored_transactions`` asset."""

from datetime import UTC, datetime

import dagster as dg

from mlops_assets.automation import DAILY_FRESHNESS, refresh_when_upstream_day_changes
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
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    days = partition_days(context)
    champion = resolve_alias(mlflow_tracking, policy.model_name, policy.model_alias)
    score = load_scorer(champion)
    rows = flagged_rows = 0
    score_sum = 0.0
    write = None
    day_rows = lake.day_rows(TRANSACTION_FEATURES, days)
    days_with_rows(context, day_rows, "transaction_features")
    # a long range is scored in batches of about lake.batch_rows rows, one Delta commit each
    # (a day of the range without features is replaced by no scores, as it has no features)
    for batch in day_batches(days, day_rows, lake.batch_rows):
        features = lake.read(TRANSACTION_FEATURES, days=batch).to_pandas()
        scores = score(features)
        flagged = scores >= champion.threshold
        count = len(features)
        table = pa.table(
            {
                "transaction_id": pa.array(features["transaction_id"], pa.string()),
                "fraud_score": pa.array(scores.astype(np.float64)),
                "is_fraud_predicted": pa.array(flagged),
                "model_name": pa.array([champion.name] * count, pa.string()),
                "model_version": pa.array([int(champion.version)] * count, pa.int64()),
                "model_alias": pa.array([champion.alias] * count, pa.string()),
                "scored_at": pa.array([datetime.now(UTC)] * count, pa.timestamp("us", tz="UTC")),
                "txn_date": pa.array(pd.to_datetime(features["txn_date"]).dt.date, pa.date32()),
            }
        )
        del features
        write = lake.overwrite_days(SCORED_TRANSACTIONS, table, batch[0], batch[-1])
        rows += count
        flagged_rows += int(flagged.sum())
        score_sum += float(scores.sum())
    assert write is not None
    context.log.info(
        f"Scored {rows} transactions of {describe_days(days)} with {champion.name} "
        f"v{champion.version}: {flagged_rows} flagged"
    )
    return dg.MaterializeResult(
        metadata={
            **write.metadata(table.schema),
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
