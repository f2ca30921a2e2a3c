"""Resolve the registered model version behind an alias and load it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.resources.mlflow_tracking import MlflowTracking


@dataclass(frozen=True)
class AliasedModel:
    """A model version found through its alias, with what scoring needs from it."""

    name: str
    alias: str
    version: str
    run_id: str
    threshold: float
    family: str = "xgboost"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        # by version, not alias: the alias may move while this materialization runs
        return f"models:/{self.name}/{self.version}"


def find_alias(client: Any, name: str, alias: str) -> AliasedModel | None:
    """The version ``name@alias``, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    threshold = version.tags.get("threshold")
    if threshold is None:
        threshold = client.get_run(version.run_id).data.metrics["threshold"]
    return AliasedModel(
        name=name,
        alias=alias,
        version=str(version.version),
        run_id=version.run_id,
        threshold=float(threshold),
        family=version.tags.get("model_family", "xgboost"),
        tags=dict(version.tags),
    )


def resolve_alias(mlflow_tracking: MlflowTracking, name: str, alias: str) -> AliasedModel:
    """The version ``name@alias``; a clear dg.Failure when there is none yet."""
    found = find_alias(mlflow_tracking.client(), name, alias)
    if found is None:
        raise dg.Failure(
            description=f"No MLflow model version {name}@{alias} in {mlflow_tracking.tracking_uri}"
            ": train and promote a model first (training_job, which ends in champion_model)"
        )
    return found


def load_scorer(
    model: AliasedModel, threads: int | None = None
) -> Callable[[pd.DataFrame], np.ndarray]:
    """A function from a feature frame to fraud probabilities, for that version's family;
    ``threads`` limits an XGBoost model's prediction threads (1 for a few rows at a time: no
    OpenMP hand-offs between cores another process may hold)."""
    from mlops_assets.train.families import family

    model_family = family(model.family)
    loaded = model_family.load(model.uri)
    if threads is not None and hasattr(loaded, "get_booster"):
        loaded.get_booster().set_param({"nthread": threads})
    return lambda frame: model_family.scores(loaded, frame)
