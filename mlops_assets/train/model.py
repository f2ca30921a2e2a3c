"""The XGBoost fraud classifier: fitting, threshold choice and rare-event metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

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


@dataclass(frozen=True)
class HoldoutMetrics:
    """How the model does on the held-out days, at its decision threshold."""

    pr_auc: float
    roc_auc: float
    precision: float
    recall: float
    f1: float
    threshold: float
    fraud_rate: float
    rows: int

    def as_dict(self) -> dict[str, float]:
        return {
            "pr_auc": self.pr_auc,
            "roc_auc": self.roc_auc,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "threshold": self.threshold,
            "holdout_fraud_rate": self.fraud_rate,
            "holdout_rows": float(self.rows),
        }


def fit_xgboost(
    features: pd.DataFrame,
    labels: pd.Series,
    params: dict[str, Any] | None = None,
    threads: int | None = None,
) -> xgb.XGBClassifier:
    """Fit the classifier (``hist`` trees) on the given features and 0/1 labels."""
    if labels.nunique() < 2:
        raise ValueError(
            f"Training data has only one class ({labels.unique().tolist()}); "
            "widen the training window so it contains fraud and non-fraud rows"
        )
    model = xgb.XGBClassifier(**{**DEFAULT_PARAMS, **(params or {})}, n_jobs=threads)
    model.fit(features, labels)
    return model


def model_inputs(frame: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The model's input matrix: the feature columns, in order, as float64."""
    return frame[list(columns)].astype("float64")


def fraud_scores(model: xgb.XGBClassifier, features: pd.DataFrame) -> np.ndarray:
    """Probability of fraud for each row."""
    return model.predict_proba(features)[:, 1]


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on these labels (0.5 when there is no positive)."""
    if labels.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))])


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> HoldoutMetrics:
    """PR-AUC, ROC-AUC and precision/recall/F1 at ``threshold``."""
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ValueError(
            "The holdout has a single class; it cannot measure the model. "
            "Use more or later holdout days."
        )
    predicted = (scores >= threshold).astype(int)
    return HoldoutMetrics(
        pr_auc=float(average_precision_score(labels, scores)),
        roc_auc=float(roc_auc_score(labels, scores)),
        precision=float(precision_score(labels, predicted, zero_division=0)),
        recall=float(recall_score(labels, predicted, zero_division=0)),
        f1=float(f1_score(labels, predicted, zero_division=0)),
        threshold=float(threshold),
        fraud_rate=float(labels.mean()),
        rows=len(labels),
    )
