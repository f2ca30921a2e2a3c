"""The Spark engine through Spark Connect (`MLOPS_SPARK_MASTER=sc://...`): a real Connect server
(the one PySpark ships, started with spark-submit on loopback) builds the same features."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyspark
import pytest
from polars.testing import assert_frame_equal

from mlops_assets.environment import build_feature_engine, spark_config
from mlops_assets.features.engines import DuckDBFeatureEngine
from mlops_assets.features.spark_engine import SparkFeatureEngine
from mlops_assets.resources.spark_jars import fetch_delta_jars
from mlops_assets.settings import Settings
from mlops_assets_tests.helpers import free_port
from mlops_assets_tests.spark_connect_server import running_connect_server
from mlops_assets_tests.test_spark import DAYS, features, lake_with_validated

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def connect_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from pyspark.sql import SparkSession

    # one process holds either a classic or a Connect session: end the other tests' local one
    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    settings = Settings()
    jars = fetch_delta_jars(settings.spark_jars_dir)
    port = free_port()
    spark_home = Path(pyspark.__file__).parent
    local = spark_config(Settings(spark_master="local[2]"))
    confs = [
        f"{key}={value}"
        for key, value in local.items()
        if key.startswith(("spark.sql.", "spark.databricks."))
    ]
    command = [
        str(spark_home / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master",
        "local[2]",
        "--jars",
        ",".join(str(j) for j in jars),
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        "spark.ui.enabled=false",
        *[arg for conf in confs for arg in ("--conf", conf)],
        "spark-internal",
    ]
    log = tmp_path_factory.mktemp("connect") / "server.log"
    env = {**os.environ, "SPARK_HOME": str(spark_home)}
    with running_connect_server(command, env, log, port) as address:
        yield address


def test_features_through_spark_connect_match_duckdb(tmp_path: Path, connect_address: str) -> None:
    engine = build_feature_engine(Settings(feature_engine="spark", spark_master=connect_address))
    assert isinstance(engine, SparkFeatureEngine)
    assert engine.pyspark.spark_config["spark.remote"] == connect_address
    duck_lake = lake_with_validated(tmp_path / "duck")
    connect_lake = lake_with_validated(tmp_path / "connect")
    context = dg.build_asset_context()
    DuckDBFeatureEngine().build(context, duck_lake, DAYS[1], DAYS[2])
    build = engine.build(context, connect_lake, DAYS[1], DAYS[2])
    assert build.write.rows == 2 * 4_000
    assert_frame_equal(
        features(connect_lake), features(duck_lake), check_exact=False, rel_tol=1e-9, abs_tol=1e-9
    )
    session = engine.session(context.log)
    assert type(session).__module__.startswith("pyspark.sql.connect")
