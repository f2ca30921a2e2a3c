"""Resolve the registered model version behind an alias and load it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.resources.mlflow_tracking import MlflowTracking

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


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


RUNTIMES = ("native", "onnx")


class ModelScorer:
    """A loaded version as a function from a feature frame to fraud probabilities
    (``scorer(frame) -> np.ndarray``), scored by its ``runtime`` (``native``: the family's own
    library; ``onnx``: onnxruntime over the version's exported ONNX copy), and able to
    ``explain`` rows with the native model (loaded on first use by an ONNX scorer)."""

    def __init__(
        self,
        model: AliasedModel,
        runtime: str,
        score: Callable[[pd.DataFrame], np.ndarray],
        native: Any = None,
        threads: int | None = None,
        explain_method: str = "treeshap",
    ) -> None:
        self.model = model
        self.runtime = runtime
        self.explain_method = explain_method  # XGBoost's: treeshap | saabas (train/explain.py)
        self._score = score
        self._native = native
        self._threads = threads
        self._explainer: Any = None
        self._lock = threading.Lock()

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return self._score(frame)

    def native_model(self) -> Any:
        """The family's own model object (loaded now if this scorer runs on ONNX)."""
        if self._native is None:
            with self._lock:
                if self._native is None:
                    self._native = _load_native(self.model, self._threads)
        return self._native

    def explain(self, frame: pd.DataFrame, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """Per row, the ``top_k`` feature contributions (log-odds) of largest magnitude."""
        from mlops_assets.train.explain import explain

        model = self._explaining_model()
        return explain(self.model.family, model, frame, self.explain_method).top(top_k)

    def _explaining_model(self) -> Any:
        """The native model, for XGBoost as a one-thread copy of its booster: explanations
        run beside the scoring thread, and two OpenMP teams on the same cores stall both."""
        if self._explainer is None:
            native = self.native_model()
            with self._lock:
                if self._explainer is None and hasattr(native, "get_booster"):
                    booster = native.get_booster().copy()
                    booster.set_param({"nthread": 1})
                    self._explainer = booster
                elif self._explainer is None:
                    self._explainer = native
        return self._explainer


def _load_native(model: AliasedModel, threads: int | None) -> Any:
    from mlops_assets.train.families import family

    loaded = family(model.family).load(model.uri)
    if threads is not None and hasattr(loaded, "get_booster"):
        loaded.get_booster().set_param({"nthread": threads})
    return loaded


def load_scorer(
    model: AliasedModel,
    threads: int | None = None,
    runtime: str = "native",
    explain_method: str = "treeshap",
) -> ModelScorer:
    """A scorer (feature frame -> fraud probabilities) for that version's family.

    ``threads`` limits the prediction threads (XGBoost's, or onnxruntime's intra-op threads; 1
    for a few rows at a time: no hand-offs between cores another process may hold).
    ``runtime="onnx"`` scores with onnxruntime over the version's ``onnx.artifact``; a version
    without an ONNX copy that passed its parity check is refused with a ``ValueError`` that
    says so (a model holder then keeps the version it serves). ``explain_method`` is how its
    ``explain`` explains an XGBoost model (``train/explain.py``: treeshap or saabas)."""
    from mlops_assets.train.explain import XGBOOST_METHODS

    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown scoring runtime {runtime!r}; expected one of {RUNTIMES}")
    if explain_method not in XGBOOST_METHODS:
        raise ValueError(
            f"Unknown explanation method {explain_method!r}; expected one of {XGBOOST_METHODS}"
        )
    if runtime == "onnx":
        return _onnx_scorer(model, threads, explain_method)
    from mlops_assets.train.families import family

    model_family = family(model.family)
    loaded = _load_native(model, threads)
    return ModelScorer(
        model,
        "native",
        lambda frame: model_family.scores(loaded, frame),
        loaded,
        threads,
        explain_method,
    )


def _onnx_scorer(model: AliasedModel, threads: int | None, explain_method: str) -> ModelScorer:
    import mlflow

    from mlops_assets.train.onnx_export import OnnxScorer

    artifact = model.tags.get("onnx.artifact")
    parity = model.tags.get("onnx.parity")
    if not artifact or parity != "passed":
        why = "has no ONNX artifact" if not artifact else f"has onnx.parity={parity!r}"
        raise ValueError(
            f"{model.name} v{model.version} {why}: the ONNX runtime serves only versions whose "
            "ONNX copy passed the parity check (onnx.parity=passed); serve it with the native "
            "runtime (MLOPS_SERVE_RUNTIME=native) or train a new version"
        )
    path = mlflow.artifacts.download_artifacts(run_id=model.run_id, artifact_path=artifact)
    scorer = OnnxScorer(model.family, path, threads=threads)
    return ModelScorer(model, "onnx", scorer, None, threads, explain_method)
