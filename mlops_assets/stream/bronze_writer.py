"""Writing consumed messages into ``raw_transactions`` exactly once.

Each micro-batch is one Delta commit that also records, for every topic partition in it, the
next offset to read, as a Delta application transaction (``txn`` action, app id
``kafka/<topic>/<partition>``, version = next offset). The rows and the offsets are one atomic
commit: after a crash the consumer reads the offsets back from the table and resumes exactly
after the last committed message, whatever Kafka's own committed offsets say. A writer whose
partitions another writer has advanced meanwhile (a rebalance, a zombie process) is refused,
by the check before the write and by Delta's conflict detection at commit
(``ConcurrentTransaction``), instead of writing its messages twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from deltalake import CommitProperties, Transaction
from deltalake.exceptions import CommitFailedError

from mlops_assets.ingest.streamed import COMMIT_KEY, app_id
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.stream.bronze_rows import MessageBatch
from mlops_assets.tables import RAW_TRANSACTIONS, LakeTable


class OffsetsMoved(RuntimeError):
    """Another writer committed offsets of these partitions since they were read: the batch
    is dropped (it is already in the table) and reading resumes at the committed offsets."""


class BronzeWriter:
    """Appends message batches to a lake table with their offsets, exactly once."""

    def __init__(
        self,
        lake: DeltaLake,
        table: LakeTable = RAW_TRANSACTIONS,
        compact_every: int = 50,
        group: str = "",
    ) -> None:
        self.lake = lake
        self.table = table
        self.group = group
        self.appender = lake.appender(table, compact_every)

    def committed(self, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """The next offset to read of each partition, as the table records it now (None:
        never written). Reads a fresh snapshot: safe beside a write under way."""
        ids = {p: app_id(topic, p) for p in partitions}
        versions = self.lake.transaction_versions(self.table, list(ids.values()))
        return {p: versions[ids[p]] for p in partitions}

    def write(self, batch: MessageBatch) -> int:
        """Commit the batch's rows and next offsets in one Delta commit; its version.

        ``OffsetsMoved`` when a partition of the batch was advanced past the batch's first
        message by another writer (checked before writing, and again by Delta at commit)."""
        ids = {key: app_id(*key) for key in batch.offsets}
        stored = self.appender.transaction_versions(list(ids.values()))
        for key, (first, _last, _count) in batch.offsets.items():
            committed = stored[ids[key]]
            if committed is not None and first < committed:
                raise OffsetsMoved(
                    f"{key[0]}/{key[1]}: offsets up to {committed - 1} are already in "
                    f"{self.table.path}, this batch starts at {first}"
                )
        now_ms = int(time.time() * 1000)
        properties = CommitProperties(
            app_transactions=[
                Transaction(ids[key], last + 1, now_ms)
                for key, (_first, last, _count) in sorted(batch.offsets.items())
            ],
            custom_metadata={COMMIT_KEY: json.dumps(self.describe(batch))},
        )
        try:
            return self.appender(batch.table, properties, refresh=False)
        except CommitFailedError as error:
            if "concurrent transaction" in str(error).lower():
                raise OffsetsMoved(
                    f"another writer committed offsets of {sorted(ids.values())} meanwhile: {error}"
                ) from error
            raise

    def describe(self, batch: MessageBatch) -> dict[str, Any]:
        """What a write records in its commit info (the Dagster sensor reads it back)."""
        return {
            "group": self.group,
            "messages": batch.messages,
            "offsets": {
                f"{topic}/{partition}": [first, last, count]
                for (topic, partition), (first, last, count) in sorted(batch.offsets.items())
            },
            "rows_by_day": dict(sorted(batch.rows_by_day.items())),
            "dead_letters": batch.dead_letters_by_kind,
        }
