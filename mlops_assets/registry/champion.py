"""Resolve the registered model version behind an alias and load it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from mlops_assets.resources.mlflow_tracking import MlflowTracking


@dataclass(frozen=True)
class AliasedModel:
    """A model version found through its alias, with what scoring needs from it."""

    name: str
    alias: str
    version: str
    run_id: str
    threshold: float

    @property
    def uri(self) -> str:
        # by version, not alias: the alias may move while this materialization runs
        return f"models:/{self.name}/{self.version}"


def resolve_alias(mlflow_tracking: MlflowTracking, name: str, alias: str) -> AliasedModel:
    """The version ``name@alias``; a clear dg.Failure when there is none yet."""
    from mlflow.exceptions import MlflowException

    client = mlflow_tracking.client()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        raise dg.Failure(
            description=f"No MLflow model version {name}@{alias} in {mlflow_tracking.tracking_uri}"
            ": materialize registered_model first"
        ) from error
    threshold = version.tags.get("threshold")
    if threshold is None:
        threshold = client.get_run(version.run_id).data.metrics["threshold"]
    return AliasedModel(
        name=name,
        alias=alias,
        version=str(version.version),
        run_id=version.run_id,
        threshold=float(threshold),
    )


def load_xgboost(model: AliasedModel) -> Any:
    """The XGBoost classifier of that version (native flavour, so scores match training)."""
    import mlflow.xgboost

    return mlflow.xgboost.load_model(model.uri)
