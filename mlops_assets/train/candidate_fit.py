"""A candidate's fit on a pinned training set, in memory or from batches, by the memory budget.

``fit_candidate`` reads the set the way ``plan_training_data`` decides: within the budget, the
whole set at once (``load_training_set``) and ``family.fit`` on the train days' frame; over it,
for a family that can (``ExternalMemoryFamily``), one verifying pass in batches
(``stream_training_set``) and ``family.fit_external`` on the train days' batches. Either way the
rows are checked against the spec's row count and content hash first, and what the candidate
needs next (the tuning and holdout days, an input example, the drift reference) comes back in
the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_assets.resources.lake import DeltaLake
from mlops_assets.train.dataset import TrainingSetSpec, content_hash, load_training_set
from mlops_assets.train.external_memory import (
    TrainingDataPlan,
    count_rows,
    feature_batches,
    plan_training_data,
    stream_training_set,
)
from mlops_assets.train.families import ExternalMemoryFamily, ModelFamily

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.train.xgboost_external import BatchStats


class TrainingSetChanged(ValueError):
    """The rows read at the pinned version are not the rows the training set recorded."""


@dataclass(frozen=True)
class CandidateFit:
    """A fitted model, how its rows were read, and the rows the candidate judges it on."""

    model: Any
    plan: TrainingDataPlan
    tuning: pd.DataFrame
    holdout: pd.DataFrame
    train_rows: int
    #: a few train-day rows: the logged model's input example
    example: pd.DataFrame
    #: a sample of the train-day rows: the drift report's reference
    reference: pd.DataFrame
    #: what the external-memory iterator read (None in memory)
    batches: BatchStats | None = None

    def metadata(self) -> dict[str, object]:
        """The path taken and its figures, for the asset's metadata."""
        figures: dict[str, object] = self.plan.as_metadata()
        if self.batches is not None:
            figures["iterator"] = self.batches.as_metadata()
        return figures


def fit_candidate(
    lake: DeltaLake,
    spec: TrainingSetSpec,
    family: ModelFamily,
    params: dict[str, Any],
    budget_mb: float,
    reference_rows: int,
) -> CandidateFit:
    """Verify ``spec``'s rows and fit ``family`` with ``params`` on its train days, in memory or
    from batches as the budget decides. Raises ``TrainingSetChanged`` when the rows no longer
    match the spec, ``ValueError`` when they cannot train a model (a single class)."""
    fit_rows = count_rows(lake, spec.train_days, spec.features_version)
    plan = plan_training_data(fit_rows, budget_mb, isinstance(family, ExternalMemoryFamily))
    if not plan.external:
        data = load_training_set(lake, spec)
        _verify(spec, len(data.frame), content_hash(data.frame))
        train = data.train
        return CandidateFit(
            model=family.fit(train, params),
            plan=plan,
            tuning=data.tuning,
            holdout=data.holdout,
            train_rows=len(train),
            example=train.head(5),
            reference=train.sample(n=min(reference_rows, len(train)), random_state=0),
        )
    assert isinstance(family, ExternalMemoryFamily)
    streamed = stream_training_set(lake, spec, plan.batch_rows, reference_rows)
    _verify(spec, streamed.rows, streamed.content_hash)
    model, stats = family.fit_external(
        lambda: feature_batches(lake, spec.train_days, spec.features_version, plan.batch_rows),
        params,
    )
    return CandidateFit(
        model=model,
        plan=plan,
        tuning=streamed.tuning,
        holdout=streamed.holdout,
        train_rows=streamed.train_rows,
        example=streamed.train_sample.head(5),
        reference=streamed.train_sample,
        batches=stats,
    )


def _verify(spec: TrainingSetSpec, rows: int, digest: str) -> None:
    if rows != spec.rows or digest != spec.content_hash:
        raise TrainingSetChanged(
            f"The training set {spec.partition_range} read at transaction_features "
            f"v{spec.features_version} no longer matches its record ({rows} rows vs "
            f"{spec.rows}); materialize training_set again"
        )
