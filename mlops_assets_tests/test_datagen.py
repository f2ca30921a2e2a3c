"""Tests of the PaySim-style demo data generator (real files, no mocks)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.datagen import (
    ACCOUNT_ID_PATTERN,
    BAD_ROW_KINDS,
    CUSTOMER_ID_PATTERN,
    OUTPUT_COLUMNS,
    PAYSIM_COLUMNS,
    TRANSACTION_TYPES,
    GeneratorConfig,
    generate_day,
    write_day,
    write_days,
)

DAY = date(2026, 1, 5)
MONEY_COLUMNS = (
    "amount",
    "oldbalanceOrg",
    "newbalanceOrig",
    "oldbalanceDest",
    "newbalanceDest",
)
EXPECTED_SCHEMA = {
    "step": pl.Int64,
    "type": pl.Utf8,
    "amount": pl.Float64,
    "nameOrig": pl.Utf8,
    "oldbalanceOrg": pl.Float64,
    "newbalanceOrig": pl.Float64,
    "nameDest": pl.Utf8,
    "oldbalanceDest": pl.Float64,
    "newbalanceDest": pl.Float64,
    "isFraud": pl.Int64,
    "isFlaggedFraud": pl.Int64,
    "timestamp": pl.Datetime("us", "UTC"),
}
EMPTIES_ORIGIN = (pl.col("amount") == pl.col("oldbalanceOrg")) & (pl.col("newbalanceOrig") == 0)
CASH_LIKE = pl.col("type").is_in(["TRANSFER", "CASH_OUT"])


@pytest.fixture(scope="module")
def small_config() -> GeneratorConfig:
    """A small clean configuration for fast tests."""
    return GeneratorConfig(rows_per_day=5_000, seed=7)


@pytest.fixture(scope="module")
def big_day() -> pl.DataFrame:
    """50k clean rows: enough frauds to measure rates."""
    return generate_day(DAY, GeneratorConfig(rows_per_day=50_000))


def _violations(frame: pl.DataFrame) -> pl.DataFrame:
    """Classify each row of an all-Utf8 frame by the contract rule(s) it breaks."""
    not_parsable = [
        pl.col(c).is_not_null() & pl.col(c).cast(pl.Float64, strict=False).is_null()
        for c in MONEY_COLUMNS
    ]
    return frame.select(
        negative_amount=pl.col("amount").cast(pl.Float64, strict=False).fill_null(0) < 0,
        unknown_type=pl.col("type").is_not_null() & ~pl.col("type").is_in(list(TRANSACTION_TYPES)),
        null_required=pl.any_horizontal(pl.col(c).is_null() for c in PAYSIM_COLUMNS),
        mistyped_numeric=pl.any_horizontal(not_parsable),
        malformed_account=(
            (
                pl.col("nameOrig").is_not_null()
                & ~pl.col("nameOrig").str.contains(CUSTOMER_ID_PATTERN)
            )
            | (
                pl.col("nameDest").is_not_null()
                & ~pl.col("nameDest").str.contains(ACCOUNT_ID_PATTERN)
            )
        ),
    )


def test_same_seed_and_day_is_deterministic(small_config: GeneratorConfig) -> None:
    assert generate_day(DAY, small_config).equals(generate_day(DAY, small_config))
    bad = GeneratorConfig(rows_per_day=2_000, bad_row_share=0.05)
    assert generate_day(DAY, bad).equals(generate_day(DAY, bad))


def test_different_day_or_seed_differs(small_config: GeneratorConfig) -> None:
    base = generate_day(DAY, small_config)
    assert not base.equals(generate_day(DAY + timedelta(days=1), small_config))
    other_seed = GeneratorConfig(rows_per_day=small_config.rows_per_day, seed=small_config.seed + 1)
    assert not base.equals(generate_day(DAY, other_seed))


def test_columns_dtypes_and_row_count(small_config: GeneratorConfig) -> None:
    frame = generate_day(DAY, small_config)
    assert frame.columns == list(OUTPUT_COLUMNS)
    assert dict(frame.schema) == EXPECTED_SCHEMA
    assert frame.height == small_config.rows_per_day
    assert frame.null_count().sum_horizontal().item() == 0
    assert set(frame["type"].unique()) == set(TRANSACTION_TYPES)
    for column in MONEY_COLUMNS:
        cents = frame[column] * 100
        assert ((cents - cents.round()).abs() < 1e-6).all(), column
        assert (frame[column] >= 0).all(), column


def test_step_matches_timestamp_and_rows_are_sorted(
    small_config: GeneratorConfig,
) -> None:
    day = date(2026, 1, 3)
    frame = generate_day(day, small_config)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    assert frame["timestamp"].is_sorted()
    assert frame["timestamp"].min() >= start
    assert frame["timestamp"].max() < start + timedelta(days=1)
    expected_step = (
        (day - small_config.epoch).days * 24 + frame["timestamp"].dt.hour().cast(pl.Int64) + 1
    )
    assert (frame["step"] == expected_step).all()
    assert frame["step"].min() >= 2 * 24 + 1


def test_account_ids_and_destinations(small_config: GeneratorConfig) -> None:
    frame = generate_day(DAY, small_config)
    assert frame["nameOrig"].str.contains(CUSTOMER_ID_PATTERN).all()
    assert frame["nameDest"].str.contains(ACCOUNT_ID_PATTERN).all()
    to_merchant = frame["nameDest"].str.starts_with("M")
    assert (to_merchant == (frame["type"] == "PAYMENT")).all()


def test_stable_customer_pool_with_several_transactions_per_day(
    small_config: GeneratorConfig,
) -> None:
    day1 = generate_day(DAY, small_config)
    day2 = generate_day(DAY + timedelta(days=1), small_config)
    customers1, customers2 = set(day1["nameOrig"]), set(day2["nameOrig"])
    assert len(customers1 & customers2) / len(customers1) > 0.6
    per_customer = day1.group_by("nameOrig").len()["len"]
    assert per_customer.mean() > 2.5
    assert per_customer.max() >= 5


def test_legit_balances_are_consistent(small_config: GeneratorConfig) -> None:
    legit = generate_day(DAY, small_config).filter(pl.col("isFraud") == 0)
    incoming = pl.col("type") == "CASH_IN"
    expected_orig = (
        pl.when(incoming)
        .then(pl.col("oldbalanceOrg") + pl.col("amount"))
        .otherwise(pl.max_horizontal(pl.col("oldbalanceOrg") - pl.col("amount"), 0.0))
    )
    assert legit.select((expected_orig - pl.col("newbalanceOrig")).abs().max()).item() < 0.01
    customer_dest = legit.filter(
        pl.col("nameDest").str.starts_with("C") & (pl.col("oldbalanceDest") > 0)
    )
    expected_dest = (
        pl.when(incoming)
        .then(pl.max_horizontal(pl.col("oldbalanceDest") - pl.col("amount"), 0.0))
        .otherwise(pl.col("oldbalanceDest") + pl.col("amount"))
    )
    assert (
        customer_dest.select((expected_dest - pl.col("newbalanceDest")).abs().max()).item() < 0.01
    )


def test_fraud_rate_types_and_flag(big_day: pl.DataFrame) -> None:
    rate = big_day["isFraud"].mean()
    assert 0.001 <= rate <= 0.01
    fraud = big_day.filter(pl.col("isFraud") == 1)
    assert set(fraud["type"].unique()) == {"TRANSFER", "CASH_OUT"}
    flagged = big_day.filter(pl.col("isFlaggedFraud") == 1)
    assert (flagged["isFraud"] == 1).all()
    assert (flagged["type"] == "TRANSFER").all()
    assert (flagged["amount"] > 200_000).all()
    assert flagged.height < fraud.height / 10


def test_fraud_signal_is_learnable_but_imperfect(big_day: pl.DataFrame) -> None:
    fraud = big_day.filter(pl.col("isFraud") == 1)
    legit = big_day.filter(pl.col("isFraud") == 0)
    fraud_empty_share = fraud.select(EMPTIES_ORIGIN.mean()).item()
    assert 0.5 < fraud_empty_share < 1.0
    assert legit.filter(CASH_LIKE).select(EMPTIES_ORIGIN.sum()).item() > 0
    dest_zero = (pl.col("oldbalanceDest") == 0) & (pl.col("newbalanceDest") == 0)
    assert 0.2 < fraud.select(dest_zero.mean()).item() < 0.95


def test_fraud_comes_in_bursts(big_day: pl.DataFrame) -> None:
    fraud = big_day.filter(pl.col("isFraud") == 1)
    transfers = fraud.filter(pl.col("type") == "TRANSFER").select(
        "nameDest", t_transfer="timestamp"
    )
    cash_outs = fraud.filter(pl.col("type") == "CASH_OUT").select(
        nameDest="nameOrig", t_cash_out="timestamp"
    )
    followed = (
        transfers.join(cash_outs, on="nameDest")
        .filter(
            (pl.col("t_cash_out") > pl.col("t_transfer"))
            & (pl.col("t_cash_out") - pl.col("t_transfer") <= timedelta(hours=2))
        )
        .unique(["nameDest", "t_transfer"])
    )
    assert followed.height / transfers.height > 0.9


def test_drift_day_differs_while_clean_days_look_alike() -> None:
    config = GeneratorConfig(drift_start=date(2026, 1, 10))
    clean_a = generate_day(date(2026, 1, 8), config)
    clean_b = generate_day(date(2026, 1, 9), config)
    drifted = generate_day(date(2026, 1, 10), config)

    def cash_share(frame: pl.DataFrame) -> float:
        return frame.select(CASH_LIKE.mean()).item()

    assert abs(clean_a["amount"].median() / clean_b["amount"].median() - 1) < 0.1
    assert abs(cash_share(clean_a) - cash_share(clean_b)) < 0.02
    assert drifted["amount"].median() / clean_a["amount"].median() > 1.5
    assert cash_share(drifted) - cash_share(clean_a) > 0.08
    assert 0.001 <= drifted["isFraud"].mean() <= 0.01


def test_bad_rows_cover_every_kind() -> None:
    frame = generate_day(DAY, GeneratorConfig(rows_per_day=20_000, bad_row_share=0.05))
    assert frame.columns == list(OUTPUT_COLUMNS)
    assert all(dtype == pl.Utf8 for dtype in frame.schema.values())
    violations = _violations(frame)
    bad_share = violations.select(pl.any_horizontal(pl.all()).mean()).item()
    assert abs(bad_share - 0.05) < 0.005
    per_kind = violations.sum().row(0, named=True)
    assert set(per_kind) == set(BAD_ROW_KINDS)
    for kind, count in per_kind.items():
        assert count > 0.05 * 20_000 / len(BAD_ROW_KINDS) / 2, kind
    assert set(frame["isFraud"].unique()) == {"0", "1"}
    parsed = frame["timestamp"].str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC")
    assert parsed.null_count() == 0


def test_clean_rows_pass_the_contract(small_config: GeneratorConfig) -> None:
    as_text = generate_day(DAY, small_config).select(pl.all().cast(pl.Utf8))
    assert not _violations(as_text).select(pl.any_horizontal(pl.all()).any()).item()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_day_lands_a_readable_file(
    tmp_path: Path, small_config: GeneratorConfig, fmt: str
) -> None:
    landing = tmp_path / "landing" / "nested"
    path = write_day(DAY, small_config, landing, fmt=fmt)
    assert path == landing / f"transactions_{DAY.isoformat()}.{fmt}"
    assert [p.name for p in landing.iterdir()] == [path.name]  # no temp file left behind
    back = pl.read_csv(path, schema=EXPECTED_SCHEMA) if fmt == "csv" else pl.read_parquet(path)
    assert back.height == small_config.rows_per_day
    assert back.equals(generate_day(DAY, small_config))


def test_write_bad_rows_as_csv(tmp_path: Path) -> None:
    config = GeneratorConfig(rows_per_day=1_000, bad_row_share=0.05)
    path = write_day(DAY, config, str(tmp_path), fmt="csv")
    back = pl.read_csv(path, infer_schema=False)
    assert back.height == 1_000
    assert back.columns == list(OUTPUT_COLUMNS)


def test_write_days_and_validation(tmp_path: Path) -> None:
    config = GeneratorConfig(rows_per_day=500)
    paths = write_days(DAY, 3, config, tmp_path, fmt="parquet")
    assert [p.name for p in paths] == [
        f"transactions_{DAY + timedelta(days=i)}.parquet" for i in range(3)
    ]
    assert all(pl.read_parquet(p).height == 500 for p in paths)
    with pytest.raises(ValueError):
        write_day(DAY, config, tmp_path, fmt="json")
    with pytest.raises(ValueError):
        generate_day(config.epoch - timedelta(days=1), config)
    with pytest.raises(ValueError):
        GeneratorConfig(bad_row_share=1.5)
