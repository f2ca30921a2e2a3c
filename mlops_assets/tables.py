"""The Delta tables of the lake: their layer, name and partition column, in one place."""

from __future__ import annotations

from dataclasses import dataclass

PARTITION_COLUMN = "txn_date"


@dataclass(frozen=True)
class LakeTable:
    """A Delta table at ``<lake root>/<layer>/<name>``, partitioned by ``txn_date``."""

    layer: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.layer}/{self.name}"


RAW_TRANSACTIONS = LakeTable("bronze", "raw_transactions")
VALIDATED_TRANSACTIONS = LakeTable("silver", "validated_transactions")
QUARANTINED_TRANSACTIONS = LakeTable("silver", "quarantined_transactions")
TRANSACTION_FEATURES = LakeTable("gold", "transaction_features")
SCORED_TRANSACTIONS = LakeTable("gold", "scored_transactions")
TRANSACTION_LABELS = LakeTable("silver", "transaction_labels")
#: Written by the online model service, not by an asset.
SERVED_PREDICTIONS = LakeTable("gold", "served_predictions")

ALL_TABLES = (
    RAW_TRANSACTIONS,
    VALIDATED_TRANSACTIONS,
    QUARANTINED_TRANSACTIONS,
    TRANSACTION_FEATURES,
    SCORED_TRANSACTIONS,
    TRANSACTION_LABELS,
    SERVED_PREDICTIONS,
)
