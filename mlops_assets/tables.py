"""The Delta tables of the lake: their layer, name and partition column, in one place."""

from __future__ import annotations

from dataclasses import dataclass

PARTITION_COLUMN = "txn_date"


@dataclass(frozen=True)
class LakeTable:
    """A Delta table at ``<lake root>/<layer>/<name>``, partitioned by ``txn_date``, created
    with the Delta table ``properties`` given (Delta's defaults otherwise)."""

    layer: str
    name: str
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        return f"{self.layer}/{self.name}"


RAW_TRANSACTIONS = LakeTable("bronze", "raw_transactions")
VALIDATED_TRANSACTIONS = LakeTable("silver", "validated_transactions")
QUARANTINED_TRANSACTIONS = LakeTable("silver", "quarantined_transactions")
TRANSACTION_FEATURES = LakeTable("gold", "transaction_features")
SCORED_TRANSACTIONS = LakeTable("gold", "scored_transactions")
#: Top feature contributions of the flagged transactions (``fraud_explanations``).
FRAUD_EXPLANATIONS = LakeTable("gold", "fraud_explanations")
TRANSACTION_LABELS = LakeTable("silver", "transaction_labels")
#: Written by the online model service (one commit every few seconds per replica), and kept
#: compact by it and by the ``served_predictions`` asset. The removed files and commit files of
#: a log are of no use for long, and an append costs more the more of them the table keeps:
#: files removed by compaction may be vacuumed after a day, commit files go after two.
SERVED_PREDICTIONS = LakeTable(
    "gold",
    "served_predictions",
    properties=(
        ("delta.deletedFileRetentionDuration", "interval 1 days"),
        ("delta.logRetentionDuration", "interval 2 days"),
        ("delta.enableExpiredLogCleanup", "true"),
    ),
)

ALL_TABLES = (
    RAW_TRANSACTIONS,
    VALIDATED_TRANSACTIONS,
    QUARANTINED_TRANSACTIONS,
    TRANSACTION_FEATURES,
    SCORED_TRANSACTIONS,
    FRAUD_EXPLANATIONS,
    TRANSACTION_LABELS,
    SERVED_PREDICTIONS,
)
