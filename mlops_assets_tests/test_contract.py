"""The data contract splits delivered rows into validated and quarantined, naming each rule."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from mlops_assets.validate.contract import CONTRACT_VERSION, contract_hash, describe_contract
from mlops_assets.validate.rules import DUPLICATE_RULE, apply_contract

DAY = date(2026, 1, 3)
EPOCH = date(2026, 1, 1)
GOOD = {
    "step": "49",
    "type": "TRANSFER",
    "amount": "1500.25",
    "nameOrig": "C123456789",
    "oldbalanceOrg": "2000",
    "newbalanceOrig": "499.75",
    "nameDest": "C987654321",
    "oldbalanceDest": "0",
    "newbalanceDest": "1500.25",
    "isFraud": "0",
    "isFlaggedFraud": "0",
    "timestamp": "2026-01-03T00:15:00Z",
}


def delivered(
    *rows: dict[str, str | None], source: str = "transactions_2026-01-03.csv"
) -> pl.DataFrame:
    frame = pl.DataFrame(list(rows), schema={k: pl.Utf8 for k in GOOD})
    return frame.with_columns(
        pl.lit(f"/landing/{source}").alias("_source_file"),
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("_source_row"),
        pl.lit(datetime(2026, 1, 4, tzinfo=UTC)).alias("_ingested_at"),
        pl.lit(False).alias("_timestamp_from_step"),
    )


def rules_by_row(outcome) -> dict[int, list[str]]:
    return dict(outcome.quarantined.select("_source_row", "_rules").iter_rows())


def test_good_rows_are_typed_and_identified() -> None:
    outcome = apply_contract(delivered(GOOD, {**GOOD, "amount": "10"}), DAY, EPOCH)
    assert outcome.quarantined.height == 0
    valid = outcome.valid
    assert valid.height == 2
    assert valid.schema["amount"] == pl.Float64
    assert valid.schema["isFraud"] == pl.Int8
    assert valid.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert valid["transaction_id"].to_list() == [
        "transactions_2026-01-03:1",
        "transactions_2026-01-03:2",
    ]
    assert valid["amount"].to_list() == [1500.25, 10.0]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"amount": "-5"}, "amount: greater_than(0)"),
        ({"amount": "0"}, "amount: greater_than(0)"),
        ({"type": "WIRE"}, "type: isin"),
        ({"amount": None}, "amount: not_nullable"),
        ({"nameOrig": None}, "nameOrig: not_nullable"),
        ({"amount": "12,5O"}, "amount: not a valid Float64"),
        ({"oldbalanceOrg": "n/a"}, "oldbalanceOrg: not a valid Float64"),
        ({"oldbalanceDest": "-1"}, "oldbalanceDest: greater_than_or_equal_to(0)"),
        ({"nameOrig": "X12ab"}, "nameOrig: str_matches"),
        ({"isFraud": "2"}, "isFraud: isin"),
        ({"step": "0"}, "step: greater_than_or_equal_to(1)"),
        ({"timestamp": "yesterday"}, "timestamp: not a valid Datetime"),
        ({"timestamp": "2026-01-04T00:00:00Z"}, "timestamp_on_partition_day"),
    ],
)
def test_each_broken_rule_is_named(change: dict[str, str | None], rule: str) -> None:
    outcome = apply_contract(delivered(GOOD, {**GOOD, **change}), DAY, EPOCH)
    assert outcome.valid.height == 1
    quarantined = rules_by_row(outcome)
    assert list(quarantined) == [2]
    assert any(r.startswith(rule) for r in quarantined[2]), quarantined[2]
    row = outcome.quarantined.row(0, named=True)
    assert row["_source_file"].endswith("transactions_2026-01-03.csv")
    # quarantined values are kept exactly as delivered
    for column, value in change.items():
        assert row[column] == value


def test_a_row_lists_every_rule_it_breaks_once() -> None:
    bad = {**GOOD, "amount": "abc", "type": "WIRE", "nameDest": "??"}
    outcome = apply_contract(delivered(bad), DAY, EPOCH)
    rules = rules_by_row(outcome)[1]
    assert len(rules) == 3
    assert "amount: not a valid Float64" in rules
    # the unparseable amount is not reported a second time as a null
    assert not any(r.startswith("amount: not_nullable") for r in rules)


def test_duplicate_rows_of_a_day_are_quarantined() -> None:
    first = delivered(GOOD, source="transactions_2026-01-03.csv")
    again = delivered(GOOD, source="transactions_2026-01-03_again.csv")
    outcome = apply_contract(pl.concat([first, again]), DAY, EPOCH)
    assert outcome.valid.height == 1
    assert outcome.quarantined["_rules"].to_list() == [[DUPLICATE_RULE]]
    assert outcome.quarantined["_source_file"][0].endswith("_again.csv")


def test_timestamps_from_step_follow_the_paysim_epoch() -> None:
    row = {**GOOD, "timestamp": None, "step": "50"}  # step 50 = 2026-01-03 01:00 UTC
    frame = delivered(row).with_columns(pl.lit(True).alias("_timestamp_from_step"))
    outcome = apply_contract(frame, DAY, EPOCH)
    assert outcome.valid["timestamp"].to_list() == [datetime(2026, 1, 3, 1, tzinfo=UTC)]


def test_rows_reconcile_and_reject_share() -> None:
    rows = (
        [GOOD] * 1
        + [{**GOOD, "amount": str(i + 1)} for i in range(7)]
        + [
            {**GOOD, "type": "BAD"},
            {**GOOD, "amount": "-1"},
        ]
    )
    outcome = apply_contract(delivered(*rows), DAY, EPOCH)
    assert outcome.total_rows == 10
    assert outcome.valid.height == 8
    assert outcome.reject_share == pytest.approx(0.2)
    assert sum(outcome.rejects_by_rule.values()) == 2


def test_missing_delivered_column_quarantines_with_not_null() -> None:
    frame = delivered(GOOD).drop("timestamp")
    outcome = apply_contract(frame, DAY, EPOCH)
    assert rules_by_row(outcome)[1] == ["timestamp: not_nullable"]


def test_contract_identity_is_stable() -> None:
    assert CONTRACT_VERSION == "1"
    assert contract_hash() == contract_hash()
    assert len(contract_hash()) == 16
    assert set(describe_contract()) >= {"amount", "type", "nameOrig", "timestamp"}
