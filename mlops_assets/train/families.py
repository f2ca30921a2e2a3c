"""The model families the factory tunes and trains, behind one small interface.

A family knows its search space, how to fit on a training frame (reporting to an Optuna trial
for pruning), how to score a frame, and how to log and load itself with MLflow. The tuning and
candidate assets are built once for every family (``train/assets.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd

    from mlops_assets.train.xgboost_external import BatchStats


class ModelFamily(Protocol):
    """One kind of model: XGBoost trees or the Keras MLP."""

    name: str
    #: shown as Dagster kinds on the family's assets
    kinds: frozenset[str]
    #: pruning waits this many reported steps (boosting rounds, epochs) before it may stop a trial
    warmup_steps: int

    def device(self) -> str: ...

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]: ...

    def fit(
        self,
        train: pd.DataFrame,
        params: dict[str, Any],
        validation: pd.DataFrame | None = None,
        trial: optuna.Trial | None = None,
    ) -> Any: ...

    def scores(self, model: Any, frame: pd.DataFrame) -> np.ndarray: ...

    def log_model(self, model: Any, example: pd.DataFrame) -> Any: ...

    def load(self, model_uri: str) -> Any: ...


@runtime_checkable
class ExternalMemoryFamily(ModelFamily, Protocol):
    """A family that can also fit from batches of rows, for training sets over the memory
    budget (``train/external_memory.py``)."""

    def fit_external(
        self,
        batches: Callable[[], Iterable[pd.DataFrame]],
        params: dict[str, Any],
        validation: pd.DataFrame | None = None,
        trial: optuna.Trial | None = None,
    ) -> tuple[Any, BatchStats]: ...


def pinned_requirements(*names: str) -> list[str]:
    """Exact runtime requirements of a logged model (skips MLflow's slow inference)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in names]


@dataclass(frozen=True)
class XGBoostFamily:
    """Gradient-boosted trees (``hist``) on the numeric features; CUDA when a GPU is present."""

    name: str = "xgboost"
    kinds: frozenset[str] = frozenset({"xgboost", "optuna", "mlflow"})
    warmup_steps: int = 20
    threads: int | None = None

    def device(self) -> str:
        from mlops_assets.train.device import xgboost_training_device

        return xgboost_training_device().tag()

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 100, 400, step=50),
            "max_depth": trial.suggest_int("max_depth", 3, 9),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.6, 1.0),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 10.0, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }

    def fit(
        self,
        train: pd.DataFrame,
        params: dict[str, Any],
        validation: pd.DataFrame | None = None,
        trial: optuna.Trial | None = None,
    ) -> Any:
        from mlops_assets.train.device import xgboost_device
        from mlops_assets.train.model import fit_xgboost, model_inputs

        return fit_xgboost(
            model_inputs(train, FEATURE_COLUMNS),
            train[LABEL_COLUMN],
            params,
            threads=self.threads,
            device=xgboost_device(),
            validation=_evaluation(validation),
            callbacks=_pruning(trial),
        )

    def fit_external(
        self,
        batches: Callable[[], Iterable[pd.DataFrame]],
        params: dict[str, Any],
        validation: pd.DataFrame | None = None,
        trial: optuna.Trial | None = None,
    ) -> tuple[Any, BatchStats]:
        """``fit`` from batches of fit rows (``batches()`` yields them anew for every pass),
        through XGBoost's external memory; also what the iterator read."""
        from mlops_assets.train.device import xgboost_device
        from mlops_assets.train.xgboost_external import fit_xgboost_external

        return fit_xgboost_external(
            batches,
            params,
            threads=self.threads,
            device=xgboost_device(),
            validation=_evaluation(validation),
            callbacks=_pruning(trial),
        )

    def scores(self, model: Any, frame: pd.DataFrame) -> np.ndarray:
        from mlops_assets.train.model import fraud_scores, model_inputs

        return fraud_scores(model, model_inputs(frame, FEATURE_COLUMNS))

    def log_model(self, model: Any, example: pd.DataFrame) -> Any:
        import mlflow.xgboost
        from mlflow.models import infer_signature

        from mlops_assets.train.model import model_inputs

        inputs = model_inputs(example, FEATURE_COLUMNS)
        return mlflow.xgboost.log_model(
            model,
            name="model",
            pip_requirements=pinned_requirements("xgboost", "scikit-learn", "pandas", "numpy"),
            signature=infer_signature(inputs, self.scores(model, example)),
            input_example=inputs,
            model_type="fraud_classifier",
        )

    def load(self, model_uri: str) -> Any:
        import mlflow.xgboost

        return mlflow.xgboost.load_model(model_uri)


def _evaluation(validation: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.Series] | None:
    """XGBoost's evaluation set (model inputs and labels) of a validation frame."""
    from mlops_assets.train.model import model_inputs

    if validation is None:
        return None
    return model_inputs(validation, FEATURE_COLUMNS), validation[LABEL_COLUMN]


def _pruning(trial: optuna.Trial | None) -> list[Any]:
    """The pruning callback of a tuning trial (none outside tuning)."""
    if trial is None:
        return []
    from mlops_assets.train.pruning import ThrottledXGBoostPruning

    return [ThrottledXGBoostPruning(trial, "validation_0-aucpr", every=10)]


@dataclass(frozen=True)
class MlpFamily:
    """A Keras MLP whose normalisation and type encoding are layers of the saved model;
    TensorFlow places it on a GPU when one is present. Trains with a fixed seed."""

    name: str = "mlp"
    kinds: frozenset[str] = frozenset({"tensorflow", "keras", "optuna", "mlflow"})
    warmup_steps: int = 2
    epochs: int = 8
    seed: int = 7

    def device(self) -> str:
        from mlops_assets.train.device import tensorflow_training_device

        return tensorflow_training_device().tag()

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "hidden_units": trial.suggest_categorical("hidden_units", ["32-16", "64-32", "128-64"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [512, 1024, 2048]),
        }

    def _params(self, params: dict[str, Any]) -> Any:
        from mlops_assets.train.mlp import MlpParams

        units = str(params.get("hidden_units", "64-32"))
        return MlpParams(
            hidden_units=tuple(int(u) for u in units.split("-")),
            dropout=float(params.get("dropout", 0.1)),
            learning_rate=float(params.get("learning_rate", 1e-3)),
            batch_size=int(params.get("batch_size", 1024)),
            epochs=int(params.get("epochs", self.epochs)),
            seed=self.seed,
        )

    def fit(
        self,
        train: pd.DataFrame,
        params: dict[str, Any],
        validation: pd.DataFrame | None = None,
        trial: optuna.Trial | None = None,
    ) -> Any:
        from mlops_assets.train.mlp import VALIDATION_METRIC, fit_mlp

        callbacks = []
        if trial is not None:
            from optuna_integration import KerasPruningCallback

            callbacks.append(KerasPruningCallback(trial, VALIDATION_METRIC))
        return fit_mlp(
            train,
            train[LABEL_COLUMN],
            self._params(params),
            validation=None if validation is None else (validation, validation[LABEL_COLUMN]),
            callbacks=callbacks,
        )

    def scores(self, model: Any, frame: pd.DataFrame) -> np.ndarray:
        from mlops_assets.train.mlp import mlp_scores

        return mlp_scores(model, frame)

    def log_model(self, model: Any, example: pd.DataFrame) -> Any:
        import keras

        from mlops_assets.train.mlp import log_mlp

        keras.config.disable_interactive_logging()  # MLflow's example prediction: no progress bar
        return log_mlp(model, name="model", input_example=example, model_type="fraud_classifier")

    def load(self, model_uri: str) -> Any:
        from mlops_assets.train.mlp import load_mlp

        return load_mlp(model_uri)


FAMILIES: dict[str, ModelFamily] = {"xgboost": XGBoostFamily(), "mlp": MlpFamily()}


def family(name: str) -> ModelFamily:
    """The family of that name (as recorded in a model version's ``model_family`` tag)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"Unknown model family {name!r}; known: {sorted(FAMILIES)}") from None
