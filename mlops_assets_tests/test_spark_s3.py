"""Spark on a lake in S3 (``s3a``), against moto's S3 server on loopback.

The validated days are written to the bucket by delta-rs; the ``transaction_features`` asset
is then materialized by the Dagster CLI in its own process, configured only through the
environment as a step pod is (``MLOPS_*`` settings, ``AWS_*`` credentials): Spark reads the days
over ``s3a://`` and writes the features with delta-spark, and delta-rs reads them back here.
They must equal what the DuckDB engine builds from the same data. A process without the S3A jars
must fail with a message naming the command that fetches them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.instance.ref import InstanceRef
from polars.testing import assert_frame_equal

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.environment import spark_config
from mlops_assets.features.engines import DuckDBFeatureEngine
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.spark_jars import (
    FETCH_COMMAND,
    delta_jars,
    fetch_spark_jars,
    s3a_jars,
)
from mlops_assets.resources.spark_s3 import CREDENTIALS_PROVIDER, spark_path
from mlops_assets.settings import Settings
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS
from mlops_assets_tests.helpers import free_port, validated_day
from mlops_assets_tests.s3_server import S3Server
from mlops_assets_tests.spark_connect_server import running_connect_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGSTER = Path(sys.executable).parent / "dagster"
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]
CONFIG = GeneratorConfig(rows_per_day=3_000, seed=11, drift_start=DAYS[-1])
S3_SETTINGS = {
    "lake_uri": "s3://bucket/lake",
    "s3_endpoint_url": "http://127.0.0.1:9000",
    "s3_region": "eu-west-1",
    "s3_allow_http": True,
}


# ---- the configuration (no JVM) -----------------------------------------------------------------


def test_a_local_lake_gets_no_s3a_configuration() -> None:
    config = spark_config(Settings(spark_master="local[2]", lake_uri="/data/lake"))

    assert not [key for key in config if "s3a" in key or "extraClassPath" in key]


def test_a_lake_on_s3_gets_s3a_from_the_s3_settings(tmp_path: Path) -> None:
    settings = Settings(spark_master="local[2]", spark_jars_dir=str(tmp_path), **S3_SETTINGS)
    config = spark_config(settings)

    assert {k: v for k, v in config.items() if k.startswith("spark.hadoop.")} == {
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider": CREDENTIALS_PROVIDER,
    }
    # no jars in this (empty) cache: nothing is put on the class path
    assert "spark.driver.extraClassPath" not in config
    # settings and explicit Spark configuration still win
    overridden = Settings(
        spark_master="local[2]",
        spark_jars_dir=str(tmp_path),
        spark_conf={"spark.hadoop.fs.s3a.path.style.access": "false"},
        **S3_SETTINGS,
    )
    assert spark_config(overridden)["spark.hadoop.fs.s3a.path.style.access"] == "false"


def test_aws_itself_needs_no_endpoint_and_keeps_tls() -> None:
    config = spark_config(Settings(spark_master="local[2]", lake_uri="s3://bucket/lake"))

    assert {k for k in config if k.startswith("spark.hadoop.")} == {
        "spark.hadoop.fs.s3a.aws.credentials.provider"
    }


def test_a_spark_connect_server_owns_its_s3a_configuration() -> None:
    config = spark_config(Settings(spark_master="sc://spark:15002", **S3_SETTINGS))

    assert not [key for key in config if "s3a" in key]


def test_only_spark_sees_s3_uris_as_s3a() -> None:
    assert spark_path("s3://bucket/lake/silver/t") == "s3a://bucket/lake/silver/t"
    assert spark_path("s3a://bucket/t") == "s3a://bucket/t"
    assert spark_path("/data/lake/silver/t") == "/data/lake/silver/t"


# ---- Spark over s3a against moto's server ------------------------------------------------------


@dataclass
class SparkS3Lake:
    """A bucket on the moto server whose lake holds the validated days (written by delta-rs)."""

    s3: S3Server
    bucket: str
    jars_dir: Path

    @property
    def lake_uri(self) -> str:
        return f"s3://{self.bucket}/lake"

    @property
    def lake(self) -> DeltaLake:
        return DeltaLake(root_uri=self.lake_uri, storage_options=self.s3.storage_options)


def write_validated(lake: DeltaLake) -> None:
    for day in DAYS:
        lake.overwrite_day(VALIDATED_TRANSACTIONS, validated_day(day, CONFIG).to_arrow(), day)


def new_spark_lake(s3_server: S3Server) -> SparkS3Lake:
    """A new bucket whose lake holds the validated days; the Spark jars fetched."""
    jars_dir = Path(Settings().spark_jars_dir).expanduser()
    fetch_spark_jars(jars_dir)
    bucket = f"spark-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    lake = SparkS3Lake(s3_server, bucket, jars_dir)
    write_validated(lake.lake)
    return lake


@pytest.fixture(scope="module")
def spark_lake(s3_server: S3Server) -> SparkS3Lake:
    return new_spark_lake(s3_server)


def step_environment(lake: SparkS3Lake, home: Path, jars_dir: Path) -> dict[str, str]:
    """What a step pod gets: MLOPS_* settings, and the credentials as the standard AWS_*
    variables (no AWS endpoint variable: the endpoint reaches Spark and delta-rs through
    MLOPS_S3_ENDPOINT_URL only)."""
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # a Spark Connect session made earlier in this process sets SPARK_CONNECT_MODE_ENABLED,
    # which would make the step's local session look for a Connect server
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLOPS_", "DAGSTER_", "AWS_"))
        and k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")
    }
    env.update(
        MLOPS_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        MLOPS_AUTOMATION_ENABLED="false",
        MLOPS_LAKE_URI=lake.lake_uri,
        MLOPS_S3_ENDPOINT_URL=lake.s3.endpoint_url,
        MLOPS_S3_REGION=lake.s3.region,
        MLOPS_S3_ALLOW_HTTP="true",
        MLOPS_FEATURE_ENGINE="spark",
        MLOPS_SPARK_MASTER="local[2]",
        MLOPS_SPARK_JARS_DIR=str(jars_dir),
        AWS_ACCESS_KEY_ID=lake.s3.access_key_id,
        AWS_SECRET_ACCESS_KEY=lake.s3.secret_access_key,
    )
    return env


def materialize_features(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``transaction_features`` for DAYS[1]..DAYS[-1] in one run, from the Dagster CLI."""
    return subprocess.run(
        [
            str(DAGSTER),
            "asset",
            "materialize",
            "-m",
            "mlops_assets.definitions",
            "--select",
            "transaction_features",
            "--partition-range",
            f"{DAYS[1]}...{DAYS[-1]}",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def sorted_features(lake: DeltaLake) -> pl.DataFrame:
    return pl.from_arrow(lake.read(TRANSACTION_FEATURES)).sort("transaction_id")


def assert_spark_wrote_duckdbs_features(spark_lake: SparkS3Lake, tmp_path: Path) -> None:
    """The features table in the bucket is one delta-spark commit of DAYS[1:], and delta-rs
    reads from it what the DuckDB engine builds from the same validated days."""
    lake = spark_lake.lake
    (commit,) = lake.history(TRANSACTION_FEATURES)  # the whole range is one commit
    assert "Apache-Spark" in commit["engineInfo"]  # written by delta-spark, in the bucket
    assert lake.days(TRANSACTION_FEATURES) == DAYS[1:]
    keys = {
        item["Key"]
        for item in spark_lake.s3.client()
        .list_objects_v2(Bucket=spark_lake.bucket, Prefix="lake/gold/transaction_features/")
        .get("Contents", [])
    }
    assert "lake/gold/transaction_features/_delta_log/00000000000000000000.json" in keys

    duck_lake = DeltaLake(root_uri=str(tmp_path / "duck"))
    write_validated(duck_lake)
    DuckDBFeatureEngine().build(dg.build_asset_context(), duck_lake, DAYS[1], DAYS[-1])
    spark_features, duck = sorted_features(lake), sorted_features(duck_lake)
    assert spark_features.height == duck.height > 2 * 2_500
    assert spark_features.schema == duck.schema
    assert_frame_equal(spark_features, duck, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.slow
def test_spark_builds_features_over_s3a_that_delta_rs_reads_and_equal_duckdbs(
    spark_lake: SparkS3Lake, tmp_path: Path
) -> None:
    env = step_environment(spark_lake, tmp_path / "home", spark_lake.jars_dir)
    result = materialize_features(env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "Spark session" in result.stderr

    assert_spark_wrote_duckdbs_features(spark_lake, tmp_path)

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("transaction_features")) == {
            d.isoformat() for d in DAYS[1:]
        }


@pytest.mark.slow
def test_without_the_s3a_jars_the_step_fails_naming_the_fetch_command(
    spark_lake: SparkS3Lake, tmp_path: Path
) -> None:
    # a jar cache that holds the Delta jars only
    only_delta = tmp_path / "jars"
    only_delta.mkdir()
    delta = delta_jars().directory(spark_lake.jars_dir)
    (only_delta / delta.name).symlink_to(delta, target_is_directory=True)
    env = step_environment(spark_lake, tmp_path / "home", only_delta)

    result = materialize_features(env)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Spark cannot open s3a:// paths" in output, output[-5000:]
    assert f"`{FETCH_COMMAND}`" in output
    assert s3a_jars().package in output


# ---- the Spark Connect server of deploy/k8s/spark-connect.yaml, run here -----------------------

MANIFEST = PROJECT_ROOT / "deploy" / "k8s" / "spark-connect.yaml"


@dataclass(frozen=True)
class ConnectServerSpec:
    """What the manifest runs: the spark-defaults.conf of its ConfigMap, the container's shell
    command and its plain environment."""

    spark_defaults: str
    command: str
    env: dict[str, str]


def connect_server_spec() -> ConnectServerSpec:
    import yaml

    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["/bin/bash", "-c"]
    return ConnectServerSpec(
        spark_defaults=config_map["data"]["spark-defaults.conf"],
        command=container["args"][2],
        env={e["name"]: e["value"] for e in container["env"] if "value" in e},
    )


@contextmanager
def manifest_connect_server(lake: SparkS3Lake, workdir: Path) -> Iterator[str]:
    """The manifest's server command and configuration on loopback, with the image's paths
    (``/opt/spark-jars``, ``/opt/spark-conf``, ``SPARK_HOME``) mapped to this machine's and the
    configuration's commented S3-compatible lines set to moto's endpoint."""
    import pyspark

    spec = connect_server_spec()
    port = free_port()
    conf_dir = workdir / "spark-conf"
    conf_dir.mkdir(parents=True)
    # later lines win in a properties file: loopback, a small heap, moto instead of AWS
    (conf_dir / "spark-defaults.conf").write_text(
        spec.spark_defaults
        + f"""
spark.connect.grpc.binding.port {port}
spark.connect.grpc.binding.address 127.0.0.1
spark.driver.memory 2g
spark.local.dir {workdir / "scratch"}
spark.ui.enabled false
spark.hadoop.fs.s3a.endpoint {lake.s3.endpoint_url}
spark.hadoop.fs.s3a.path.style.access true
spark.hadoop.fs.s3a.connection.ssl.enabled false
spark.hadoop.fs.s3a.endpoint.region {lake.s3.region}
"""
    )
    command = spec.command.replace("/opt/spark-jars", str(lake.jars_dir)).replace(
        "/opt/spark-conf", str(conf_dir)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPARK_"))}
    env.update(
        spec.env,
        SPARK_HOME=str(Path(pyspark.__file__).parent),
        AWS_ACCESS_KEY_ID=lake.s3.access_key_id,
        AWS_SECRET_ACCESS_KEY=lake.s3.secret_access_key,
    )
    with running_connect_server(
        ["/bin/bash", "-c", command], env, workdir / "server.log", port
    ) as address:
        yield address


@pytest.mark.slow
def test_the_manifests_connect_server_builds_the_features_over_s3a(
    s3_server: S3Server, tmp_path: Path
) -> None:
    lake = new_spark_lake(s3_server)
    with manifest_connect_server(lake, tmp_path / "server") as address:
        env = step_environment(lake, tmp_path / "home", lake.jars_dir)
        env["MLOPS_SPARK_MASTER"] = address
        result = materialize_features(env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "(master remote)" in result.stderr  # a Connect client session

    assert_spark_wrote_duckdbs_features(lake, tmp_path)
