"""The ``scored_transactions`` asset."""

from datetime import UTC, datetime

import dagster as dg

from mlops_assets.automation import DAILY_FRESHNESS, refresh_when_upstream_day_changes
from mlops_assets.partitions import daily_partitions, describe_days, partition_days
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
    features = lake.read(TRANSACTION_FEATURES, days=days).to_pandas()
    present = {d.isoformat() for d in pd.to_datetime(features["txn_date"]).dt.date.unique()}
    missing = [d.isoformat() for d in days if d.isoformat() not in present]
    if missing:
        raise dg.Failure(
            description=f"transaction_features has no rows for {', '.join(missing)}: "
            "materialize it first"
        )
    scores = load_scorer(champion)(features)
    flagged = scores >= champion.threshold
    rows = len(features)
    table = pa.table(
        {
            "transaction_id": pa.array(features["transaction_id"], pa.string()),
            "fraud_score": pa.array(scores.astype(np.float64)),
            "is_fraud_predicted": pa.array(flagged),
            "model_name": pa.array([champion.name] * rows, pa.string()),
            "model_version": pa.array([int(champion.version)] * rows, pa.int64()),
            "model_alias": pa.array([champion.alias] * rows, pa.string()),
            "scored_at": pa.array([datetime.now(UTC)] * rows, pa.timestamp("us", tz="UTC")),
            "txn_date": pa.array(pd.to_datetime(features["txn_date"]).dt.date, pa.date32()),
        }
    )
    write = lake.overwrite_days(SCORED_TRANSACTIONS, table, days[0], days[-1])
    context.log.info(
        f"Scored {rows} transactions of {describe_days(days)} with {champion.name} "
        f"v{champion.version}: {int(flagged.sum())} flagged"
    )
    return dg.MaterializeResult(
        metadata={
            **write.metadata(table.schema),
            "days": describe_days(days),
            "model_version": int(champion.version),
            "model_alias": champion.alias,
            "threshold": champion.threshold,
            "flagged_rows": int(flagged.sum()),
            "flagged_share": float(flagged.mean()),
            "mean_fraud_score": float(scores.mean()),
        }
    )
