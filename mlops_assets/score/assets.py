"""The ``scored_transactions`` asset."""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pyarrow as pa

from mlops_assets.features.definition import FEATURE_COLUMNS
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.registry.champion import load_xgboost, resolve_alias
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import SCORED_TRANSACTIONS, TRANSACTION_FEATURES
from mlops_assets.train.model import fraud_scores, model_inputs


@dg.asset(
    partitions_def=daily_partitions,
    deps=["transaction_features", "registered_model"],
    group_name="score",
    kinds={"delta", "xgboost", "mlflow"},
)
def scored_transactions(
    context: dg.AssetExecutionContext,
    lake: DeltaLake,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
) -> dg.MaterializeResult:
    """Batch fraud scores for the day's transactions from the registered model version behind
    the scoring alias (`champion`): score, decision at the model's threshold, and the model
    name and version on every row."""
    day = partition_day(context)
    champion = resolve_alias(mlflow_tracking, policy.model_name, policy.model_alias)
    features = lake.read(TRANSACTION_FEATURES, days=[day]).to_pandas()
    if features.empty:
        raise dg.Failure(description=f"transaction_features has no rows for {day}")
    model = load_xgboost(champion)
    scores = fraud_scores(model, model_inputs(features, FEATURE_COLUMNS))
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
        }
    )
    write = lake.overwrite_day(SCORED_TRANSACTIONS, table, day)
    context.log.info(
        f"Scored {rows} transactions of {day} with {champion.name} v{champion.version}: "
        f"{int(flagged.sum())} flagged"
    )
    return dg.MaterializeResult(
        metadata={
            **write.metadata(table.schema),
            "model_version": int(champion.version),
            "model_alias": champion.alias,
            "threshold": champion.threshold,
            "flagged_rows": int(flagged.sum()),
            "flagged_share": float(flagged.mean()),
            "mean_fraud_score": float(scores.mean()),
        }
    )
