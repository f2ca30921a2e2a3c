"""The per-transaction behaviour features, defined once as portable SQL.

The definition is its output expressions (``OUTPUT_EXPRESSIONS``, standard SQL) and the named
windows they aggregate over (``WINDOWS``). From them comes the batch query (``feature_sql``): it
reads a view named ``transactions`` holding the validated rows of the target days and of the
day before them (the 24-hour look-back), with ``event_seconds`` (whole UTC epoch seconds)
added, and returns one row per transaction of the target days, in no particular order (sorting
a day cost a third of the query; readers that need an order sort). It uses only standard SQL
with window functions (no engine-specific functions), so DuckDB runs it here and Spark SQL can
run it in a cluster. The model service runs the same expressions and windows in process
(``online_engine.py``), since a DuckDB query per request costs more than a request may take.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FeatureWindow:
    """A named window: the earlier transactions of the same account (``partition_by``) from
    the ``lookback_seconds`` before a transaction, up to the second before it (rows at the
    same second are not "before")."""

    name: str
    partition_by: str
    lookback_seconds: int

    def sql(self) -> str:
        return (
            f"{self.name} AS (PARTITION BY {self.partition_by} ORDER BY event_seconds\n"
            f"{' ' * (len(self.name) + 9)}RANGE BETWEEN {self.lookback_seconds} PRECEDING"
            " AND 1 PRECEDING)"
        )


WINDOWS: tuple[FeatureWindow, ...] = (
    FeatureWindow("orig_24h", "nameOrig", LOOKBACK_SECONDS),
    FeatureWindow("dest_24h", "nameDest", LOOKBACK_SECONDS),
)

#: Every output column with the SQL expression that computes it, in output order. An
#: expression reads the validated columns, ``event_seconds``, and window aggregates written
#: ``COUNT(*) OVER w``, ``SUM(column) OVER w`` or ``AVG(column) OVER w`` over a window of
#: ``WINDOWS`` (the form ``window_aggregates`` reads, so that every runner computes them).
OUTPUT_EXPRESSIONS: tuple[tuple[str, str], ...] = (
    ("transaction_id", "transaction_id"),
    ("txn_date", "CAST(txn_date AS DATE)"),
    ("timestamp", "timestamp"),
    ("type", "type"),
    ("nameOrig", "nameOrig"),
    ("nameDest", "nameDest"),
    ("isFraud", "CAST(isFraud AS INTEGER)"),
    ("amount", "amount"),
    ("log_amount", "LN(1.0 + amount)"),
    ("oldbalanceOrg", "oldbalanceOrg"),
    ("newbalanceOrig", "newbalanceOrig"),
    ("oldbalanceDest", "oldbalanceDest"),
    ("newbalanceDest", "newbalanceDest"),
    ("orig_balance_delta", "oldbalanceOrg - newbalanceOrig"),
    ("dest_balance_delta", "newbalanceDest - oldbalanceDest"),
    ("orig_balance_error", "oldbalanceOrg - amount - newbalanceOrig"),
    ("dest_balance_error", "oldbalanceDest + amount - newbalanceDest"),
    ("amount_to_orig_balance", "amount / (oldbalanceOrg + 1.0)"),
    (
        "empties_orig_account",
        "CASE WHEN oldbalanceOrg > 0 AND newbalanceOrig = 0 THEN 1 ELSE 0 END",
    ),
    (
        "dest_balances_zero",
        "CASE WHEN oldbalanceDest = 0 AND newbalanceDest = 0 THEN 1 ELSE 0 END",
    ),
    ("is_transfer", "CASE WHEN type = 'TRANSFER' THEN 1 ELSE 0 END"),
    ("is_cash_out", "CASE WHEN type = 'CASH_OUT' THEN 1 ELSE 0 END"),
    ("is_payment", "CASE WHEN type = 'PAYMENT' THEN 1 ELSE 0 END"),
    ("is_cash_in", "CASE WHEN type = 'CASH_IN' THEN 1 ELSE 0 END"),
    ("is_debit", "CASE WHEN type = 'DEBIT' THEN 1 ELSE 0 END"),
    ("hour_of_day", "CAST(FLOOR((event_seconds % 86400) / 3600) AS INTEGER)"),
    ("orig_txn_count_24h", "COUNT(*) OVER orig_24h"),
    ("orig_amount_sum_24h", "COALESCE(SUM(amount) OVER orig_24h, 0.0)"),
    ("amount_to_orig_mean_24h", "amount / COALESCE(AVG(amount) OVER orig_24h, amount)"),
    ("dest_txn_count_24h", "COUNT(*) OVER dest_24h"),
    ("dest_amount_sum_24h", "COALESCE(SUM(amount) OVER dest_24h, 0.0)"),
)


@dataclass(frozen=True)
class WindowAggregate:
    """One ``FUNCTION(column) OVER window`` term of the output expressions."""

    sql: str  # as written, e.g. "SUM(amount) OVER orig_24h"
    function: str  # COUNT, SUM or AVG
    column: str | None  # None for COUNT(*)
    window: FeatureWindow


#: A window aggregate term as the output expressions write it.
AGGREGATE_TERM = re.compile(r"\b(COUNT|SUM|AVG)\((\*|[A-Za-z_]\w*)\) OVER ([A-Za-z_]\w*)")


def window_aggregates(
    expressions: tuple[tuple[str, str], ...] = OUTPUT_EXPRESSIONS,
    declared: tuple[FeatureWindow, ...] = WINDOWS,
) -> tuple[WindowAggregate, ...]:
    """The distinct window aggregate terms of the output expressions, in order of appearance.

    Raises ``ValueError`` for an ``OVER`` that is not of the declared form or names an
    undeclared window: a runner that computes the windows itself would otherwise miss it.
    """
    windows = {window.name: window for window in declared}
    found: dict[str, WindowAggregate] = {}
    for name, expression in expressions:
        terms = list(AGGREGATE_TERM.finditer(expression))
        if len(terms) != expression.upper().count(" OVER "):
            raise ValueError(f"{name}: a window term is not FUNCTION(column) OVER window")
        for term in terms:
            function, column, window = term.groups()
            if window not in windows:
                raise ValueError(f"{name}: no window named {window}")
            if (column == "*") != (function == "COUNT"):
                raise ValueError(f"{name}: write COUNT(*), SUM(column) or AVG(column)")
            found.setdefault(
                term.group(0),
                WindowAggregate(
                    term.group(0), function, None if column == "*" else column, windows[window]
                ),
            )
    return tuple(found.values())


WINDOW_AGGREGATES = window_aggregates()

_FEATURE_SQL = """
SELECT * FROM (
  SELECT
{select}
  FROM transactions
  WINDOW
{windows}
) AS features
WHERE txn_date BETWEEN DATE '{{first}}' AND DATE '{{last}}'
""".format(
    select=",\n".join(
        f"    {expression}" if expression == name else f"    {expression} AS {name}"
        for name, expression in OUTPUT_EXPRESSIONS
    ),
    windows=",\n".join(f"    {window.sql()}" for window in WINDOWS),
)


def feature_sql(first: date, last: date | None = None) -> str:
    """The feature query for the transactions of ``first``..``last`` (inclusive).

    Its input must also hold the day before ``first`` (the 24-hour look-back).
    """
    return _FEATURE_SQL.format(first=first.isoformat(), last=(last or first).isoformat())


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
