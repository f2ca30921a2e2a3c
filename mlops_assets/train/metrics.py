"""Metrics fit for rare events, the decision threshold, and the plots logged with a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# numpy and scikit-learn are imported in the functions that use them: this module is imported by
# the code location (the gate's metric names), which must import fast

#: Metrics the promotion gate can compare (all: higher is better).
GATE_METRICS = ("pr_auc", "roc_auc", "recall_at_precision", "f1")


@dataclass(frozen=True)
class HoldoutMetrics:
    """How a model does on held-out days, at its decision threshold."""

    pr_auc: float
    roc_auc: float
    precision: float
    recall: float
    f1: float
    recall_at_precision: float
    target_precision: float
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
            "recall_at_precision": self.recall_at_precision,
            "target_precision": self.target_precision,
            "threshold": self.threshold,
            "holdout_fraud_rate": self.fraud_rate,
            "holdout_rows": float(self.rows),
        }

    def value(self, metric: str) -> float:
        if metric not in GATE_METRICS:
            raise ValueError(f"Unknown gate metric {metric!r}; choose one of {GATE_METRICS}")
        return float(getattr(self, metric))


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on these labels (0.5 when there is no positive)."""
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    if labels.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))])


def recall_at_precision(labels: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The highest recall reachable at a threshold whose precision is at least ``target``."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    reachable = recall[precision >= target]
    return float(reachable.max()) if reachable.size else 0.0


def evaluate(
    labels: np.ndarray, scores: np.ndarray, threshold: float, target_precision: float = 0.9
) -> HoldoutMetrics:
    """PR-AUC, ROC-AUC, recall at ``target_precision`` and precision/recall/F1 at
    ``threshold``."""
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

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
        recall_at_precision=recall_at_precision(labels, scores, target_precision),
        target_precision=float(target_precision),
        threshold=float(threshold),
        fraud_rate=float(labels.mean()),
        rows=len(labels),
    )


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """The confusion matrix at ``threshold`` as named counts."""
    from sklearn.metrics import confusion_matrix

    tn, fp, fn, tp = confusion_matrix(labels, scores >= threshold, labels=[0, 1]).ravel()
    return {
        "true_negatives": int(tn),
        "false_positives": int(fp),
        "false_negatives": int(fn),
        "true_positives": int(tp),
    }


def evaluation_figures(
    labels: np.ndarray, scores: np.ndarray, threshold: float, title: str
) -> dict[str, Any]:
    """The PR curve and the confusion matrix as matplotlib figures, keyed by artifact name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay

    pr_figure, pr_axes = plt.subplots(figsize=(5, 4))
    PrecisionRecallDisplay.from_predictions(labels, scores, ax=pr_axes, name=title)
    pr_axes.axhline(labels.mean(), linestyle="--", color="grey", label="fraud rate")
    pr_axes.legend(loc="upper right")
    cm_figure, cm_axes = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_predictions(
        labels, (scores >= threshold).astype(int), labels=[0, 1], ax=cm_axes, colorbar=False
    )
    cm_axes.set_title(f"threshold {threshold:.3f}")
    return {"pr_curve.png": pr_figure, "confusion_matrix.png": cm_figure}


def close_figure(figure: Any) -> None:
    """Release a figure once it is logged (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    plt.close(figure)
