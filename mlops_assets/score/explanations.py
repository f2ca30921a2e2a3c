"""The ``fraud_explanations`` asset: why the champion flagged each of the day's flagged
transactions, by the model version that scored them."""

from datetime import date
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from mlops_assets.automation import refresh_when_upstream_day_changes
from mlops_assets.partitions import daily_partitions, describe_days, partition_days
from mlops_assets.registry.champion import AliasedModel, load_scorer
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import FRAUD_EXPLANATIONS, SCORED_TRANSACTIONS, TRANSACTION_FEATURES

if TYPE_CHECKING:
    import pyarrow as pa


def explanations_schema() -> "pa.Schema":
    """The table's schema (a function: pyarrow loads with the step, not the code location)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("transaction_id", pa.string()),
            ("model_version", pa.int64()),
            ("rank", pa.int32()),
            ("feature", pa.string()),
            ("value", pa.string()),  # the raw value as text: numeric features and the type alike
            ("contribution", pa.float64()),
            ("txn_date", pa.date32()),
        ]
    )


class ExplanationsConfig(dg.Config):
    """Which scored rows to explain."""

    top_k: int = Field(5, ge=1, description="Contributions kept per transaction.")
    all_rows: bool = Field(
        False, description="Explain every scored transaction, not only the flagged ones."
    )


def scoring_version(client, name: str, version: int) -> AliasedModel:
    """A registered version by number, as scoring reads it (family, threshold, tags)."""
    found = client.get_model_version(name, str(version))
    return AliasedModel(
        name=name,
        alias=f"v{version}",
        version=str(found.version),
        run_id=found.run_id,
        threshold=float(found.tags.get("threshold", "nan")),
        family=found.tags.get("model_family", "xgboost"),
        tags=dict(found.tags),
    )


def explanation_rows(
    transaction_ids: list[str],
    version: int,
    days: list[date],
    explanations: list[list[dict]],
) -> "pa.Table":
    """The long table: one row per (transaction, rank)."""
    import pyarrow as pa

    schema = explanations_schema()
    columns: dict[str, list] = {field.name: [] for field in schema}
    for transaction_id, day, top in zip(transaction_ids, days, explanations, strict=True):
        for rank, item in enumerate(top, start=1):
            columns["transaction_id"].append(transaction_id)
            columns["model_version"].append(version)
            columns["rank"].append(rank)
            columns["feature"].append(item["feature"])
            value = item["value"]
            columns["value"].append(None if value is None else str(value))
            columns["contribution"].append(item["contribution"])
            columns["txn_date"].append(day)
    return pa.table(columns, schema=schema)


@dg.asset(
    partitions_def=daily_partitions,
    deps=["scored_transactions", "transaction_features"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    automation_condition=refresh_when_upstream_day_changes(),
    group_name="score",
    kinds={"delta", "mlflow"},
)
def fraud_explanations(
    context: dg.AssetExecutionContext,
    config: ExplanationsConfig,
    lake: DeltaLake,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
) -> dg.MaterializeResult:
    """The top feature contributions (log-odds; TreeSHAP for XGBoost, or its approximate
    contributions with MLOPS_EXPLAIN_METHOD=saabas, integrated gradients for the MLP) of each
    transaction the champion flagged that day, computed by the model version recorded on its
    `scored_transactions` row from the same `transaction_features` it scored: one row per
    transaction and rank. Only flagged rows by default: they are the ones an analyst
    reviews, and explaining a whole day costs several times its scoring (config `all_rows`)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    days = partition_days(context)
    scored = lake.read(
        SCORED_TRANSACTIONS,
        days=days,
        columns=["transaction_id", "is_fraud_predicted", "model_name", "model_version"],
    ).to_pandas()
    if scored.empty:
        raise dg.Failure(
            description=f"scored_transactions has no rows for {describe_days(days)}: "
            "materialize it first"
        )
    chosen = scored if config.all_rows else scored[scored["is_fraud_predicted"]]
    features = lake.read(TRANSACTION_FEATURES, days=days).to_pandas()
    features = features.set_index("transaction_id", drop=False)
    client = mlflow_tracking.client()
    tables, versions = [], []
    for (name, version), group in chosen.groupby(["model_name", "model_version"]):
        rows = features.loc[group["transaction_id"].to_numpy()]
        scorer = load_scorer(
            scoring_version(client, str(name), int(version)), explain_method=policy.explain_method
        )
        explained = scorer.explain(rows, config.top_k)
        row_days = pd.to_datetime(rows["txn_date"]).dt.date.tolist()
        tables.append(
            explanation_rows(rows["transaction_id"].tolist(), int(version), row_days, explained)
        )
        versions.append(int(version))
    table = pa.concat_tables(tables) if tables else explanations_schema().empty_table()
    write = lake.overwrite_days(FRAUD_EXPLANATIONS, table, days[0], days[-1])
    top_features = (
        table.group_by("feature")
        .aggregate([("contribution", "count")])
        .sort_by([("contribution_count", "descending")])
        .slice(0, 5)
        .to_pylist()
        if table.num_rows
        else []
    )
    context.log.info(
        f"Explained {len(chosen)} transactions of {describe_days(days)} "
        f"({'all' if config.all_rows else 'flagged'}) with versions {versions}"
    )
    return dg.MaterializeResult(
        metadata={
            **write.metadata(table.schema),
            "days": describe_days(days),
            "explained_transactions": len(chosen),
            "rows_scope": "all" if config.all_rows else "flagged",
            "model_versions": dg.MetadataValue.json(versions),
            "top_k": config.top_k,
            "xgboost_explain_method": policy.explain_method,
            "most_frequent_top_features": dg.MetadataValue.json(
                {item["feature"]: int(item["contribution_count"]) for item in top_features}
            ),
            "mean_abs_contribution": float(np.abs(table["contribution"].to_numpy()).mean())
            if table.num_rows
            else 0.0,
        }
    )
