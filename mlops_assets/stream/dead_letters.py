"""The dead-letter topic: every message the bronze ingestion could not read, or that breaks the
data contract, is copied there as delivered (same key, same value bytes) with headers saying
why and where it came from. The stream never stops for a bad message.

Dead letters are written before the bronze commit of their batch and must be acknowledged by
the brokers first, so a dead letter never goes missing; a crash between the two makes the
batch be read again, and its dead letters sent again: the topic is at-least-once, and
``mlops.source`` (topic/partition/offset) identifies a repeated letter. Bronze itself holds
every message exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops_assets.stream.messages import StreamMessage

#: the kinds of dead letters
UNDECODABLE = "undecodable"  # not Avro, unknown schema id, payload that does not decode
CONTRACT = "contract"  # schema-valid, but a value breaks the data contract
OUT_OF_RANGE = "out_of_range"  # a timestamp no daily partition will take

HEADER_KIND = "mlops.error.kind"
HEADER_REASON = "mlops.error.reason"
HEADER_SOURCE = "mlops.source"
HEADER_SCHEMA_ID = "mlops.source.schema_id"


@dataclass(frozen=True)
class DeadLetter:
    """A message sent to the dead-letter topic, and why."""

    message: StreamMessage
    kind: str
    reason: str
    schema_id: int | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            (HEADER_KIND, self.kind.encode()),
            (HEADER_REASON, self.reason.encode()),
            (HEADER_SOURCE, self.message.source.encode()),
        ]
        if self.schema_id is not None:
            headers.append((HEADER_SCHEMA_ID, str(self.schema_id).encode()))
        return [*headers, *self.message.headers]


def read_dead_letter(message: Any) -> dict[str, Any]:
    """What a consumed dead letter says: kind, reason, source and the original value."""
    headers = {k: (v or b"").decode(errors="replace") for k, v in (message.headers() or [])}
    return {
        "kind": headers.get(HEADER_KIND),
        "reason": headers.get(HEADER_REASON),
        "source": headers.get(HEADER_SOURCE),
        "schema_id": headers.get(HEADER_SCHEMA_ID),
        "key": message.key(),
        "value": message.value(),
    }


class DeadLetterProducer:
    """Sends dead letters to ``topic`` and waits until the brokers have them all."""

    def __init__(self, producer: Any, topic: str, timeout_seconds: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_seconds = timeout_seconds
        self.sent = 0

    def send(self, letters: list[DeadLetter]) -> None:
        """Produce every letter and flush; ``RuntimeError`` when any was not acknowledged
        (the caller then must not commit the batch)."""
        if not letters:
            return
        failures: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        for letter in letters:
            while True:
                try:
                    self.producer.produce(
                        self.topic,
                        value=letter.message.value,
                        key=letter.message.key,
                        headers=letter.headers(),
                        on_delivery=delivered,
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    self.producer.poll(0.1)
        remaining = self.producer.flush(self.timeout_seconds)
        if remaining or failures:
            raise RuntimeError(
                f"{remaining + len(failures)} of {len(letters)} dead letter(s) to {self.topic} "
                f"were not acknowledged ({'; '.join(failures[:3]) or 'flush timed out'})"
            )
        self.sent += len(letters)
