"""The ``served_predictions`` asset: the model service's prediction log, kept compact by day."""

from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.partitions import daily_partitions, describe_days, partition_days
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import SERVED_PREDICTIONS

if TYPE_CHECKING:
    import pyarrow as pa

_SUMMARY_COLUMNS = [
    "fraud_score",
    "is_fraud_predicted",
    "model_version",
    "endpoint",
    "latency_ms",
    "shadow_model_version",
    "shadow_is_fraud_predicted",
]


def day_summary(rows: "pa.Table") -> dict[str, Any]:
    """What an analyst reads first about a day of served predictions."""
    import numpy as np

    count = rows.num_rows
    if count == 0:
        return {"dagster/row_count": 0}
    frame = rows.select(_SUMMARY_COLUMNS).to_pandas()
    summary: dict[str, Any] = {
        "dagster/row_count": count,
        "predictions_by_model_version": dg.MetadataValue.json(
            {str(k): int(v) for k, v in frame["model_version"].value_counts().items()}
        ),
        "predictions_by_endpoint": dg.MetadataValue.json(
            {str(k): int(v) for k, v in frame["endpoint"].value_counts().items()}
        ),
        "flagged_share": float(frame["is_fraud_predicted"].mean()),
        "mean_fraud_score": float(frame["fraud_score"].mean()),
        "latency_ms_p50": float(np.percentile(frame["latency_ms"], 50)),
        "latency_ms_p99": float(np.percentile(frame["latency_ms"], 99)),
    }
    shadowed = frame["shadow_model_version"].notna()
    summary["shadow_scored_rows"] = int(shadowed.sum())
    if shadowed.any():
        agree = frame.loc[shadowed, "shadow_is_fraud_predicted"].astype(bool) == frame.loc[
            shadowed, "is_fraud_predicted"
        ].astype(bool)
        summary["shadow_disagreement_share"] = float(1.0 - agree.mean())
    return summary


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="serve",
    kinds={"delta"},
)
def served_predictions(context: dg.AssetExecutionContext, lake: DeltaLake) -> dg.MaterializeResult:
    """Every prediction the online model service (`mlops-assets serve`) made for the day's
    transactions: the features as the model saw them, score, decision, model version, endpoint
    and latency, and the challenger's verdict in shadow mode. The service appends them in
    micro-batches, one small file per write every few seconds per replica. Materializing a day
    (or a range) compacts each day's files into a few large ones (the rows stay exactly as they
    were; appends made meanwhile are kept), deletes the files compaction removed more than a
    day ago (the table's retention), and reports the days: predictions by model version and
    endpoint, flagged share, served latency, and shadow disagreement."""
    days = partition_days(context)
    if not lake.exists(SERVED_PREDICTIONS):
        raise dg.Failure(
            description=f"{SERVED_PREDICTIONS.path} does not exist at "
            f"{lake.table_uri(SERVED_PREDICTIONS)}: the model service creates it with its first "
            "prediction-log write (`mlops-assets serve` with MLOPS_SERVE_LOG_PREDICTIONS=true)"
        )
    files_before = files_after = 0
    metrics: dict[str, Any] = {}
    for day in days:
        files = lake.day_files(SERVED_PREDICTIONS, day)
        if files > 1:
            metrics = lake.compact_day(SERVED_PREDICTIONS, day)
        after = lake.day_files(SERVED_PREDICTIONS, day)
        context.log.info(f"{day}: {files} file(s) of served predictions compacted into {after}")
        files_before, files_after = files_before + files, files_after + after
    vacuumed = lake.vacuum(SERVED_PREDICTIONS)
    rows = lake.read(SERVED_PREDICTIONS, days=days, columns=_SUMMARY_COLUMNS)
    if rows.num_rows == 0:
        context.log.warning(
            f"No served predictions for {describe_days(days)}: was the model service logging?"
        )
    context.log.info(
        f"{describe_days(days)}: {rows.num_rows} served predictions; {len(vacuumed)} "
        "unreferenced file(s) past retention deleted"
    )
    return dg.MaterializeResult(
        metadata={
            **day_summary(rows),
            "days": describe_days(days),
            "files_before": files_before,
            "files_after": files_after,
            "files_vacuumed": len(vacuumed),
            "delta_version": lake.version(SERVED_PREDICTIONS),
            "last_compaction_metrics": dg.MetadataValue.json(
                {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
            ),
            "table_uri": dg.MetadataValue.path(lake.table_uri(SERVED_PREDICTIONS)),
        }
    )
