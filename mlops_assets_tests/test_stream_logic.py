"""The pure parts of the streaming path: when the stream sensor loads a day, the lag, the
event-time aligner of the streaming scorer, and its rolling account history (the same features
as over a snapshot, after appends in any chunks, replays and pruning)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.features.online_engine import (
    INPUT_SCHEMA,
    IndexedHistory,
    compute_features_online,
)
from mlops_assets.features.rolling_history import RollingHistory
from mlops_assets.ingest.stream_scan import days_to_load, lag_by_partition
from mlops_assets.ingest.streamed import StreamedDay
from mlops_assets.serve.event_time import EventTimeAligner
from mlops_assets_tests.helpers import validated_day

NOW = datetime(2026, 3, 12, 10, 0, tzinfo=UTC)
FIRST = date(2026, 1, 1)


def _streamed(day: date, rows: int, minutes_ago: float) -> StreamedDay:
    return StreamedDay(day, rows=rows, last_ingested_at=NOW - timedelta(minutes=minutes_ago))


def test_a_streamed_day_is_loaded_once_ended_changed_and_settled() -> None:
    streamed = {
        date(2026, 3, 9): _streamed(date(2026, 3, 9), 100, 600),  # loaded with these rows
        date(2026, 3, 10): _streamed(date(2026, 3, 10), 250, 600),  # a late message: 250 now
        date(2026, 3, 11): _streamed(date(2026, 3, 11), 90, 0.2),  # still arriving
        date(2026, 3, 12): _streamed(date(2026, 3, 12), 40, 0),  # today: not a partition yet
        date(2025, 12, 31): _streamed(date(2025, 12, 31), 3, 600),  # before the partitions
    }
    loaded = {date(2026, 3, 9): 100, date(2026, 3, 10): 249, date(2026, 3, 11): None}
    scan = days_to_load(streamed, loaded, NOW, 60, FIRST, date(2026, 3, 11))
    assert [(r.day, r.rows) for r in scan.requests] == [(date(2026, 3, 10), 250)]
    assert scan.requests[0].run_key == "stream:2026-03-10:250"
    notes = " | ".join(scan.notes)
    assert "2026-03-11: last streamed row written 12s ago; waiting" in notes
    assert "2026-03-12: 40 streamed row(s) so far; the day has not ended" in notes
    assert "before the first partition 2026-01-01" in notes
    # once it settles, the day is requested
    later = days_to_load(streamed, loaded, NOW + timedelta(minutes=2), 60, FIRST, date(2026, 3, 11))
    assert [r.day for r in later.requests] == [date(2026, 3, 10), date(2026, 3, 11)]


def test_lag_counts_what_the_table_does_not_hold() -> None:
    ends = {0: (0, 120), 1: (5, 40), 2: (0, 0)}
    assert lag_by_partition(ends, {0: 100, 1: None, 2: None}) == {0: 20, 1: 35, 2: 0}


def test_the_aligner_releases_in_event_time_once_every_partition_has_passed() -> None:
    aligner = EventTimeAligner(max_wait_seconds=0.5)
    for partition in (0, 1, 2):
        aligner.assign(partition, 0)
    aligner.hold(0, 0, 100, "p0@100")
    aligner.hold(0, 1, 105, "p0@105")
    aligner.hold(1, 0, 102, "p1@102")
    # partition 2 has shown nothing and is not at its end: nothing can be decided yet
    assert aligner.release(at_end=set()) == []
    aligner.seen(2, 0, 103)  # partition 2 passes second 103 (e.g. a rejected message)
    assert aligner.release(at_end=set()) == ["p0@100", "p1@102"]
    assert aligner.committable() == {0: 1, 1: 1, 2: 1}  # p0@105 is still held
    # partition 1 read to its end: it does not hold p0@105 back
    assert aligner.release(at_end={1, 2}) == ["p0@105"]
    assert aligner.committable() == {0: 2, 1: 1, 2: 1}
    aligner.hold(1, 1, 300, "p1@300")
    assert aligner.revoke(1) == ["p1@300"] and aligner.held == 0


def test_a_stalled_partition_is_waited_for_only_while_it_is_polled() -> None:
    aligner = EventTimeAligner(max_wait_seconds=0.5)
    for partition in (0, 1):
        aligner.assign(partition, 0)
    aligner.hold(0, 0, 200, "p0@200")
    # however long scoring takes between polls, only polling without partition 1's messages
    # counts: a busy scorer reading a backlog never skips the wait
    for _ in range(4):
        aligner.polled(delivered={0}, at_end=set(), seconds=0.1)
        assert aligner.release(at_end=set()) == []
    aligner.polled(delivered={1}, at_end=set(), seconds=0.1)  # it delivers: the wait restarts
    aligner.polled(delivered={0}, at_end=set(), seconds=0.4)
    assert aligner.release(at_end=set()) == [] and aligner.forced == 0
    aligner.polled(delivered={0}, at_end=set(), seconds=0.2)  # 0.6 s of polling: stalled
    assert aligner.release(at_end=set()) == ["p0@200"] and aligner.forced == 1


def _input(frame: pl.DataFrame) -> pa.Table:
    return frame.to_arrow().select(INPUT_SCHEMA.names).cast(INPUT_SCHEMA)


def test_the_rolling_history_gives_the_features_a_snapshot_gives() -> None:
    config = GeneratorConfig(rows_per_day=1_500, seed=3, epoch=FIRST)
    previous, day = date(2026, 3, 1), date(2026, 3, 2)
    history_table = _input(validated_day(previous, config))
    today = validated_day(day, config).sort("timestamp")
    requests, later = _input(today.head(300)), _input(today.slice(300, 700))
    snapshot = IndexedHistory.build(pa.concat_tables([history_table, requests]))
    rolling = RollingHistory(capacity=8)  # grows many times
    for start in range(0, history_table.num_rows, 333):  # appended in uneven chunks
        rolling.append(history_table.slice(start, 333))
    rolling.append(requests)
    assert rolling.append(requests.slice(0, 50)) == 0  # replays are kept once
    assert rolling.rows == snapshot.rows
    expected = compute_features_online(later, snapshot)
    assert compute_features_online(later, rolling).equals(expected)

    # pruning drops what no window reaches any more and changes no feature
    first_second = int(pl.from_arrow(later)["timestamp"].min().timestamp())
    dropped = rolling.prune(first_second - 86_400)
    assert dropped > 0 and rolling.rows == snapshot.rows - dropped
    assert compute_features_online(later, rolling).equals(expected)
    assert np.all(rolling.seconds >= first_second - 86_400)
