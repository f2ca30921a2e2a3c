"""The model factory's assets: ``training_set``, then per family ``<family>_tuning`` (an Optuna
study, worked by one or several steps: ``tuning_asset.py``) and ``<family>_candidate`` (a
registered MLflow model version)."""

from collections.abc import Iterator
from datetime import date

import dagster as dg
from pydantic import Field

from mlops_assets.features.definition import LABEL_COLUMN
from mlops_assets.lineage import lineage_tags
from mlops_assets.registry.versions import register_version
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.train.candidate_fit import fit_candidate
from mlops_assets.train.checks import log_onnx, onnx_check_spec, onnx_outcome
from mlops_assets.train.dataset import (
    TrainingSetSpec,
    select_training_set,
)
from mlops_assets.train.families import FAMILIES, ModelFamily
from mlops_assets.train.k8s import gpu_training_op_tags
from mlops_assets.train.metrics import (
    best_f1_threshold,
    close_figure,
    confusion,
    evaluate,
    evaluation_figures,
)
from mlops_assets.train.pinned import TRAINING_SET
from mlops_assets.train.tuning_asset import build_tuning_asset
from mlops_assets.upstream import latest_metadata

REFERENCE_ROWS = 50_000
#: holdout rows whose contributions make the global importances
IMPORTANCE_ROWS = 5_000
#: metadata key and MLflow tag of how a candidate read its fit rows: in_memory | external_memory
TRAINING_DATA_PATH = "training_data_path"


class TrainingSetConfig(dg.Config):
    """Which feature partitions to train on (set in the launchpad)."""

    window_days: int = Field(7, description="Days in the window, holdout included.")
    holdout_days: int = Field(1, description="Latest days of the window held out for judging.")
    end_date: str | None = Field(
        None, description="Last day of the window (ISO date); default: the latest feature day."
    )


@dg.asset(deps=["transaction_features"], group_name="train", kinds={"delta", "pandas"})
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: DeltaLake
) -> dg.MaterializeResult:
    """The window of daily feature partitions the model factory trains on, pinned to the Delta
    version of `transaction_features` it was read at, with its row count and content hash.
    Split by time: the fit days (the last of them tunes hyper-parameters and the decision
    threshold) and the held-out days that judge every candidate and the champion alike."""
    end = date.fromisoformat(config.end_date) if config.end_date else None
    try:
        selected = select_training_set(lake, config.window_days, config.holdout_days, end)
    except ValueError as error:
        raise dg.Failure(description=str(error)) from error
    spec = selected.spec
    rates = {
        name: float(part[LABEL_COLUMN].mean()) if len(part) else 0.0
        for name, part in (
            ("train", selected.train),
            ("tuning", selected.tuning),
            ("holdout", selected.holdout),
        )
    }
    context.log.info(
        f"Training set {spec.partition_range}: {spec.rows} rows at transaction_features "
        f"v{spec.features_version}, hash {spec.content_hash[:12]}"
    )
    return dg.MaterializeResult(
        metadata={
            "spec": dg.MetadataValue.json(spec.as_metadata()),
            "dagster/row_count": spec.rows,
            "partition_range": spec.partition_range,
            "fit_days": f"{spec.fit_days[0]}..{spec.fit_days[-1]}",
            "holdout_days": f"{spec.holdout_days[0]}..{spec.holdout_days[-1]}",
            "transaction_features_delta_version": spec.features_version,
            "content_hash": spec.content_hash,
            "fraud_rate_by_split": dg.MetadataValue.json(rates),
            "rows_by_split": dg.MetadataValue.json(
                {
                    "train": len(selected.train),
                    "tuning": len(selected.tuning),
                    "holdout": len(selected.holdout),
                }
            ),
        }
    )


def build_candidate_asset(family: ModelFamily) -> dg.AssetsDefinition:
    """``<family>_candidate``: train with the best parameters, judge, register a version."""

    @dg.asset(
        name=f"{family.name}_candidate",
        deps=[TRAINING_SET, f"{family.name}_tuning"],
        group_name="train",
        kinds=set(family.kinds),
        op_tags=gpu_training_op_tags(),
        check_specs=[onnx_check_spec(f"{family.name}_candidate")],
        description=f"A {family.name} model trained with the study's best parameters on the "
        "training set's fit days, its decision threshold tuned for F1 on the tuning day, judged "
        "on the held-out days (PR-AUC, ROC-AUC, recall at the target precision, F1; PR curve "
        "and confusion matrix in MLflow), and registered as a new MLflow model version that "
        "carries the full lineage (Dagster run, partitions, Delta versions, contract, code, "
        "Optuna trial, device). Its ONNX copy is logged beside it and must match it on the "
        "holdout (check onnx_matches_native); global feature importances in MLflow.",
    )
    def candidate_asset(
        context: dg.AssetExecutionContext,
        lake: DeltaLake,
        mlflow_tracking: MlflowTracking,
        policy: PipelinePolicy,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        import mlflow

        from mlops_assets.train.explain import global_importances, importance_figure

        spec = TrainingSetSpec.from_metadata(latest_metadata(context, TRAINING_SET)["spec"])
        tuned = latest_metadata(context, f"{family.name}_tuning")
        params = dict(tuned["best_params"])
        budget = policy.training_memory_budget_mb
        try:
            fitted = fit_candidate(lake, spec, family, params, budget, REFERENCE_ROWS)
            context.log.info(fitted.plan.describe(family.name))
            model, tuning, holdout = fitted.model, fitted.tuning, fitted.holdout
            threshold = best_f1_threshold(
                tuning[LABEL_COLUMN].to_numpy(), family.scores(model, tuning)
            )
            labels = holdout[LABEL_COLUMN].to_numpy()
            scores = family.scores(model, holdout)
            metrics = evaluate(labels, scores, threshold, policy.target_precision)
        except ValueError as error:
            raise dg.Failure(description=str(error)) from error
        device = family.device()
        with mlflow_tracking.start_run(context, run_name=f"{family.name}_candidate") as run:
            tags = lineage_tags(
                context,
                mlflow_tracking,
                spec,
                family=family.name,
                device=device,
                study=str(tuned["study"]),
                trial=int(tuned["best_trial"]),
            )
            mlflow.set_tags({**tags, TRAINING_DATA_PATH: fitted.plan.path})
            mlflow.log_params(
                {**params, "train_rows": fitted.train_rows, "holdout_rows": len(holdout)}
            )
            mlflow.log_metrics({**metrics.as_dict(), "baseline_pr_auc": metrics.fraud_rate})
            mlflow.log_dict(
                confusion(labels, scores, threshold), "evaluation/confusion_matrix.json"
            )
            for name, figure in evaluation_figures(labels, scores, threshold, family.name).items():
                mlflow.log_figure(figure, f"evaluation/{name}")
                close_figure(figure)
            info = family.log_model(model, fitted.example)
            onnx = onnx_outcome(family.name, model, holdout, scores)
            onnx_artifact = log_onnx(onnx)
            if onnx.error:
                context.log.error(f"{family.name}: ONNX export failed: {onnx.error}")
            sample = holdout.sample(n=min(IMPORTANCE_ROWS, len(holdout)), random_state=0)
            importances = global_importances(family.name, model, sample)
            mlflow.log_dict(importances, "explanations/global_importances.json")
            figure = importance_figure(importances, f"{family.name}: mean |contribution|")
            mlflow.log_figure(figure, "explanations/global_importances.png")
            close_figure(figure)
            _log_reference(fitted.reference)
            run_id, experiment_id = run.info.run_id, run.info.experiment_id
        version = register_version(
            mlflow_tracking.client(),
            policy.model_name,
            info.model_uri,
            run_id,
            tags={
                **tags,
                "model_family": family.name,
                TRAINING_DATA_PATH: fitted.plan.path,
                "threshold": repr(metrics.threshold),
                "mlflow_run_id": run_id,
                **{f"holdout.{k}": f"{v:.6f}" for k, v in metrics.as_dict().items()},
                **onnx.tags(onnx_artifact),
            },
        )
        context.log.info(
            f"{family.name}: holdout PR-AUC {metrics.pr_auc:.4f} (baseline "
            f"{metrics.fraud_rate:.4f}), recall@{metrics.target_precision:.0%} precision "
            f"{metrics.recall_at_precision:.3f}; registered {policy.model_name} v{version}"
        )
        yield dg.MaterializeResult(
            metadata={
                **{k: float(v) for k, v in metrics.as_dict().items()},
                "model_family": family.name,
                "model_name": policy.model_name,
                "model_version": int(version),
                "model_uri": info.model_uri,
                "device": device,
                TRAINING_DATA_PATH: fitted.plan.path,
                "training_data": dg.MetadataValue.json(fitted.metadata()),
                "best_params": dg.MetadataValue.json(params),
                "lineage": dg.MetadataValue.json(tags),
                "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(experiment_id, run_id)),
                "mlflow_model_version": dg.MetadataValue.url(
                    mlflow_tracking.model_version_url(policy.model_name, version)
                ),
                "mlflow_run_id": run_id,
                "onnx_parity": "passed" if onnx.passed else "failed",
                "onnx_artifact": onnx_artifact or "",
                "global_importances": dg.MetadataValue.json(importances),
            }
        )
        yield onnx.check_result()

    return candidate_asset


def _log_reference(reference) -> None:
    """A sample of the training features, the drift report's reference."""
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.parquet"
        reference.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path="reference")


TUNING_ASSETS = [build_tuning_asset(f) for f in FAMILIES.values()]
CANDIDATE_ASSETS = [build_candidate_asset(f) for f in FAMILIES.values()]
