"""The transaction data contract, as a pandera (polars) schema.

A row passes when every column has its type and meets its rule. The contract is versioned:
``CONTRACT_VERSION`` is bumped by hand on a deliberate change, and ``contract_hash()`` changes
whenever the schema itself does; both are recorded with every validated partition and model.
"""

from __future__ import annotations

import hashlib
from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from mlops_assets.paysim import TRANSACTION_TYPES

CONTRACT_VERSION = "1"
ACCOUNT_ID_PATTERN = r"^[CM][0-9]{1,12}$"

#: The typed columns of a validated transaction and the polars type each delivered text is
#: parsed into. A value that does not parse is a ``dtype`` violation of its column.
TYPED_COLUMNS: dict[str, pl.DataType] = {
    "step": pl.Int64(),
    "type": pl.Utf8(),
    "amount": pl.Float64(),
    "nameOrig": pl.Utf8(),
    "oldbalanceOrg": pl.Float64(),
    "newbalanceOrig": pl.Float64(),
    "nameDest": pl.Utf8(),
    "oldbalanceDest": pl.Float64(),
    "newbalanceDest": pl.Float64(),
    "isFraud": pl.Int8(),
    "isFlaggedFraud": pl.Int8(),
    "timestamp": pl.Datetime("us", "UTC"),
}

_UTC = {"time_unit": "us", "time_zone": "UTC"}


class TransactionContract(pa.DataFrameModel):
    """One mobile-money transaction as the platform accepts it."""

    step: pl.Int64 = pa.Field(ge=1)
    type: pl.Utf8 = pa.Field(isin=list(TRANSACTION_TYPES))
    amount: pl.Float64 = pa.Field(gt=0)
    nameOrig: pl.Utf8 = pa.Field(str_matches=ACCOUNT_ID_PATTERN)
    oldbalanceOrg: pl.Float64 = pa.Field(ge=0)
    newbalanceOrig: pl.Float64 = pa.Field(ge=0)
    nameDest: pl.Utf8 = pa.Field(str_matches=ACCOUNT_ID_PATTERN)
    oldbalanceDest: pl.Float64 = pa.Field(ge=0)
    newbalanceDest: pl.Float64 = pa.Field(ge=0)
    isFraud: pl.Int8 = pa.Field(isin=[0, 1])
    isFlaggedFraud: pl.Int8 = pa.Field(isin=[0, 1])
    timestamp: DateTime = pa.Field(dtype_kwargs=_UTC)
    partition_day: pl.Date

    @pa.dataframe_check(name="timestamp_on_partition_day")
    @classmethod
    def timestamp_on_partition_day(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """The transaction's UTC date is the day it was delivered for."""
        return data.lazyframe.select(pl.col("timestamp").dt.date() == pl.col("partition_day"))

    class Config:
        strict = False
        coerce = False


def contract_hash() -> str:
    """A short, stable hash of the contract's definition (columns, types and checks)."""
    schema = TransactionContract.to_schema()
    parts = [
        f"{name}:{column.dtype}:{[str(c) for c in column.checks]}:{column.nullable}"
        for name, column in sorted(schema.columns.items())
    ]
    parts += [str(check) for check in schema.checks]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def describe_contract() -> dict[str, str]:
    """Column -> human-readable rule, for documentation and UI metadata."""
    schema = TransactionContract.to_schema()
    return {
        name: ", ".join(
            [str(column.dtype)]
            + [c.name for c in column.checks]
            + ([] if column.nullable else ["not null"])
        )
        for name, column in schema.columns.items()
        if name != "partition_day"
    }


def parse_day(partition_day: date) -> pl.Expr:
    return pl.lit(partition_day, dtype=pl.Date).alias("partition_day")
