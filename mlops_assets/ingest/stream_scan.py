"""What the stream sensor should do with what the bronze ingestion wrote: pure logic, no
Dagster, no broker.

A day's streamed rows are loaded into ``raw_transactions`` (and from there flow on through
validation, features, scores and drift) once the day is a partition (it has ended), its
streamed rows differ from what its last materialization loaded, and no message for it arrived
for ``settle_seconds`` (messages still in flight at midnight land first). A late message
changes the count and loads the day again, like a corrected file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mlops_assets.ingest.streamed import StreamedDay


@dataclass(frozen=True)
class StreamDayRequest:
    """Load ``day``, which now has ``rows`` streamed rows."""

    day: date
    rows: int

    @property
    def run_key(self) -> str:
        return f"stream:{self.day.isoformat()}:{self.rows}"


@dataclass
class StreamScan:
    requests: list[StreamDayRequest] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def days_to_load(
    streamed: dict[date, StreamedDay],
    loaded: dict[date, int | None],
    now: datetime,
    settle_seconds: float,
    first_day: date,
    last_day: date | None,
) -> StreamScan:
    """The days whose streamed rows should be loaded now (``loaded``: the streamed rows each
    day's latest ``raw_transactions`` materialization had; None when never loaded)."""
    scan = StreamScan()
    for day, summary in sorted(streamed.items()):
        if summary.rows == loaded.get(day):
            continue
        if day < first_day:
            scan.notes.append(
                f"{day}: {summary.rows} streamed row(s) are before the first partition "
                f"{first_day}; not loaded"
            )
            continue
        if last_day is None or day > last_day:
            scan.notes.append(
                f"{day}: {summary.rows} streamed row(s) so far; the day has not ended"
            )
            continue
        if summary.last_ingested_at is not None:
            quiet = (now - summary.last_ingested_at).total_seconds()
            if quiet < settle_seconds:
                scan.notes.append(
                    f"{day}: last streamed row written {quiet:.0f}s ago; waiting for the day to "
                    f"settle ({settle_seconds:g}s)"
                )
                continue
        scan.requests.append(StreamDayRequest(day, summary.rows))
    return scan


def lag_by_partition(
    end_offsets: dict[int, tuple[int, int]], committed: dict[int, int | None]
) -> dict[int, int]:
    """Messages on the topic not in bronze yet, per partition (a partition never written is
    behind by everything it still holds)."""
    return {
        partition: max(0, high - (committed.get(partition) or low))
        for partition, (low, high) in end_offsets.items()
    }


def observation_metadata(
    topic: str,
    lag: dict[int, int] | None,
    end_offsets: dict[int, tuple[int, int]] | None,
    committed: dict[int, int | None],
    writes: list[dict[str, Any]],
    streamed: dict[date, StreamedDay],
    bronze_version: int,
    lag_error: str | None = None,
    max_writes: int = 50,
) -> dict[str, Any]:
    """What one observation of the topic records (JSON-able values; the sensor wraps them)."""
    metadata: dict[str, Any] = {
        "topic": topic,
        "bronze_version": bronze_version,
        "committed_offsets": {str(p): o for p, o in sorted(committed.items())},
        "writes_since_last_observation": len(writes),
        "messages_since_last_observation": sum(int(w.get("messages", 0)) for w in writes),
        "dead_letters_since_last_observation": sum(
            sum((w.get("dead_letters") or {}).values()) for w in writes
        ),
        "bronze_writes": writes[-max_writes:],
        "streamed_rows_by_day": {d.isoformat(): s.rows for d, s in sorted(streamed.items())},
    }
    if lag is not None and end_offsets is not None:
        metadata["lag_messages"] = sum(lag.values())
        metadata["lag_by_partition"] = {str(p): n for p, n in sorted(lag.items())}
        metadata["end_offsets"] = {str(p): high for p, (_low, high) in sorted(end_offsets.items())}
    else:
        metadata["lag_unknown"] = lag_error or "the brokers could not be reached"
    return metadata
