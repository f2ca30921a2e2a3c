"""Releasing streamed transactions in event-time order across partitions: pure logic.

A transaction's window features count the earlier transactions of its accounts (24 hours, up
to the second before it), and a destination account's transactions arrive on every partition
(messages are keyed by origin account). So a transaction is scored once every partition has
delivered its transactions from before it: when each other partition has shown a transaction
at the same second or later, or has nothing more to deliver right now (it is read to its end).
Within a partition, messages are in time order (producers send in order; the key keeps an
origin account on one partition). In real time every partition is at its end almost always
and nothing waits; when a backlog is read, partitions are merged by time. A partition that
delivers nothing for ``max_wait_seconds`` of polling while not at its end (a stalled leader)
is not waited for; time spent scoring does not count, so a busy scorer never skips the wait.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any


@dataclass(order=True)
class _Held:
    seconds: int
    partition: int
    offset: int
    item: Any = field(compare=False)


class EventTimeAligner:
    """Holds transactions until every partition has passed their event second."""

    def __init__(self, max_wait_seconds: float = 5.0) -> None:
        self.max_wait_seconds = max_wait_seconds
        self._held: list[_Held] = []
        self._newest: dict[int, int] = {}  # partition -> newest event second seen
        self._next: dict[int, int] = {}  # partition -> next offset after the last seen
        self._starved: dict[int, float] = {}  # partition -> polling time without a message
        self.forced = 0  # released by the time limit, not by the partitions

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def partitions(self) -> list[int]:
        return sorted(self._next)

    def assign(self, partition: int, next_offset: int) -> None:
        self._next[partition] = next_offset
        self._newest.pop(partition, None)

    def revoke(self, partition: int) -> list[Any]:
        """Forget a partition; the items it still held (their owner will score them)."""
        self._next.pop(partition, None)
        self._newest.pop(partition, None)
        self._starved.pop(partition, None)
        dropped = [h.item for h in self._held if h.partition == partition]
        self._held = [h for h in self._held if h.partition != partition]
        heapq.heapify(self._held)
        return dropped

    def seen(self, partition: int, offset: int, seconds: int | None) -> None:
        """A message of ``partition`` was read (scored, replayed or rejected)."""
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        if seconds is not None and seconds > self._newest.get(partition, -(2**62)):
            self._newest[partition] = seconds

    def hold(self, partition: int, offset: int, seconds: int, item: Any) -> None:
        self.seen(partition, offset, seconds)
        heapq.heappush(self._held, _Held(seconds, partition, offset, item))

    def polled(self, delivered: Collection[int], at_end: Collection[int], seconds: float) -> None:
        """One poll of ``seconds`` returned messages of ``delivered``: the others starved (it
        counts only while something waits for them)."""
        for partition in self._next:
            if not self._held or partition in delivered or partition in at_end:
                self._starved[partition] = 0.0
            else:
                self._starved[partition] = self._starved.get(partition, 0.0) + seconds

    def release(self, at_end: Collection[int]) -> list[Any]:
        """The held items that may be scored now, in event-time order (``at_end``: the
        partitions read to their end)."""
        released = []
        while self._held:
            head = self._held[0]
            blocking = [
                partition
                for partition in self._next
                if partition != head.partition
                and partition not in at_end
                and self._newest.get(partition, -(2**62)) < head.seconds
            ]
            if blocking:
                if any(self._starved.get(p, 0.0) < self.max_wait_seconds for p in blocking):
                    break
                self.forced += 1
            released.append(heapq.heappop(self._held).item)
        return released

    def release_all(self) -> list[Any]:
        """Everything held, in event-time order (a stop or a revocation)."""
        released = [heapq.heappop(self._held).item for _ in range(len(self._held))]
        return released

    def oldest_held_seconds(self) -> int | None:
        return self._held[0].seconds if self._held else None

    def held_by_partition(self) -> dict[int, int]:
        counts = dict.fromkeys(self._next, 0)
        for held in self._held:
            counts[held.partition] = counts.get(held.partition, 0) + 1
        return counts

    def next_offsets(self) -> dict[int, int]:
        """Per partition, the offset after the last message seen."""
        return dict(self._next)

    def committable(self) -> dict[int, int]:
        """Per partition, the offset before which every message is decided."""
        offsets = dict(self._next)
        for held in self._held:
            offsets[held.partition] = min(offsets.get(held.partition, held.offset), held.offset)
        return offsets
