"""The per-transaction behaviour features, defined once as portable SQL.

The query reads a view named ``transactions`` holding the validated rows of the target days and
of the day before them (the 24-hour look-back), with ``event_seconds`` (whole UTC epoch seconds)
added, and returns one row per transaction of the target days, in no particular order (sorting
a day cost a third of the query; readers that need an order sort). It uses only standard SQL
with window functions (no engine-specific functions), so DuckDB runs it here and Spark SQL can
run it in a cluster.
"""

from __future__ import annotations

from datetime import date, timedelta

LOOKBACK_SECONDS = 24 * 3600

#: Model inputs, in the order the model sees them.
FEATURE_COLUMNS: tuple[str, ...] = (
    "amount",
    "log_amount",
    "oldbalanceOrg",
    "newbalanceOrig",
    "oldbalanceDest",
    "newbalanceDest",
    "orig_balance_delta",
    "dest_balance_delta",
    "orig_balance_error",
    "dest_balance_error",
    "amount_to_orig_balance",
    "empties_orig_account",
    "dest_balances_zero",
    "is_transfer",
    "is_cash_out",
    "is_payment",
    "is_cash_in",
    "is_debit",
    "hour_of_day",
    "orig_txn_count_24h",
    "orig_amount_sum_24h",
    "amount_to_orig_mean_24h",
    "dest_txn_count_24h",
    "dest_amount_sum_24h",
)
LABEL_COLUMN = "isFraud"
KEY_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "txn_date",
    "timestamp",
    "type",
    "nameOrig",
    "nameDest",
)

_FEATURE_SQL = """
SELECT * FROM (
  SELECT
    transaction_id,
    CAST(txn_date AS DATE) AS txn_date,
    timestamp,
    type,
    nameOrig,
    nameDest,
    CAST(isFraud AS INTEGER) AS isFraud,
    amount,
    LN(1.0 + amount) AS log_amount,
    oldbalanceOrg,
    newbalanceOrig,
    oldbalanceDest,
    newbalanceDest,
    oldbalanceOrg - newbalanceOrig AS orig_balance_delta,
    newbalanceDest - oldbalanceDest AS dest_balance_delta,
    oldbalanceOrg - amount - newbalanceOrig AS orig_balance_error,
    oldbalanceDest + amount - newbalanceDest AS dest_balance_error,
    amount / (oldbalanceOrg + 1.0) AS amount_to_orig_balance,
    CASE WHEN oldbalanceOrg > 0 AND newbalanceOrig = 0 THEN 1 ELSE 0 END AS empties_orig_account,
    CASE WHEN oldbalanceDest = 0 AND newbalanceDest = 0 THEN 1 ELSE 0 END AS dest_balances_zero,
    CASE WHEN type = 'TRANSFER' THEN 1 ELSE 0 END AS is_transfer,
    CASE WHEN type = 'CASH_OUT' THEN 1 ELSE 0 END AS is_cash_out,
    CASE WHEN type = 'PAYMENT' THEN 1 ELSE 0 END AS is_payment,
    CASE WHEN type = 'CASH_IN' THEN 1 ELSE 0 END AS is_cash_in,
    CASE WHEN type = 'DEBIT' THEN 1 ELSE 0 END AS is_debit,
    CAST(FLOOR((event_seconds % 86400) / 3600) AS INTEGER) AS hour_of_day,
    COUNT(*) OVER orig_24h AS orig_txn_count_24h,
    COALESCE(SUM(amount) OVER orig_24h, 0.0) AS orig_amount_sum_24h,
    amount / COALESCE(AVG(amount) OVER orig_24h, amount) AS amount_to_orig_mean_24h,
    COUNT(*) OVER dest_24h AS dest_txn_count_24h,
    COALESCE(SUM(amount) OVER dest_24h, 0.0) AS dest_amount_sum_24h
  FROM transactions
  WINDOW
    orig_24h AS (PARTITION BY nameOrig ORDER BY event_seconds
                 RANGE BETWEEN {lookback} PRECEDING AND 1 PRECEDING),
    dest_24h AS (PARTITION BY nameDest ORDER BY event_seconds
                 RANGE BETWEEN {lookback} PRECEDING AND 1 PRECEDING)
) AS features
WHERE txn_date BETWEEN DATE '{first}' AND DATE '{last}'
"""


def feature_sql(first: date, last: date | None = None) -> str:
    """The feature query for the transactions of ``first``..``last`` (inclusive).

    Its input must also hold the day before ``first`` (the 24-hour look-back).
    """
    return _FEATURE_SQL.format(
        lookback=LOOKBACK_SECONDS, first=first.isoformat(), last=(last or first).isoformat()
    )


def lookback_days(first: date, last: date | None = None) -> list[date]:
    """The validated partitions that the features of ``first``..``last`` read."""
    last = last or first
    return [first - timedelta(days=1 - i) for i in range((last - first).days + 2)]


#: The validated columns each output column is computed from (shown as column lineage).
COLUMN_SOURCES: dict[str, tuple[str, ...]] = {
    "transaction_id": ("transaction_id",),
    "txn_date": ("txn_date",),
    "timestamp": ("timestamp",),
    "type": ("type",),
    "nameOrig": ("nameOrig",),
    "nameDest": ("nameDest",),
    "isFraud": ("isFraud",),
    "amount": ("amount",),
    "log_amount": ("amount",),
    "oldbalanceOrg": ("oldbalanceOrg",),
    "newbalanceOrig": ("newbalanceOrig",),
    "oldbalanceDest": ("oldbalanceDest",),
    "newbalanceDest": ("newbalanceDest",),
    "orig_balance_delta": ("oldbalanceOrg", "newbalanceOrig"),
    "dest_balance_delta": ("oldbalanceDest", "newbalanceDest"),
    "orig_balance_error": ("oldbalanceOrg", "amount", "newbalanceOrig"),
    "dest_balance_error": ("oldbalanceDest", "amount", "newbalanceDest"),
    "amount_to_orig_balance": ("amount", "oldbalanceOrg"),
    "empties_orig_account": ("oldbalanceOrg", "newbalanceOrig"),
    "dest_balances_zero": ("oldbalanceDest", "newbalanceDest"),
    "is_transfer": ("type",),
    "is_cash_out": ("type",),
    "is_payment": ("type",),
    "is_cash_in": ("type",),
    "is_debit": ("type",),
    "hour_of_day": ("timestamp",),
    "orig_txn_count_24h": ("nameOrig", "timestamp"),
    "orig_amount_sum_24h": ("nameOrig", "timestamp", "amount"),
    "amount_to_orig_mean_24h": ("nameOrig", "timestamp", "amount"),
    "dest_txn_count_24h": ("nameDest", "timestamp"),
    "dest_amount_sum_24h": ("nameDest", "timestamp", "amount"),
}

#: The validated columns the query reads (engines read only these).
INPUT_COLUMNS: tuple[str, ...] = tuple(
    sorted({source for sources in COLUMN_SOURCES.values() for source in sources})
)
