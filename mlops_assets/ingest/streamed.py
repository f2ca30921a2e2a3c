"""What the bronze table holds from the transactions topic: the streamed rows of a day, the
offsets committed with them, and the record each bronze write leaves in the Delta log.

The bronze ingestion (``stream/``) appends streamed rows to ``raw_transactions`` with their
``_source_topic``, ``_source_partition`` and ``_source_offset``; file rows have these null. The
``raw_transactions`` asset and the stream sensor read them back from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import PARTITION_COLUMN, RAW_TRANSACTIONS

#: commit-info key under which each bronze write records what it holds
COMMIT_KEY = "mlops.stream"
#: a streamed row (file rows have no topic)
STREAMED = "_source_topic IS NOT NULL"
#: the rows a file delivery replaces (never the streamed ones)
FILE_ROWS = "_source_topic IS NULL"


def app_id(topic: str, partition: int) -> str:
    """The Delta application-transaction id holding a topic partition's next offset."""
    return f"kafka/{topic}/{partition}"


@dataclass
class StreamedDay:
    """The streamed rows of one day in bronze."""

    day: date
    rows: int = 0
    unreadable: int = 0  # messages kept with a delivery error
    last_ingested_at: datetime | None = None
    #: "topic/partition" -> first offset, last offset, messages
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {"rows": self.rows, "unreadable": self.unreadable, "offsets": self.offsets}


def has_streamed_rows(lake: DeltaLake) -> bool:
    """Whether the bronze table has the stream lineage columns at all."""
    return "_source_topic" in lake.column_names(RAW_TRANSACTIONS)


def streamed_days(
    lake: DeltaLake, days: list[date], version: int | None = None
) -> dict[date, StreamedDay]:
    """The streamed rows of ``days`` (at ``version``, default the latest): counts, offsets and
    when they were last written; days without any are left out."""
    import polars as pl

    if not days or not has_streamed_rows(lake):
        return {}
    frame = lake.read_frame(
        RAW_TRANSACTIONS,
        days=days,
        columns=[
            PARTITION_COLUMN,
            "_source_topic",
            "_source_partition",
            "_source_offset",
            "_delivery_error",
            "_ingested_at",
        ],
        version=version,
    ).filter(pl.col("_source_topic").is_not_null())
    if frame.height == 0:
        return {}
    per_partition = (
        frame.group_by(PARTITION_COLUMN, "_source_topic", "_source_partition")
        .agg(
            pl.len().alias("messages"),
            pl.col("_source_offset").min().alias("first"),
            pl.col("_source_offset").max().alias("last"),
            pl.col("_delivery_error").is_not_null().sum().alias("unreadable"),
            pl.col("_ingested_at").max().alias("last_ingested_at"),
        )
        .sort(PARTITION_COLUMN, "_source_topic", "_source_partition")
    )
    result: dict[date, StreamedDay] = {}
    for row in per_partition.iter_rows(named=True):
        streamed = result.setdefault(row[PARTITION_COLUMN], StreamedDay(row[PARTITION_COLUMN]))
        streamed.rows += row["messages"]
        streamed.unreadable += row["unreadable"]
        if streamed.last_ingested_at is None or row["last_ingested_at"] > streamed.last_ingested_at:
            streamed.last_ingested_at = row["last_ingested_at"]
        streamed.offsets[f"{row['_source_topic']}/{row['_source_partition']}"] = {
            "first": row["first"],
            "last": row["last"],
            "messages": row["messages"],
        }
    return result


def committed_offsets(lake: DeltaLake, topic: str, partitions: list[int]) -> dict[int, int | None]:
    """The next offset of each partition as committed with the bronze rows (None: never)."""
    ids = {partition: app_id(topic, partition) for partition in partitions}
    versions = lake.transaction_versions(RAW_TRANSACTIONS, list(ids.values()))
    return {partition: versions[ids[partition]] for partition in partitions}


def stream_writes(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bronze writes among some Delta commits (``DeltaTable.history``), oldest first:
    version, time and what each holds."""
    writes = []
    for commit in history:
        recorded = commit.get(COMMIT_KEY)
        if recorded is None:
            continue
        described = json.loads(recorded) if isinstance(recorded, str) else recorded
        writes.append(
            {"version": commit.get("version"), "timestamp": commit.get("timestamp"), **described}
        )
    return sorted(writes, key=lambda w: w["version"] or 0)
