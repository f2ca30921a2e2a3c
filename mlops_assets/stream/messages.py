"""Kafka messages as plain values, so that the pure parts of the streaming path (turning
messages into bronze rows, dead letters, decisions) need no client objects and can be tested
without a broker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class StreamMessage:
    """One consumed message: where it came from and its bytes."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None  # the broker's or producer's time; None when unknown
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_kafka(cls, message: Any) -> StreamMessage:
        """From a ``confluent_kafka.Message`` (one without an error)."""
        kind, timestamp = message.timestamp()
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            value=message.value(),
            key=message.key(),
            timestamp_ms=timestamp if kind != 0 and timestamp >= 0 else None,  # 0: not available
            headers=tuple((k, v or b"") for k, v in (message.headers() or [])),
        )

    @property
    def source(self) -> str:
        """``topic/partition/offset``: the message's address, unique and stable."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    def sent_at(self) -> datetime | None:
        if self.timestamp_ms is None:
            return None
        return datetime.fromtimestamp(self.timestamp_ms / 1000.0, UTC)
