"""The one feature definition: windows, look-back and shape, run by DuckDB and by the model
service's in-process runner, which must agree on every case and on whole generated days."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlops_assets.datagen import GeneratorConfig, generate_day
from mlops_assets.features.definition import (
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    WINDOWS,
    lookback_days,
    window_aggregates,
)
from mlops_assets.features.duckdb_engine import compute_features_duckdb
from mlops_assets.features.online_engine import (
    INPUT_SCHEMA,
    IndexedHistory,
    compute_features_online,
)
from mlops_assets_tests.helpers import feature_days, validated_day

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


def input_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows).select(INPUT_SCHEMA.names).cast(INPUT_SCHEMA)


def online_features(
    table: pa.Table, day: date, groups: list[int] | np.ndarray | None = None
) -> pa.Table:
    """The day's rows as requests to the online runner, with every row (the day's too) in its
    history, as the service holds the validated days: a request row is counted once."""
    requests = table.filter(pc.equal(table.column("txn_date"), pa.scalar(day, pa.date32())))
    return compute_features_online(requests, IndexedHistory.build(table), groups)


@pytest.fixture(params=["duckdb", "online"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def features_of(rows: list[dict], engine: str, day: date = DAY) -> dict[str, dict]:
    table = input_table(rows)
    if engine == "duckdb":
        result = compute_features_duckdb(table, day)
    else:
        result = online_features(table, day)
    return {row["transaction_id"]: row for row in result.to_pylist()}


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, second, tzinfo=UTC)


def test_history_counts_prior_24_hours_including_the_day_before(engine: str) -> None:
    rows = [
        txn("old", at(1, 1), "C1", 50.0),  # more than 24 h before the last one
        txn("prev", at(1, 23), "C1", 100.0),  # the day before, inside the window
        txn("a", at(2, 2), "C1", 200.0),
        txn("b", at(2, 3), "C1", 300.0, dest="C9", type_="TRANSFER"),
        txn("c", at(2, 3, 30), "C2", 10.0, dest="C9"),
    ]
    features = features_of(rows, engine)
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


def test_transactions_in_the_same_second_do_not_see_each_other(engine: str) -> None:
    rows = [txn("x", at(2, 5), "C1", 1.0), txn("y", at(2, 5), "C1", 2.0)]
    features = features_of(rows, engine)
    assert features["x"]["orig_txn_count_24h"] == 0
    assert features["y"]["orig_txn_count_24h"] == 0


def test_payload_features(engine: str) -> None:
    row = txn("t", at(2, 13, 45), "C1", 400.0, dest="C7", type_="CASH_OUT", old=400.0)
    features = features_of([row], engine)["t"]
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


@pytest.mark.parametrize("one_request_per_transaction", [False, True])
def test_online_runner_equals_batch_on_a_generated_day(one_request_per_transaction: bool) -> None:
    """Every column of every row, as the service computes it (each transaction sent alone, or
    the whole day as one request), equals the batch table: same schema, same values (floats
    to 1e-12 relative: sums may add in another order)."""
    config = GeneratorConfig(rows_per_day=3_000, seed=11)
    days = lookback_days(DAY)
    table = pl.concat([validated_day(d, config) for d in days]).to_arrow()
    table = table.select(INPUT_SCHEMA.names).cast(INPUT_SCHEMA)
    batch = compute_features_duckdb(table, DAY).sort_by("transaction_id")
    groups = np.arange(3_000) if one_request_per_transaction else None
    online = online_features(table, DAY, groups).sort_by("transaction_id")
    assert online.schema == batch.schema
    assert online.num_rows == batch.num_rows == 3_000
    assert batch.column("orig_txn_count_24h").to_numpy().max() > 1  # windows are exercised
    for name in batch.column_names:
        expected = batch.column(name).to_numpy(zero_copy_only=False)
        actual = online.column(name).to_numpy(zero_copy_only=False)
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0, err_msg=name)
        else:
            assert (actual == expected).all(), name


def test_online_requests_see_history_and_their_own_rows_but_not_each_other() -> None:
    history = input_table([txn("h", at(2, 1), "C1", 100.0), txn("r", at(2, 2), "C1", 7.0)])
    requests = input_table(
        [
            txn("a", at(2, 3), "C1", 10.0),
            txn("b", at(2, 4), "C1", 20.0),  # same request as a: sees a
            txn("r", at(2, 2), "C1", 7.0),  # another request replaying history row r
            txn("c", at(2, 5), "C1", 30.0),  # a third request: sees history only
        ]
    )
    result = compute_features_online(requests, IndexedHistory.build(history), [0, 0, 1, 2])
    counts = dict(
        zip(
            result.column("transaction_id").to_pylist(),
            result.column("orig_txn_count_24h").to_pylist(),
            strict=True,
        )
    )
    assert result.column("transaction_id").to_pylist() == ["a", "b", "r", "c"]  # request order
    assert counts == {"a": 2, "b": 3, "r": 1, "c": 2}  # r replayed: h only, not itself twice
    sums = result.column("orig_amount_sum_24h").to_pylist()
    assert sums == [107.0, 117.0, 100.0, 107.0]


def test_online_runner_refuses_no_rows_mismatched_groups_and_nulls() -> None:
    empty = IndexedHistory.build(INPUT_SCHEMA.empty_table())
    one = input_table([txn("a", at(2, 3), "C1", 1.0)])
    with pytest.raises(ValueError, match="no transactions"):
        compute_features_online(INPUT_SCHEMA.empty_table(), empty)
    with pytest.raises(ValueError, match="2 group numbers for 1 rows"):
        compute_features_online(one, empty, [0, 1])
    # SQL's SUM would skip a null amount where NumPy's would give NaN: refused, never guessed
    no_amount = one.set_column(0, "amount", pa.array([None], pa.float64()))
    with pytest.raises(ValueError, match="transactions: amount has null values"):
        compute_features_online(no_amount, empty)
    with pytest.raises(ValueError, match="history: amount has null values"):
        IndexedHistory.build(no_amount)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("MAX(amount) OVER orig_24h", "is not FUNCTION"),
        ("SUM(amount) OVER last_week", "no window named last_week"),
        ("COUNT(amount) OVER orig_24h", "write COUNT"),
        ("SUM(*) OVER orig_24h", "write COUNT"),
    ],
)
def test_a_window_term_no_runner_can_compute_is_refused(expression: str, problem: str) -> None:
    """The online runner computes the window terms itself, so the definition refuses a term it
    would not recognise rather than let the two engines part ways."""
    with pytest.raises(ValueError, match=problem):
        window_aggregates((("odd_feature", expression),), WINDOWS)
