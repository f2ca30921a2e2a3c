"""Rebuild the exact training set of a model version from its lineage tags (Delta time travel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops_assets.lineage import spec_from_tags
from mlops_assets.registry.versions import version_tags
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.train.dataset import TrainingSet, TrainingSetSpec, content_hash, load_training_set


@dataclass(frozen=True)
class Rebuilt:
    """A model version's training set read again, compared with what the version recorded."""

    name: str
    version: str
    spec: TrainingSetSpec
    training_set: TrainingSet
    content_hash: str

    @property
    def rows(self) -> int:
        return len(self.training_set.frame)

    @property
    def matches(self) -> bool:
        return self.rows == self.spec.rows and self.content_hash == self.spec.content_hash

    def report(self) -> str:
        spec = self.spec
        verdict = "VERIFIED: identical" if self.matches else "MISMATCH"
        return "\n".join(
            [
                f"{self.name} version {self.version}: training set {spec.partition_range} "
                f"(fit {spec.fit_days[0]}..{spec.fit_days[-1]}, holdout "
                f"{spec.holdout_days[0]}..{spec.holdout_days[-1]})",
                f"  read at transaction_features Delta version {spec.features_version}",
                f"  rows  {self.rows} (recorded {spec.rows})",
                f"  hash  {self.content_hash} (recorded {spec.content_hash})",
                f"  {verdict}",
            ]
        )


def rebuild_training_set(lake: DeltaLake, client: Any, name: str, version: str) -> Rebuilt:
    """Read the training set of ``name`` version ``version`` at its pinned Delta version."""
    spec = spec_from_tags(version_tags(client, name, version))
    training_set = load_training_set(lake, spec)
    return Rebuilt(
        name=name,
        version=str(version),
        spec=spec,
        training_set=training_set,
        content_hash=content_hash(training_set.frame),
    )
