"""The latest ``training_set``, read again at its pinned version (what tuning trains on)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.resources.lake import DeltaLake
from mlops_assets.train.dataset import TrainingSet, TrainingSetSpec, load_training_set
from mlops_assets.upstream import latest_metadata

if TYPE_CHECKING:
    import numpy as np

TRAINING_SET = "training_set"


def pinned_spec(context: dg.OpExecutionContext) -> TrainingSetSpec:
    """The spec (days, pinned Delta version, hash) of the latest ``training_set``."""
    return TrainingSetSpec.from_metadata(latest_metadata(context, TRAINING_SET)["spec"])


def pinned_training_set(context: dg.OpExecutionContext, lake: DeltaLake) -> TrainingSet:
    """The latest ``training_set``, read again at its pinned Delta version."""
    return load_training_set(lake, pinned_spec(context))


def require_both_classes(frame_labels: np.ndarray, what: str) -> None:
    """Fail clearly when labels hold one class only (no PR-AUC can be measured)."""
    if frame_labels.min() == frame_labels.max():
        raise dg.Failure(
            description=f"The {what} has a single class; it cannot measure a model. "
            "Use a wider training window."
        )
