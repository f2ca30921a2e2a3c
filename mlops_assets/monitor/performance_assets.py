"""The ``model_performance`` asset: the champion's precision, recall and PR-AUC on a day, once
that day's labels have arrived, and its check."""

from collections.abc import Iterator

import dagster as dg

from mlops_assets.automation import refresh_when_upstream_day_changes
from mlops_assets.monitor.alerts import Alert
from mlops_assets.monitor.performance import PerformanceRule, day_performance, performance_level
from mlops_assets.monitor.segments import (
    SegmentRule,
    segment_quality,
    segments_markdown,
    weak_segments,
)
from mlops_assets.partitions import daily_partitions, partition_days
from mlops_assets.registry.versions import version_tags
from mlops_assets.resources.alerts import AlertSink
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import SCORED_TRANSACTIONS, TRANSACTION_LABELS, VALIDATED_TRANSACTIONS

MODEL_PERFORMANCE = dg.AssetKey("model_performance")
PERFORMANCE_CHECK = "performance_within_threshold"
SEGMENT_CHECK = "segment_recall_within_threshold"


@dg.asset(
    partitions_def=daily_partitions,
    deps=["scored_transactions", "transaction_labels"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    automation_condition=refresh_when_upstream_day_changes(),
    group_name="monitor",
    kinds={"delta", "scikitlearn"},
    check_specs=[
        dg.AssetCheckSpec(
            PERFORMANCE_CHECK,
            asset=MODEL_PERFORMANCE,
            partitions_def=daily_partitions,
            description="The day's PR-AUC against the scoring model's holdout PR-AUC: WARN from "
            "a relative drop of MLOPS_PERFORMANCE_WARN_DROP, ERROR from "
            "MLOPS_PERFORMANCE_ERROR_DROP (an ERROR requests retraining).",
        ),
        dg.AssetCheckSpec(
            SEGMENT_CHECK,
            asset=MODEL_PERFORMANCE,
            partitions_def=daily_partitions,
            description="No transaction type or amount band with at least "
            "MLOPS_SEGMENT_MIN_FRAUD_ROWS fraud labels has a recall more than "
            "MLOPS_SEGMENT_RECALL_DROP below the day's overall recall (WARN: a segment the model "
            "misses, hidden by the overall figures).",
        ),
    ],
)
def model_performance(
    context: dg.AssetExecutionContext,
    lake: DeltaLake,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
    alerts: AlertSink,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """How the model that scored a day did on it, measured only once that day's labels were
    delivered (they arrive days later; until then this day waits): precision and recall at the
    model's decision, PR-AUC of its scores, label coverage, and the drop against the model's
    holdout PR-AUC. Numeric metadata, so the UI plots it over days."""
    import numpy as np
    import polars as pl

    days = partition_days(context)
    scores = pl.from_arrow(
        lake.read(
            SCORED_TRANSACTIONS,
            days=days,
            columns=["transaction_id", "fraud_score", "is_fraud_predicted", "model_version"],
        )
    )
    labels = pl.from_arrow(
        lake.read(TRANSACTION_LABELS, days=days, columns=["transaction_id", "isFraud"])
    )
    # the segments' attributes, read from the validated rows the scores came from
    attributes = pl.from_arrow(
        lake.read(VALIDATED_TRANSACTIONS, days=days, columns=["transaction_id", "type", "amount"])
    )
    if scores.height == 0 or labels.height == 0:
        missing = "scored_transactions" if scores.height == 0 else "transaction_labels"
        raise dg.Failure(description=f"{missing} has no rows for {days[0]}..{days[-1]}")
    joined = scores.join(labels, on="transaction_id", how="inner")
    versions = scores["model_version"].value_counts(sort=True)
    version = str(versions["model_version"][0])
    tags = version_tags(mlflow_tracking.client(), policy.model_name, version)
    holdout_pr_auc = float(tags.get("holdout.pr_auc", "nan"))
    performance = day_performance(
        joined["isFraud"].to_numpy(),
        joined["fraud_score"].to_numpy(),
        joined["is_fraud_predicted"].to_numpy().astype(int),
        scores.height,
    )
    segment_rule = SegmentRule(
        policy.segment_recall_drop,
        policy.segment_min_fraud_rows,
        tuple(policy.segment_amount_bands),
    )
    segments = segment_quality(
        joined.join(attributes, on="transaction_id", how="inner"), segment_rule.amount_bands
    )
    weak = weak_segments(segments, performance.recall, segment_rule)
    segment_text = (
        "no segment's recall is far below the whole"
        if not weak
        else "; ".join(
            f"{s.dimension} {s.segment}: recall {s.recall:.3f} vs {performance.recall:.3f} overall "
            f"({s.fraud_rows} fraud rows)"
            for s in weak
        )
    )
    rule = PerformanceRule(policy.performance_warn_drop, policy.performance_error_drop)
    level, drop, explanation = performance_level(performance, holdout_pr_auc, rule)
    context.log.info(
        f"{days[0]}..{days[-1]}: model v{version} precision {performance.precision:.3f}, recall "
        f"{performance.recall:.3f}, {explanation}"
    )
    if performance.label_coverage < policy.min_label_coverage:
        context.log.warning(
            f"{days[0]}..{days[-1]}: only {performance.label_coverage:.1%} of the scored "
            f"transactions have a label (expected at least {policy.min_label_coverage:.0%}): the "
            "quality figures rest on few rows"
        )
    if level in ("warn", "error"):
        alerts.send(
            Alert(
                title=f"Model v{version} quality {level} on {days[0]}..{days[-1]}",
                text=explanation,
                severity="error" if level == "error" else "warning",
                link=mlflow_tracking.dagster_run_url(context.run.run_id),
                link_text="Dagster run",
                fields={
                    "PR-AUC": f"{performance.pr_auc:.4f}",
                    "Precision / recall": f"{performance.precision:.3f} / {performance.recall:.3f}",
                    "Labelled rows": str(performance.labelled_rows),
                },
            ),
            context.log,
        )
    yield dg.MaterializeResult(
        metadata={
            "pr_auc": performance.pr_auc,
            "precision": performance.precision,
            "recall": performance.recall,
            "pr_auc_drop": drop,
            "holdout_pr_auc": holdout_pr_auc,
            "level": level,
            "labelled_rows": performance.labelled_rows,
            "fraud_rows": performance.fraud_rows,
            "label_coverage": performance.label_coverage,
            "min_label_coverage": policy.min_label_coverage,
            "warn_drop": rule.warn_drop,
            "error_drop": rule.error_drop,
            "model_version": int(version),
            "model_versions_scoring": dg.MetadataValue.json(
                {str(v): int(n) for v, n in versions.iter_rows()}
            ),
            "segments": dg.MetadataValue.md(segments_markdown(segments, weak)),
            "segments_json": dg.MetadataValue.json([s.as_dict() for s in segments]),
            "weak_segments": len(weak),
        }
    )
    yield dg.AssetCheckResult(
        check_name=PERFORMANCE_CHECK,
        asset_key=MODEL_PERFORMANCE,
        passed=level in ("ok", "unknown"),
        severity=dg.AssetCheckSeverity.ERROR if level == "error" else dg.AssetCheckSeverity.WARN,
        description=explanation,
        metadata={
            "level": level,
            "pr_auc": performance.pr_auc,
            "pr_auc_drop": drop if not np.isnan(drop) else -1.0,
            "warn_drop": rule.warn_drop,
            "error_drop": rule.error_drop,
        },
    )
    if weak:
        context.log.warning(f"{days[0]}..{days[-1]}: {segment_text}")
    yield dg.AssetCheckResult(
        check_name=SEGMENT_CHECK,
        asset_key=MODEL_PERFORMANCE,
        passed=not weak,
        severity=dg.AssetCheckSeverity.WARN,
        description=segment_text,
        metadata={
            "weak_segments": dg.MetadataValue.json([s.as_dict() for s in weak]),
            "overall_recall": performance.recall,
            "max_recall_drop": segment_rule.max_recall_drop,
            "min_fraud_rows": segment_rule.min_fraud_rows,
        },
    )
