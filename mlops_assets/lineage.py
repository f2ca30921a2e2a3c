"""What a model version records about where it came from (the lineage contract of DESIGN.md)."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@cache
def code_version() -> str:
    """The git commit of the code (``+dirty`` when uncommitted changes exist), else the version."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return f"{commit}+dirty" if dirty else commit
    except (OSError, subprocess.SubprocessError):
        try:
            return f"mlops-assets=={version('mlops-assets')}"
        except PackageNotFoundError:
            return "unknown"


def lineage_tags(
    context: Any,
    mlflow_tracking: Any,
    spec: Any,
    family: str,
    device: str,
    study: str,
    trial: int,
) -> dict[str, str]:
    """The lineage contract of a model version, as MLflow tags (``lineage.*``).

    ``spec`` is the ``TrainingSetSpec`` the model was trained on; with these tags alone the
    exact training set can be rebuilt (``mlops-assets rebuild-training-set``).
    """
    from mlops_assets.validate.contract import CONTRACT_VERSION, contract_hash

    run_id = context.run.run_id
    return {
        "lineage.dagster_run_id": run_id,
        "lineage.dagster_run_url": mlflow_tracking.dagster_run_url(run_id),
        "lineage.dagster_asset": context.asset_key.to_user_string(),
        "lineage.partition_range": spec.partition_range,
        "lineage.fit_days": ",".join(spec.fit_days),
        "lineage.holdout_days": ",".join(spec.holdout_days),
        "lineage.delta_version.transaction_features": str(spec.features_version),
        "lineage.delta_version.validated_transactions": str(spec.validated_version),
        "lineage.training_rows": str(spec.rows),
        "lineage.training_hash": spec.content_hash,
        "lineage.contract_version": CONTRACT_VERSION,
        "lineage.contract_hash": contract_hash(),
        "lineage.code_version": code_version(),
        "lineage.optuna_study": study,
        "lineage.optuna_trial": str(trial),
        "lineage.model_family": family,
        "lineage.device": device,
    }


def spec_from_tags(tags: dict[str, str]) -> Any:
    """The ``TrainingSetSpec`` recorded in a model version's lineage tags."""
    from mlops_assets.train.dataset import TrainingSetSpec

    try:
        validated = tags["lineage.delta_version.validated_transactions"]
        return TrainingSetSpec(
            fit_days=tuple(tags["lineage.fit_days"].split(",")),
            holdout_days=tuple(tags["lineage.holdout_days"].split(",")),
            features_version=int(tags["lineage.delta_version.transaction_features"]),
            validated_version=None if validated == "None" else int(validated),
            rows=int(tags["lineage.training_rows"]),
            content_hash=tags["lineage.training_hash"],
        )
    except KeyError as error:
        raise ValueError(
            f"The model version has no {error.args[0]} tag: it was not trained by the model "
            "factory, so its training set cannot be rebuilt"
        ) from None
