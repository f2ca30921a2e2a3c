"""Landing files: which belong to a day, how they are read, and how bad files are refused."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.datagen import GeneratorConfig, generate_day, write_day
from mlops_assets.ingest.delivery import (
    REQUIRED_COLUMNS,
    DeliveryError,
    file_day,
    load_day,
    parse_delivered,
    rows_of_day_from_log,
)
from mlops_assets.resources.landing import LandingFile, LandingZone

DAY = date(2026, 1, 3)
EPOCH = date(2026, 1, 1)
NOW = datetime(2026, 1, 4)


def landing_file(path: Path) -> LandingFile:
    return LandingFile(uri=str(path), name=path.name, size=path.stat().st_size, mtime_ns=0)


def test_listing_keeps_only_delivered_data_files(tmp_path: Path) -> None:
    for name in [
        "transactions_2026-01-03.csv",
        "sub/transactions_2026-01-04.parquet",
        ".transactions_2026-01-05.csv.tmp",
        ".hidden.csv",
        "notes.txt",
        "x.csv.part",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    files = LandingZone(uri=str(tmp_path)).list_files()
    assert sorted(f.name for f in files) == [
        "transactions_2026-01-03.csv",
        "transactions_2026-01-04.parquet",
    ]
    assert all(Path(f.uri).exists() for f in files)


def test_listing_a_missing_landing_zone_is_empty(tmp_path: Path) -> None:
    assert LandingZone(uri=str(tmp_path / "nowhere")).list_files() == []


def test_file_day_from_name(tmp_path: Path) -> None:
    assert (
        file_day(LandingFile("u/transactions_2026-01-03.csv", "transactions_2026-01-03.csv", 1, 0))
        == DAY
    )
    assert file_day(LandingFile("u/paysim.csv", "paysim.csv", 1, 0)) is None
    with pytest.raises(DeliveryError, match="2026-02-30"):
        file_day(LandingFile("u/t_2026-02-30.csv", "t_2026-02-30.csv", 1, 0))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generated_files_are_read_as_delivered_text(tmp_path: Path, fmt: str) -> None:
    config = GeneratorConfig(rows_per_day=200, seed=3)
    path = write_day(DAY, config, tmp_path, fmt=fmt)
    frame = parse_delivered(landing_file(path), path.read_bytes())
    assert frame.height == 200
    assert all(dtype == pl.Utf8 for dtype in frame.schema.values())
    original = generate_day(DAY, config)
    assert [float(v) for v in frame["amount"].to_list()] == original["amount"].to_list()
    assert frame["timestamp"][0].endswith("Z")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "transactions_2026-01-03.csv"
    path.write_bytes(b"")
    with pytest.raises(DeliveryError, match=r"transactions_2026-01-03\.csv is empty"):
        parse_delivered(landing_file(path), path.read_bytes())


def test_header_only_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "transactions_2026-01-03.csv"
    path.write_text(",".join(REQUIRED_COLUMNS) + "\n")
    with pytest.raises(DeliveryError, match="header but no rows"):
        parse_delivered(landing_file(path), path.read_bytes())


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = write_day(DAY, GeneratorConfig(rows_per_day=50), tmp_path)
    frame = pl.read_csv(path).drop("amount", "nameDest")
    frame.write_csv(path)
    with pytest.raises(DeliveryError, match=r"missing required column\(s\) amount, nameDest"):
        parse_delivered(landing_file(path), path.read_bytes())


def test_malformed_csv_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "transactions_2026-01-03.csv"
    path.write_text(
        ",".join(REQUIRED_COLUMNS) + '\n1,PAYMENT,"10,2,3\n4,5,6,7,8,9,10,11,12,13,14,15,16\n'
    )
    with pytest.raises(DeliveryError, match=r"transactions_2026-01-03\.csv is malformed"):
        parse_delivered(landing_file(path), path.read_bytes())


def test_corrupt_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "transactions_2026-01-03.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DeliveryError, match="is malformed"):
        parse_delivered(landing_file(path), path.read_bytes())


def test_paysim_log_rows_are_mapped_to_days_by_step() -> None:
    log = pl.DataFrame({"step": ["1", "24", "25", "48", "49", "x", None]})
    day_two, unassignable = rows_of_day_from_log(log, date(2026, 1, 2), EPOCH)
    assert day_two["step"].to_list() == ["25", "48"]
    assert unassignable == 2


def test_load_day_combines_dated_files_and_undated_logs(tmp_path: Path) -> None:
    config = GeneratorConfig(rows_per_day=100, seed=1, epoch=EPOCH)
    write_day(DAY, config, tmp_path)
    write_day(date(2026, 1, 4), config, tmp_path)
    # a real-PaySim-like log without timestamps covering 2026-01-01..2026-01-03
    log = pl.concat([generate_day(date(2026, 1, d), config) for d in (1, 2, 3)]).drop("timestamp")
    log.write_csv(tmp_path / "paysim_log.csv")
    zone = LandingZone(uri=str(tmp_path))
    rows, sources, unassignable = load_day(DAY, zone.list_files(), zone.read_bytes, EPOCH, NOW)
    assert sorted(Path(s).name for s in sources) == [
        "paysim_log.csv",
        "transactions_2026-01-03.csv",
    ]
    assert rows.height == 200
    assert unassignable == 0
    from_log = rows.filter(pl.col("_source_file").str.ends_with("paysim_log.csv"))
    assert from_log["_timestamp_from_step"].all()
    assert from_log["_source_row"].min() == 201  # rows keep their line in the delivered file
    assert rows["_ingested_at"].dtype == pl.Datetime("us", "UTC")
    assert rows["_ingested_at"][0] == NOW.replace(tzinfo=UTC)
