"""Feature engines: the resources that run the one feature definition over a range of days.

Both read the validated rows of the days and of the day before, run ``feature_sql`` and replace
those days of ``transaction_features`` in one Delta commit. Which one a deployment uses is
decided in ``environment.py`` (``MLOPS_FEATURE_ENGINE``); the asset only calls ``build``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg

from mlops_assets.features.definition import INPUT_COLUMNS, lookback_days
from mlops_assets.resources.lake import DeltaLake, PartitionWrite
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS


@dataclass(frozen=True)
class FeatureBuild:
    """What one engine run wrote, with the figures an analyst sees."""

    write: PartitionWrite
    schema: dg.TableSchema
    fraud_rate: float
    validated_version: int | None
    engine: str


def missing_days(present: set[date], first: date, last: date) -> list[date]:
    """Target days without validated rows (the day before ``first`` may be absent)."""
    wanted = lookback_days(first, last)[1:]
    return [d for d in wanted if d not in present]


def require_days(present: set[date], first: date, last: date, log: Any) -> None:
    """Refuse a single day without validated rows; in a range, skip such days with a warning.

    (A backfill maps the last validated day onto the next day's features too, through the
    24-hour look-back; that day has no transactions yet and simply gets no feature rows.)
    """
    missing = missing_days(present, first, last)
    wanted = lookback_days(first, last)[1:]
    if missing and (first == last or len(missing) == len(wanted)):
        raise dg.Failure(
            description="validated_transactions has no rows for "
            f"{', '.join(d.isoformat() for d in missing)}: materialize it first"
        )
    if missing:
        log.warning(
            "No validated rows (so no feature rows) for "
            f"{', '.join(d.isoformat() for d in missing)}"
        )


class FeatureEngine(dg.ConfigurableResource):
    """Runs the feature definition; subclasses choose the engine."""

    @property
    def name(self) -> str:
        raise NotImplementedError

    def build(
        self, context: dg.AssetExecutionContext, lake: DeltaLake, first: date, last: date
    ) -> FeatureBuild:
        raise NotImplementedError


class DuckDBFeatureEngine(FeatureEngine):
    """DuckDB over Arrow tables read with delta-rs: the fast default on one machine."""

    threads: int | None = None

    @property
    def name(self) -> str:
        return "duckdb"

    def build(
        self, context: dg.AssetExecutionContext, lake: DeltaLake, first: date, last: date
    ) -> FeatureBuild:
        import pyarrow.compute as pc

        from mlops_assets.features.duckdb_engine import compute_features_duckdb
        from mlops_assets.resources.lake import column_schema

        validated_version = lake.version(VALIDATED_TRANSACTIONS)
        validated = lake.read(
            VALIDATED_TRANSACTIONS,
            days=lookback_days(first, last),
            columns=list(INPUT_COLUMNS),
            version=validated_version,
        )
        require_days(
            set(pc.unique(validated.column("txn_date")).to_pylist()), first, last, context.log
        )
        features = compute_features_duckdb(validated, first, last, threads=self.threads)
        write = lake.overwrite_days(TRANSACTION_FEATURES, features, first, last)
        return FeatureBuild(
            write=write,
            schema=column_schema(features.schema),
            fraud_rate=pc.mean(features.column("isFraud")).as_py() or 0.0,
            validated_version=validated_version,
            engine=self.name,
        )
