"""Delta partitions: writing a day replaces exactly that day, atomically; time travel works."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import LakeTable

TABLE = LakeTable("silver", "things")
DAY_1, DAY_2, DAY_3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)


def rows(values: list[int]) -> pa.Table:
    return pa.table({"value": pa.array(values, pa.int64())})


def values(lake: DeltaLake, day: date) -> list[int]:
    return sorted(lake.read(TABLE, days=[day]).column("value").to_pylist())


@pytest.fixture
def lake(tmp_path: Path) -> DeltaLake:
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    lake.overwrite_day(TABLE, rows([1, 2, 3]), DAY_1)
    lake.overwrite_day(TABLE, rows([10, 20]), DAY_2)
    lake.overwrite_day(TABLE, rows([100]), DAY_3)
    return lake


def test_rewriting_a_day_replaces_only_that_day(lake: DeltaLake) -> None:
    before = {d: values(lake, d) for d in (DAY_1, DAY_3)}
    for _ in range(2):
        write = lake.overwrite_day(TABLE, rows([11, 21, 31]), DAY_2)
    assert values(lake, DAY_2) == [11, 21, 31]
    assert {d: values(lake, d) for d in (DAY_1, DAY_3)} == before
    assert write.rows == 3
    assert write.version == 4
    assert lake.read(TABLE).num_rows == 3 + 3 + 1
    assert lake.days(TABLE) == [DAY_1, DAY_2, DAY_3]


def test_untouched_days_keep_their_files(lake: DeltaLake) -> None:
    table = DeltaTable(lake.table_uri(TABLE))
    files_before = {f for f in table.file_uris() if "2026-01-02" not in f}
    lake.overwrite_day(TABLE, rows([7]), DAY_2)
    files_after = set(DeltaTable(lake.table_uri(TABLE)).file_uris())
    assert files_before <= files_after


def test_partition_column_of_another_type_still_replaces_one_day(lake: DeltaLake) -> None:
    """DESIGN.md's trap: a string partition value must not overwrite the whole table."""
    as_text = rows([5]).append_column("txn_date", pa.array(["2026-01-02"], pa.string()))
    lake.overwrite_day(TABLE, as_text, DAY_2)
    assert values(lake, DAY_2) == [5]
    assert values(lake, DAY_1) == [1, 2, 3]
    assert values(lake, DAY_3) == [100]
    assert (
        DeltaTable(lake.table_uri(TABLE)).schema().to_arrow().field("txn_date").type == pa.date32()
    )


def test_rows_of_another_day_are_refused_and_nothing_is_written(lake: DeltaLake) -> None:
    version = lake.version(TABLE)
    wrong = rows([1, 2]).append_column("txn_date", pa.array([DAY_2, DAY_3], pa.date32()))
    with pytest.raises(ValueError, match=r"1 row\(s\) have txn_date outside 2026-01-02"):
        lake.overwrite_day(TABLE, wrong, DAY_2)
    assert lake.version(TABLE) == version
    assert values(lake, DAY_2) == [10, 20]


def test_chosen_days_are_replaced_in_one_commit_and_a_day_between_is_kept(
    lake: DeltaLake,
) -> None:
    version = lake.version(TABLE)
    both = rows([7, 8, 9]).append_column("txn_date", pa.array([DAY_1, DAY_1, DAY_3], pa.date32()))
    write = lake.overwrite_dates(TABLE, both, [DAY_1, DAY_3])
    assert write.version == version + 1 and write.rows == 3
    assert values(lake, DAY_1) == [7, 8]
    assert values(lake, DAY_2) == [10, 20]  # not one of the days: untouched
    assert values(lake, DAY_3) == [9]
    wrong = rows([1]).append_column("txn_date", pa.array([DAY_2], pa.date32()))
    with pytest.raises(
        ValueError, match=r"1 row\(s\) have txn_date outside 2026-01-01, 2026-01-03"
    ):
        lake.overwrite_dates(TABLE, wrong, [DAY_1, DAY_3])
    assert lake.version(TABLE) == version + 1


def test_rows_per_day_come_from_the_log(lake: DeltaLake, tmp_path: Path) -> None:
    missing = date(2026, 2, 1)
    assert lake.day_rows(TABLE, [DAY_1, DAY_2, DAY_3, missing]) == {
        DAY_1: 3,
        DAY_2: 2,
        DAY_3: 1,
        missing: 0,
    }
    lake.overwrite_day(TABLE, rows([1, 2, 3, 4]), DAY_2)  # the replaced file no longer counts
    assert lake.day_rows(TABLE, [DAY_2]) == {DAY_2: 4}
    assert DeltaLake(root_uri=str(tmp_path / "none")).day_rows(TABLE, [DAY_1]) == {DAY_1: 0}


def test_an_empty_write_clears_the_day(lake: DeltaLake) -> None:
    lake.overwrite_day(TABLE, rows([]), DAY_2)
    assert values(lake, DAY_2) == []
    assert lake.days(TABLE) == [DAY_1, DAY_3]


def test_pinned_versions_read_the_past(lake: DeltaLake) -> None:
    pinned = lake.version(TABLE)
    lake.overwrite_day(TABLE, rows([99]), DAY_1)
    assert sorted(lake.read(TABLE, days=[DAY_1], version=pinned).column("value").to_pylist()) == [
        1,
        2,
        3,
    ]
    assert values(lake, DAY_1) == [99]


def test_a_new_nullable_column_is_merged(lake: DeltaLake) -> None:
    wider = pa.table({"value": pa.array([4], pa.int64()), "note": pa.array(["x"])})
    lake.overwrite_day(TABLE, wider, DAY_3)
    assert lake.read(TABLE, days=[DAY_1]).column("note").null_count == 3
    assert lake.read(TABLE, days=[DAY_3]).column("note").to_pylist() == ["x"]


def test_reading_a_missing_table_says_what_to_do(tmp_path: Path) -> None:
    lake = DeltaLake(root_uri=str(tmp_path / "empty"))
    assert lake.days(TABLE) == []
    assert lake.version(TABLE) is None
    with pytest.raises(FileNotFoundError, match="silver/things does not exist"):
        lake.read(TABLE)


def test_reports_are_written_under_the_lake(lake: DeltaLake) -> None:
    uri = lake.write_report("<html></html>", "drift_report", "2026-01-01.html")
    assert uri.endswith("reports/drift_report/2026-01-01.html")
    assert Path(uri).read_text() == "<html></html>"


@pytest.mark.parametrize("codec", ["LZ4_RAW", "ZSTD"])
def test_files_use_the_configured_codec_on_creation_and_overwrite(
    tmp_path: Path, codec: str
) -> None:
    import pyarrow.parquet as pq

    lake = DeltaLake(root_uri=str(tmp_path / "lake"), compression=codec)
    lake.overwrite_day(TABLE, rows([1, 2]), DAY_1)  # creates the table
    lake.overwrite_day(TABLE, rows([3]), DAY_2)  # predicate overwrite of an existing table
    delta = DeltaTable(lake.table_uri(TABLE))
    assert delta.version() == 1
    for uri in delta.file_uris():
        codecs = {
            pq.ParquetFile(uri).metadata.row_group(0).column(i).compression
            for i in range(pq.ParquetFile(uri).metadata.num_columns)
        }
        # pyarrow names the LZ4_RAW codec "LZ4"
        assert codecs == {codec.removesuffix("_RAW")}, uri
    assert values(lake, DAY_1) == [1, 2] and values(lake, DAY_2) == [3]


def dated(values_: list[int], day: date) -> pa.Table:
    return rows(values_).append_column("txn_date", pa.array([day] * len(values_), pa.date32()))


def test_an_appender_commits_each_append_and_sees_other_writers(lake: DeltaLake) -> None:
    """The prediction log's writer: it keeps the table open, yet each append is its own commit
    after those another writer (a second replica) made, and its version is the one committed."""
    log = LakeTable("gold", "log", properties=(("delta.logRetentionDuration", "interval 2 days"),))
    appender = lake.appender(log)
    created = appender(dated([1], DAY_1))  # the first append creates the table...
    configuration = DeltaTable(lake.table_uri(log)).metadata().configuration
    assert configuration["delta.logRetentionDuration"] == "interval 2 days"  # ...as declared
    other = lake.append(log, dated([2], DAY_1))  # another writer in between
    mine = appender(dated([3], DAY_2))
    assert (created, other, mine) == (0, 1, 2)
    assert DeltaTable(lake.table_uri(log)).version() == mine
    assert sorted(lake.read(log).column("value").to_pylist()) == [1, 2, 3]
    assert lake.days(log) == [DAY_1, DAY_2]


def test_a_failed_append_changes_nothing_and_the_next_one_succeeds(lake: DeltaLake) -> None:
    log = LakeTable("gold", "log")
    appender = lake.appender(log)
    appender(dated([1], DAY_1))
    clash = pa.table({"value": pa.array(["one"]), "txn_date": pa.array([DAY_1], pa.date32())})
    with pytest.raises(DeltaError, match="Cannot cast string 'one'"):  # into the integer column
        appender(clash)
    with pytest.raises(ValueError, match="need a txn_date column"):
        appender(rows([9]))
    assert appender(dated([2], DAY_1)) == 1
    assert sorted(lake.read(log).column("value").to_pylist()) == [1, 2]


def test_an_appender_compacts_a_day_after_every_few_appends(lake: DeltaLake) -> None:
    log = LakeTable("gold", "log")
    appender = lake.appender(log, compact_every=5)
    versions = [appender(dated([i], DAY_1)) for i in range(12)]
    appender(dated([100], DAY_2))
    # appends 5 and 10 each compacted the day: 1 file, then the 2 appends since
    assert lake.day_files(log, DAY_1) == 3
    assert lake.day_files(log, DAY_2) == 1
    assert appender.compactions == 2 and appender.failed_compactions == 0
    assert sorted(lake.read(log, days=[DAY_1]).column("value").to_pylist()) == list(range(12))
    assert versions[5] == versions[4] + 2  # the compaction is a commit of its own


def test_a_failed_compaction_never_fails_the_append(
    lake: DeltaLake, caplog: pytest.LogCaptureFixture
) -> None:
    """A day's file gone from storage (deleted behind Delta's back) makes the compaction fail;
    the append it follows still succeeds, and so do the next ones."""
    log = LakeTable("gold", "log")
    appender = lake.appender(log, compact_every=3)
    appender(dated([1], DAY_1))
    appender(dated([2], DAY_1))
    first_file = DeltaTable(lake.table_uri(log)).file_uris()[0]
    Path(first_file.removeprefix("file://")).unlink()
    with caplog.at_level("WARNING"):
        version = appender(dated([3], DAY_1))
    assert version == 2
    assert appender.failed_compactions == 1 and appender.compactions == 0
    assert "gold/log: compacting 2026-01-01 failed" in caplog.text
    assert appender(dated([4], DAY_1)) == 3
    with pytest.raises(ValueError, match="compact_every must be 0"):
        lake.appender(log, compact_every=-1)
