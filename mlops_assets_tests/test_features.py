"""The one feature definition, run by DuckDB: windows, look-back and shape."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import polars as pl
import pyarrow as pa
import pytest

from mlops_assets.datagen import GeneratorConfig, generate_day
from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN, lookback_days
from mlops_assets.features.duckdb_engine import compute_features_duckdb
from mlops_assets_tests.helpers import feature_days

DAY = date(2026, 1, 2)


def txn(
    tid: str,
    when: datetime,
    orig: str,
    amount: float,
    dest: str = "M1",
    type_: str = "PAYMENT",
    old: float = 1000.0,
    new: float | None = None,
) -> dict:
    return {
        "transaction_id": tid,
        "txn_date": when.date(),
        "timestamp": when,
        "type": type_,
        "amount": amount,
        "nameOrig": orig,
        "oldbalanceOrg": old,
        "newbalanceOrig": max(old - amount, 0.0) if new is None else new,
        "nameDest": dest,
        "oldbalanceDest": 0.0,
        "newbalanceDest": 0.0,
        "isFraud": 0,
    }


def features_of(rows: list[dict], day: date = DAY) -> dict[str, dict]:
    table = pa.Table.from_pylist(rows)
    table = table.set_column(
        table.column_names.index("timestamp"),
        "timestamp",
        table.column("timestamp").cast(pa.timestamp("us", tz="UTC")),
    )
    result = compute_features_duckdb(table, day)
    return {row["transaction_id"]: row for row in result.to_pylist()}


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, second, tzinfo=UTC)


def test_history_counts_prior_24_hours_including_the_day_before() -> None:
    rows = [
        txn("old", at(1, 1), "C1", 50.0),  # more than 24 h before the last one
        txn("prev", at(1, 23), "C1", 100.0),  # the day before, inside the window
        txn("a", at(2, 2), "C1", 200.0),
        txn("b", at(2, 3), "C1", 300.0, dest="C9", type_="TRANSFER"),
        txn("c", at(2, 3, 30), "C2", 10.0, dest="C9"),
    ]
    features = features_of(rows)
    assert sorted(features) == ["a", "b", "c"]  # only the target day's rows come out
    a, b, c = features["a"], features["b"], features["c"]
    assert a["orig_txn_count_24h"] == 1  # prev; old is 25 h earlier, outside the window
    assert a["orig_amount_sum_24h"] == pytest.approx(100.0)
    assert b["orig_txn_count_24h"] == 2  # prev and a
    assert b["orig_amount_sum_24h"] == pytest.approx(300.0)
    assert b["amount_to_orig_mean_24h"] == pytest.approx(300.0 / 150.0)
    assert c["orig_txn_count_24h"] == 0
    assert c["orig_amount_sum_24h"] == 0.0
    assert c["amount_to_orig_mean_24h"] == pytest.approx(1.0)
    assert c["dest_txn_count_24h"] == 1  # b went to C9 before c
    assert c["dest_amount_sum_24h"] == pytest.approx(300.0)


def test_transactions_in_the_same_second_do_not_see_each_other() -> None:
    rows = [txn("x", at(2, 5), "C1", 1.0), txn("y", at(2, 5), "C1", 2.0)]
    features = features_of(rows)
    assert features["x"]["orig_txn_count_24h"] == 0
    assert features["y"]["orig_txn_count_24h"] == 0


def test_payload_features() -> None:
    row = txn("t", at(2, 13, 45), "C1", 400.0, dest="C7", type_="CASH_OUT", old=400.0)
    features = features_of([row])["t"]
    assert features["hour_of_day"] == 13
    assert features["is_cash_out"] == 1 and features["is_transfer"] == 0
    assert features["empties_orig_account"] == 1
    assert features["dest_balances_zero"] == 1
    assert features["orig_balance_delta"] == pytest.approx(400.0)
    assert features["orig_balance_error"] == pytest.approx(0.0)
    assert features["dest_balance_error"] == pytest.approx(400.0)
    assert features["log_amount"] == pytest.approx(math.log(401.0))
    assert features["amount_to_orig_balance"] == pytest.approx(400.0 / 401.0)


def test_generated_day_has_one_complete_feature_row_per_transaction() -> None:
    config = GeneratorConfig(rows_per_day=3_000, seed=11)
    frame = feature_days(lookback_days(DAY), config)
    assert frame.height == 3_000
    assert sum(frame.select(pl.col(list(FEATURE_COLUMNS)).null_count()).row(0)) == 0
    assert frame[LABEL_COLUMN].sum() == generate_day(DAY, config)["isFraud"].sum()
    assert frame["orig_txn_count_24h"].mean() > 1.0  # accounts do have history
    assert frame["transaction_id"].is_unique().all()
