"""The ``fraud_model`` and ``registered_model`` assets."""

import tempfile
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN
from mlops_assets.lineage import code_version
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS
from mlops_assets.train.model import (
    DEFAULT_PARAMS,
    best_f1_threshold,
    evaluate,
    fit_xgboost,
    fraud_scores,
    model_inputs,
)
from mlops_assets.train.split import choose_window
from mlops_assets.validate.contract import CONTRACT_VERSION, contract_hash

REFERENCE_ARTIFACT = "reference/features.parquet"
REFERENCE_ROWS = 50_000
FRAUD_MODEL = dg.AssetKey("fraud_model")


class TrainingConfig(dg.Config):
    """Which feature partitions to train on (set in the launchpad)."""

    window_days: int = 7
    holdout_days: int = 1
    end_date: str | None = None
    """Last day of the window (ISO date); default: the latest day with features."""


def model_requirements() -> list[str]:
    """Pinned runtime requirements of the logged model (skips MLflow's slow inference)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("xgboost", "scikit-learn", "pandas", "numpy")]


def _days(frame: pd.DataFrame, days: list[date]) -> pd.DataFrame:
    return frame[frame["txn_date"].isin(days)]


@dg.asset(
    deps=["transaction_features"],
    group_name="train",
    kinds={"xgboost", "mlflow", "python"},
)
def fraud_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    lake: DeltaLake,
    mlflow_tracking: MlflowTracking,
) -> dg.MaterializeResult:
    """An XGBoost (`hist`) fraud classifier trained on a window of daily feature partitions,
    judged on later held-out days (time-based split). The decision threshold maximises F1 on the
    last fitting day; PR-AUC, ROC-AUC, precision and recall on the holdout, the model (with
    signature and input example) and a reference sample for drift are logged to MLflow."""
    import mlflow
    from mlflow.models import infer_signature

    end = date.fromisoformat(config.end_date) if config.end_date else None
    validated_days = set(lake.days(VALIDATED_TRANSACTIONS))
    # a day whose previous day was never delivered has truncated 24-hour history features
    complete_days = [
        d for d in lake.days(TRANSACTION_FEATURES) if d - timedelta(days=1) in validated_days
    ]
    try:
        window = choose_window(complete_days, config.window_days, config.holdout_days, end)
    except ValueError as error:
        raise dg.Failure(description=str(error)) from error
    features_version = lake.version(TRANSACTION_FEATURES)
    frame = lake.read(
        TRANSACTION_FEATURES, days=window.all_days, version=features_version
    ).to_pandas()
    frame["txn_date"] = pd.to_datetime(frame["txn_date"]).dt.date

    fit_days = window.fit_days
    train_days = fit_days[:-1] if len(fit_days) > 1 else fit_days
    calibration_days = fit_days[-1:]
    train = _days(frame, train_days)
    calibration = _days(frame, calibration_days)
    holdout = _days(frame, window.holdout_days)
    context.log.info(
        f"Training on {len(train)} rows ({train_days[0]}..{train_days[-1]}), threshold on "
        f"{calibration_days[0]}, holdout {len(holdout)} rows ({window.holdout_days[0]}.."
        f"{window.holdout_days[-1]})"
    )

    columns = list(FEATURE_COLUMNS)
    train_inputs = model_inputs(train, columns)
    try:
        model = fit_xgboost(train_inputs, train[LABEL_COLUMN])
        threshold = best_f1_threshold(
            calibration[LABEL_COLUMN].to_numpy(),
            fraud_scores(model, model_inputs(calibration, columns)),
        )
        holdout_scores = fraud_scores(model, model_inputs(holdout, columns))
        metrics = evaluate(holdout[LABEL_COLUMN].to_numpy(), holdout_scores, threshold)
    except ValueError as error:
        raise dg.Failure(description=str(error)) from error

    lineage = {
        "lineage.dagster_run_id": context.run.run_id,
        "lineage.partition_range": f"{window.first_day}..{window.last_day}",
        "lineage.fit_days": f"{fit_days[0]}..{fit_days[-1]}",
        "lineage.holdout_days": f"{window.holdout_days[0]}..{window.holdout_days[-1]}",
        "lineage.delta_version.transaction_features": str(features_version),
        "lineage.delta_version.validated_transactions": str(lake.version(VALIDATED_TRANSACTIONS)),
        "lineage.contract_version": CONTRACT_VERSION,
        "lineage.contract_hash": contract_hash(),
        "lineage.code_version": code_version(),
        "lineage.device": "cpu",
    }
    with mlflow_tracking.start_run(context, run_name="fraud_model") as run:
        mlflow.set_tags(lineage)
        mlflow.log_params(
            {
                **DEFAULT_PARAMS,
                "features": len(columns),
                "train_rows": len(train),
                "holdout_rows": len(holdout),
            }
        )
        mlflow.log_metrics({**metrics.as_dict(), "baseline_pr_auc": metrics.fraud_rate})
        example = train_inputs.head(5)
        info = mlflow.xgboost.log_model(
            model,
            name="model",
            pip_requirements=model_requirements(),
            signature=infer_signature(example, fraud_scores(model, example)),
            input_example=example,
            model_type="fraud_classifier",
        )
        reference = train.sample(n=min(REFERENCE_ROWS, len(train)), random_state=0)[
            [*columns, "type", LABEL_COLUMN]
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "features.parquet"
            reference.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path="reference")
        run_id = run.info.run_id
        experiment_id = run.info.experiment_id

    context.log.info(
        f"Holdout PR-AUC {metrics.pr_auc:.3f} (baseline {metrics.fraud_rate:.4f}), "
        f"ROC-AUC {metrics.roc_auc:.3f}, precision {metrics.precision:.3f}, "
        f"recall {metrics.recall:.3f} at threshold {metrics.threshold:.3f}"
    )
    return dg.MaterializeResult(
        metadata={
            **{k: float(v) for k, v in metrics.as_dict().items()},
            "pr_auc_lift_over_baseline": float(metrics.pr_auc / max(metrics.fraud_rate, 1e-12)),
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(experiment_id, run_id)),
            "mlflow_run_id": run_id,
            "model_uri": info.model_uri,
            "training_window": f"{window.first_day}..{window.last_day}",
            "lineage": dg.MetadataValue.json(lineage),
        }
    )


@dg.asset(deps=[FRAUD_MODEL], group_name="train", kinds={"mlflow"})
def registered_model(
    context: dg.AssetExecutionContext,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
) -> dg.MaterializeResult:
    """The latest `fraud_model` registered in the MLflow model registry as a new version of
    the policy's model name, carrying its lineage tags and decision threshold, and given the
    alias that batch scoring loads (`champion` by default)."""
    import mlflow

    event = context.instance.get_latest_materialization_event(FRAUD_MODEL)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(description="fraud_model has never been materialized; train it first")
    upstream = event.asset_materialization.metadata
    run_id = upstream["mlflow_run_id"].value
    client = mlflow_tracking.client()
    run = client.get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("lineage.")}
    tags["threshold"] = str(run.data.metrics["threshold"])
    tags["mlflow_run_id"] = run_id
    version = mlflow.register_model(upstream["model_uri"].value, policy.model_name, tags=tags)
    client.set_registered_model_alias(policy.model_name, policy.model_alias, version.version)
    context.log.info(
        f"Registered {policy.model_name} version {version.version} as @{policy.model_alias}"
    )
    return dg.MaterializeResult(
        metadata={
            "model_name": policy.model_name,
            "model_version": int(version.version),
            "alias": policy.model_alias,
            "mlflow_model_version": dg.MetadataValue.url(
                mlflow_tracking.model_version_url(policy.model_name, version.version)
            ),
            "mlflow_run_id": run_id,
            "pr_auc": float(run.data.metrics["pr_auc"]),
            "threshold": float(run.data.metrics["threshold"]),
        }
    )
