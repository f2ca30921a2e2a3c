"""The ``drift_report`` asset and its check."""

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.automation import refresh_when_upstream_day_changes
from mlops_assets.features.definition import FEATURE_COLUMNS
from mlops_assets.monitor.alerts import Alert
from mlops_assets.monitor.drift import DriftSummary
from mlops_assets.partitions import (
    CheckEvent,
    checks_by_day,
    daily_partitions,
    days_with_rows,
    describe_days,
    partition_days,
)
from mlops_assets.registry.champion import AliasedModel, load_scorer, resolve_alias
from mlops_assets.resources.alerts import AlertSink
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import TRANSACTION_FEATURES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

#: Type indicators are compared as the one categorical ``type`` column instead.
DRIFT_NUMERICAL = [c for c in FEATURE_COLUMNS if not c.startswith("is_")]
DRIFT_CATEGORICAL = ["type"]
REFERENCE_ARTIFACT_DIR = "reference"
#: The champion's fraud probability, compared like a feature (prediction drift)
PREDICTION = "fraud_score"
DRIFT_REPORT = dg.AssetKey("drift_report")
#: rows per batch when a big day's drift sample is read
SAMPLE_BATCH_ROWS = 262_144


def training_reference(mlflow_tracking: MlflowTracking, model: AliasedModel) -> "pd.DataFrame":
    """The sample of training features logged with the model's MLflow run."""
    import mlflow.artifacts
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=model.run_id,
            artifact_path=f"{REFERENCE_ARTIFACT_DIR}/features.parquet",
            dst_path=tmp,
            tracking_uri=mlflow_tracking.tracking_uri,
        )
        return pd.read_parquet(local)


def score_in_slices(
    score: "Callable[[pd.DataFrame], np.ndarray]", frame: "pd.DataFrame", rows: int = 262_144
) -> "np.ndarray":
    """The scores of ``frame``, ``rows`` at a time: the model's input copies of a big day stay a
    slice's size."""
    import numpy as np

    if len(frame) <= rows:
        return score(frame)
    return np.concatenate([score(frame.iloc[at : at + rows]) for at in range(0, len(frame), rows)])


def _day_report(
    lake: DeltaLake,
    policy: PipelinePolicy,
    reference: "pd.DataFrame",
    score: "Callable[[pd.DataFrame], np.ndarray]",
    day: date,
) -> tuple[DriftSummary, str]:
    from mlops_assets.monitor.drift import compute_drift

    columns = [*FEATURE_COLUMNS, *DRIFT_CATEGORICAL]
    rows = lake.day_rows(TRANSACTION_FEATURES, [day]).get(day, 0)
    sample = day_sample(rows, policy.drift_max_rows, day)
    if sample is None:
        current = lake.read(TRANSACTION_FEATURES, days=[day], columns=columns).to_pandas()
    else:
        current = sampled_rows(lake, day, columns, sample).to_pandas()
    if current.empty:
        raise dg.Failure(
            description=f"transaction_features has no rows for {day}: materialize it first"
        )
    current[PREDICTION] = score_in_slices(score, current)
    summary = compute_drift(
        reference,
        current,
        numerical=[*DRIFT_NUMERICAL, PREDICTION],
        categorical=DRIFT_CATEGORICAL,
        drift_share_threshold=policy.drift_share_threshold,
        max_rows=policy.drift_max_rows,
        seed=0,
    )
    if sample is not None:
        summary = replace(summary, sampled=True)
    return summary, lake.write_report(summary.html, "drift_report", f"{day.isoformat()}.html")


def sampled_rows(
    lake: DeltaLake, day: date, columns: list[str], positions: "np.ndarray"
) -> "pa.Table":
    """The rows at ``positions`` (sorted) of a day's features, read in batches: only the sample
    and one batch are ever in memory, never the whole day (Arrow's ``take`` on a whole day's
    chunked table would also copy every column first)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    scanned = lake.dataset(TRANSACTION_FEATURES).to_batches(
        columns=columns,
        filter=pc.field("txn_date") == pa.scalar(day, pa.date32()),
        batch_size=SAMPLE_BATCH_ROWS,
        batch_readahead=1,
        fragment_readahead=1,
    )
    picked: list[pa.RecordBatch] = []
    schema = None
    start = 0
    for batch in scanned:
        schema = batch.schema
        end = start + batch.num_rows
        low, high = np.searchsorted(positions, [start, end])
        if high > low:
            picked.append(batch.take(pa.array(positions[low:high] - start)))
        start = end
    if schema is None:
        return lake.read(TRANSACTION_FEATURES, days=[day], columns=columns)
    return pa.Table.from_batches(picked, schema=schema)


def day_sample(rows: int, max_rows: int, day: date) -> "np.ndarray | None":
    """Sorted positions of ``max_rows`` of a day's ``rows`` (None when all fit), drawn before
    the day becomes a pandas frame and is scored: a 5,000,000-row day's report then converts
    and scores 50,000 rows, not 5,000,000. Seeded by the day, so a re-run samples the same."""
    import numpy as np

    from mlops_assets.monitor.drift import sample_positions

    return sample_positions(rows, max_rows, np.random.default_rng(day.toordinal()))


@dg.asset(
    partitions_def=daily_partitions,
    deps=["transaction_features", "champion_model"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    automation_condition=refresh_when_upstream_day_changes(ignore=("champion_model",)),
    group_name="monitor",
    kinds={"evidently", "html"},
    check_specs=[
        dg.AssetCheckSpec(
            "drift_share_within_threshold",
            asset=DRIFT_REPORT,
            partitions_def=daily_partitions,
            description="WARN when the share of drifted columns (features and the champion's "
            "predictions) reaches MLOPS_DRIFT_SHARE_THRESHOLD, ERROR from "
            "MLOPS_DRIFT_SHARE_ERROR.",
        )
    ],
)
def drift_report(
    context: dg.AssetExecutionContext,
    lake: DeltaLake,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
    alerts: AlertSink,
) -> Iterator[dg.MaterializeResult | CheckEvent]:
    """Evidently data-drift report of the day's features and of the champion's predictions
    (`fraud_score`) against the champion's training reference: drift per column with the
    statistical test used, prediction drift, the share of drifted columns (numeric metadata, so
    the UI plots it over days), and the HTML report saved in the lake's reports area and linked
    here."""
    from mlops_assets.monitor.drift import top_drifted

    days = partition_days(context)
    champion = resolve_alias(mlflow_tracking, policy.model_name, policy.model_alias)
    reference = training_reference(mlflow_tracking, champion)
    score = load_scorer(champion)
    reference[PREDICTION] = score(reference)
    reports: dict[str, tuple[DriftSummary, str]] = {}
    present = days_with_rows(
        context, lake.day_rows(TRANSACTION_FEATURES, days), "transaction_features"
    )
    for day in present:
        summary, report_uri = _day_report(lake, policy, reference, score, day)
        reports[day.isoformat()] = (summary, report_uri)
    # a single day is described by its own report; a range by its most drifted day
    worst_day = max(reports, key=lambda d: reports[d][0].drift_share)
    summary, report_uri = reports[worst_day]
    # one line for the run (each day's figures are in its check and the metadata): an event
    # log entry per day would cost a backfill of a year 365 writes
    context.log.info(
        f"{describe_days(days)}: "
        + (f"most drifted {worst_day}, " if len(days) > 1 else "")
        + f"{summary.drifted_columns}/{summary.total_columns} columns drifted "
        f"(share {summary.drift_share:.2f}); report at {report_uri}"
    )
    per_column = {
        c.column: {
            "test": c.stattest,
            "score": c.score,
            "threshold": c.threshold,
            "drifted": c.drifted,
        }
        for c in summary.columns
    }
    drifted_days = [d for d, (s, _) in reports.items() if s.dataset_drift]
    error_days = [d for d, (s, _) in reports.items() if s.drift_share >= policy.drift_share_error]
    prediction = next((c for c in summary.columns if c.column == PREDICTION), None)
    yield dg.MaterializeResult(
        metadata={
            "days": describe_days(days),
            "drift_share": summary.drift_share,
            "drifted_columns": summary.drifted_columns,
            "total_columns": summary.total_columns,
            "dataset_drift": summary.dataset_drift,
            "top_drifted_columns": dg.MetadataValue.json(top_drifted(summary)),
            "columns": dg.MetadataValue.json(per_column),
            "report": dg.MetadataValue.path(report_uri),
            "report_url": dg.MetadataValue.url(
                report_uri if "://" in report_uri else f"file://{report_uri}"
            ),
            "drift_share_by_day": dg.MetadataValue.json(
                {d: s.drift_share for d, (s, _) in reports.items()}
            ),
            "reports_by_day": dg.MetadataValue.json({d: uri for d, (_, uri) in reports.items()}),
            "reference_model_version": int(champion.version),
            "prediction_drift_score": prediction.score if prediction else -1.0,
            "prediction_drift_test": prediction.stattest if prediction else "",
            "prediction_drifted": bool(prediction.drifted) if prediction else False,
            "reference_rows": summary.reference_rows,
            "current_rows": summary.current_rows,
            "sampled": summary.sampled,
        }
    )
    for day in drifted_days:
        day_summary, day_uri = reports[day]
        alerts.send(
            Alert(
                title=f"Drift on {day} against champion v{champion.version}",
                text=f"{day_summary.drifted_columns} of {day_summary.total_columns} columns "
                f"drifted (share {day_summary.drift_share:.2f}); most drifted: "
                f"{', '.join(top_drifted(day_summary, only_drifted=True))}",
                severity="error" if day in error_days else "warning",
                link=day_uri if "://" in day_uri else f"file://{day_uri}",
                link_text="Drift report",
                fields={
                    "Drift share": f"{day_summary.drift_share:.2f}",
                    "Warn / error at": f"{policy.drift_share_threshold} / "
                    f"{policy.drift_share_error}",
                    "Dagster run": mlflow_tracking.dagster_run_url(context.run.run_id),
                },
            ),
            context.log,
        )
    by_day = {
        day: [
            dg.AssetCheckResult(
                check_name="drift_share_within_threshold",
                passed=day not in drifted_days,
                severity=dg.AssetCheckSeverity.ERROR
                if day in error_days
                else dg.AssetCheckSeverity.WARN,
                description=f"drift share {day_summary.drift_share:.2f} (warn at "
                f"{policy.drift_share_threshold:.2f}, error at {policy.drift_share_error:.2f})",
                metadata={
                    "drift_share": day_summary.drift_share,
                    "threshold": policy.drift_share_threshold,
                    "error_threshold": policy.drift_share_error,
                    "drifted": day in drifted_days,
                    "report": dg.MetadataValue.path(day_uri),
                    "reference_model_version": int(champion.version),
                },
            )
        ]
        for day, (day_summary, day_uri) in reports.items()
    }
    yield from checks_by_day(context, DRIFT_REPORT, by_day)
