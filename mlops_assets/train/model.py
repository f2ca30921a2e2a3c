"""The XGBoost fraud classifier (``hist`` trees), on the CPU or a CUDA GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "max_depth": 6,
    "learning_rate": 0.08,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "min_child_weight": 1.0,
    "tree_method": "hist",
    "eval_metric": "aucpr",
    "random_state": 7,
}


def fit_xgboost(
    features: pd.DataFrame,
    labels: pd.Series,
    params: dict[str, Any] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    validation: tuple[pd.DataFrame, pd.Series] | None = None,
    callbacks: Sequence[Any] = (),
) -> xgb.XGBClassifier:
    """Fit the classifier (``hist`` trees) on the given features and 0/1 labels.

    ``device`` is ``cpu`` or ``cuda``; with ``validation`` the validation PR-AUC is evaluated
    after every boosting round (as ``validation_0-aucpr``, what pruning callbacks observe).
    """
    if labels.nunique() < 2:
        raise ValueError(
            f"Training data has only one class ({labels.unique().tolist()}); "
            "widen the training window so it contains fraud and non-fraud rows"
        )
    model = xgb.XGBClassifier(
        **{**DEFAULT_PARAMS, **(params or {})},
        n_jobs=threads,
        device=device,
        callbacks=list(callbacks) or None,
    )
    if validation is None:
        model.fit(features, labels)
    else:
        model.fit(features, labels, eval_set=[validation], verbose=False)
    return model


def model_inputs(frame: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The model's input matrix: the feature columns, in order, as float64."""
    return frame[list(columns)].astype("float64")


def fraud_scores(model: xgb.XGBClassifier, features: pd.DataFrame) -> np.ndarray:
    """Probability of fraud for each row (``features``: the model inputs, in training order).

    The booster predicts on the plain matrix: the same probabilities as ``predict_proba`` on
    the frame, without its per-call pandas conversion (most of a one-row prediction's time).
    """
    matrix = np.ascontiguousarray(features.to_numpy(dtype=np.float64))
    return np.asarray(model.get_booster().inplace_predict(matrix, validate_features=False))
