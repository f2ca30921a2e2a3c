"""Spark with delta-spark: feature parity with DuckDB, day-exact overwrites, and Delta tables
that delta-rs and delta-spark both read and write. Uses a real local Spark session."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from polars.testing import assert_frame_equal

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.environment import build_feature_engine
from mlops_assets.features.assets import transaction_features
from mlops_assets.features.engines import DuckDBFeatureEngine
from mlops_assets.features.spark_engine import SparkFeatureEngine
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.spark_jars import fetch_delta_jars
from mlops_assets.settings import Settings
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS
from mlops_assets_tests.helpers import validated_day

pytestmark = pytest.mark.slow

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(4)]


@pytest.fixture(scope="module")
def spark_engine() -> Iterator[SparkFeatureEngine]:
    settings = Settings(feature_engine="spark", spark_master="local[2]")
    fetch_delta_jars(settings.spark_jars_dir)
    engine = build_feature_engine(settings)
    assert isinstance(engine, SparkFeatureEngine)
    yield engine


@pytest.fixture(scope="module")
def spark(spark_engine: SparkFeatureEngine) -> Any:
    return spark_engine.session(dg.get_dagster_logger())


def lake_with_validated(root: Path) -> DeltaLake:
    lake = DeltaLake(root_uri=str(root))
    config = GeneratorConfig(rows_per_day=4_000, seed=3, drift_start=DAYS[-1])
    for day in DAYS:
        lake.overwrite_day(VALIDATED_TRANSACTIONS, validated_day(day, config).to_arrow(), day)
    return lake


def features(lake: DeltaLake) -> pl.DataFrame:
    return pl.from_arrow(lake.read(TRANSACTION_FEATURES)).sort("transaction_id")


def test_spark_and_duckdb_build_identical_feature_tables(
    tmp_path: Path, spark_engine: SparkFeatureEngine
) -> None:
    duck_lake = lake_with_validated(tmp_path / "duck")
    spark_lake = lake_with_validated(tmp_path / "spark")
    context = dg.build_asset_context()
    DuckDBFeatureEngine().build(context, duck_lake, DAYS[1], DAYS[3])
    build = spark_engine.build(context, spark_lake, DAYS[1], DAYS[3])
    duck, spark_features = features(duck_lake), features(spark_lake)
    assert build.write.rows == duck.height == 3 * 4_000
    assert spark_features.columns == duck.columns
    assert spark_features.schema == duck.schema
    assert_frame_equal(spark_features, duck, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    assert build.engine == "spark"


def test_spark_replaces_exactly_the_days_it_writes(
    tmp_path: Path, spark_engine: SparkFeatureEngine
) -> None:
    lake = lake_with_validated(tmp_path / "lake")
    context = dg.build_asset_context()
    spark_engine.build(context, lake, DAYS[1], DAYS[3])
    before = features(lake)
    untouched = {
        f
        for f in DeltaTable(lake.table_uri(TRANSACTION_FEATURES)).file_uris()
        if "2026-01-03" not in f
    }
    version = lake.version(TRANSACTION_FEATURES)
    for _ in range(2):
        spark_engine.build(context, lake, DAYS[2], DAYS[2])
    after = features(lake)
    assert lake.version(TRANSACTION_FEATURES) == version + 2
    assert_frame_equal(after, before)  # same rows, no duplicates
    assert untouched <= set(DeltaTable(lake.table_uri(TRANSACTION_FEATURES)).file_uris())


def test_missing_validated_day_is_named(tmp_path: Path, spark_engine: SparkFeatureEngine) -> None:
    lake = lake_with_validated(tmp_path / "lake")
    with pytest.raises(dg.Failure, match=r"no rows for 2026-01-05, .*, 2026-01-09: materialize"):
        spark_engine.build(
            dg.build_asset_context(), lake, DAYS[3] + timedelta(days=1), DAYS[3] + timedelta(days=5)
        )
    # a range that reaches one day past the data skips that day (a backfill's look-back edge)
    build = spark_engine.build(dg.build_asset_context(), lake, DAYS[3], DAYS[3] + timedelta(days=1))
    assert build.write.rows == 4_000


def test_delta_rs_reads_what_delta_spark_writes(tmp_path: Path, spark: Any) -> None:
    from pyspark.sql import functions as F

    path = str(tmp_path / "from_spark")
    frame = spark.createDataFrame(
        [(1, "a", 1.5, date(2026, 1, 1)), (2, "b", None, date(2026, 1, 2))],
        "id long, name string, score double, txn_date date",
    )
    frame.write.format("delta").partitionBy("txn_date").save(path)
    wider = (
        frame.where("id = 2")
        .withColumn("note", F.lit("new"))
        .withColumn("id", F.lit(3).cast("long"))
    )
    wider.write.format("delta").mode("append").option("mergeSchema", "true").save(path)
    table = DeltaTable(path)
    assert table.metadata().partition_columns == ["txn_date"]
    read = pl.from_arrow(table.to_pyarrow_table()).sort("id")
    assert read["id"].to_list() == [1, 2, 3]
    assert read["score"].to_list() == [1.5, None, None]
    assert read["note"].to_list() == [None, None, "new"]
    assert read["txn_date"].to_list() == [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 2)]


def test_delta_spark_reads_what_delta_rs_writes(tmp_path: Path, spark: Any) -> None:
    lake = DeltaLake(root_uri=str(tmp_path))
    table = VALIDATED_TRANSACTIONS
    lake.overwrite_day(table, pa.table({"id": pa.array([1, 2], pa.int64())}), DAYS[0])
    lake.overwrite_day(
        table,
        pa.table({"id": pa.array([3], pa.int64()), "note": pa.array(["x"])}),
        DAYS[1],
    )
    write_deltalake(
        lake.table_uri(table),
        pa.table({"id": pa.array([4], pa.int64()), "txn_date": pa.array([DAYS[1]], pa.date32())}),
        mode="append",
        schema_mode="merge",
    )
    read = spark.read.format("delta").load(lake.table_uri(table)).orderBy("id").collect()
    assert [(r["id"], r["note"], r["txn_date"]) for r in read] == [
        (1, None, DAYS[0]),
        (2, None, DAYS[0]),
        (3, "x", DAYS[1]),
        (4, None, DAYS[1]),
    ]
    assert {
        f.name: f.dataType.simpleString()
        for f in spark.read.format("delta").load(lake.table_uri(table)).schema
    }["txn_date"] == "date"


def test_the_asset_builds_a_day_range_in_one_spark_run(
    tmp_path: Path, spark_engine: SparkFeatureEngine
) -> None:
    lake = lake_with_validated(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [transaction_features],
            resources={"lake": lake, "feature_engine": spark_engine},
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": DAYS[1].isoformat(),
                "dagster/asset_partition_range_end": DAYS[3].isoformat(),
            },
        )
        assert result.success
        materialized = instance.get_materialized_partitions(dg.AssetKey("transaction_features"))
    assert materialized == {d.isoformat() for d in DAYS[1:]}
    events = result.get_asset_materialization_events()
    assert {e.materialization.metadata["engine"].value for e in events} == {"spark"}
    assert DeltaTable(lake.table_uri(TRANSACTION_FEATURES)).version() == 0  # one commit
    assert lake.days(TRANSACTION_FEATURES) == DAYS[1:]
