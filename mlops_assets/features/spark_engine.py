"""The Spark feature engine: the same SQL on a Spark session from dagster-pyspark, with Delta
tables read and written by delta-spark (``replaceWhere`` on the days' range)."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import dagster as dg
import pyarrow.compute as pc
from dagster_pyspark import LazyPySparkResource
from pydantic import Field, PrivateAttr

from mlops_assets.features.definition import feature_sql, lookback_days
from mlops_assets.features.engines import FeatureBuild, FeatureEngine, require_days
from mlops_assets.resources.lake import DeltaLake, PartitionWrite
from mlops_assets.resources.spark_s3 import is_missing_s3a, missing_s3a_message, spark_path
from mlops_assets.tables import PARTITION_COLUMN, TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS


def spark_table_schema(schema: Any) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name=f.name, type=f.dataType.simpleString()) for f in schema]
    )


class SparkFeatureEngine(FeatureEngine):
    """Spark (``local[*]``, a ``spark://``/``k8s://`` master or Spark Connect ``sc://``).

    The session comes from dagster-pyspark's lazy resource: it starts on first use in a step
    process and is shared by every asset of that step; its start-up time is logged.
    """

    pyspark: LazyPySparkResource
    jars_dir: str = Field(
        "~/.cache/mlops_assets/spark-jars", description="Cache of the Spark jars (for errors)."
    )
    _started: bool = PrivateAttr(default=False)

    @property
    def name(self) -> str:
        return "spark"

    def session(self, log: Any) -> Any:
        """The step's Spark session (started on first use, with its start-up time logged)."""
        if self._started:
            return self.pyspark.spark_session
        began = time.perf_counter()
        spark = self.pyspark.spark_session
        self._started = True
        log.info(
            f"Spark session {spark.version} ready in {time.perf_counter() - began:.1f}s "
            f"(master {self.pyspark.spark_config.get('spark.master') or 'remote'})"
        )
        return spark

    def build(
        self, context: dg.AssetExecutionContext, lake: DeltaLake, first: date, last: date
    ) -> FeatureBuild:
        spark = self.session(context.log)
        # the Delta logs are read with delta-rs: no Spark job is spent on bookkeeping
        validated_version = lake.version(VALIDATED_TRANSACTIONS)
        days = lookback_days(first, last)
        require_days(set(lake.days(VALIDATED_TRANSACTIONS)), first, last, context.log)
        try:
            schema = self._write_features(spark, lake, validated_version, first, last)
        except Exception as error:
            if is_missing_s3a(error):
                raise dg.Failure(missing_s3a_message(self.jars_dir)) from error
            raise
        commit = lake.history(TRANSACTION_FEATURES, limit=1)[0]
        labels = lake.read(
            TRANSACTION_FEATURES, days=days[1:], columns=["isFraud"], version=commit["version"]
        ).column("isFraud")
        rows = len(labels)
        return FeatureBuild(
            write=PartitionWrite(
                table_uri=lake.table_uri(TRANSACTION_FEATURES),
                version=int(commit["version"]),
                rows=rows,
                operation_metrics=dict(commit.get("operationMetrics", {})),
            ),
            schema=schema,
            fraud_rate=float(pc.sum(labels).as_py() or 0) / rows if rows else 0.0,
            validated_version=validated_version,
            engine=self.name,
        )

    @staticmethod
    def _write_features(
        spark: Any, lake: DeltaLake, validated_version: int | None, first: date, last: date
    ) -> dg.TableSchema:
        """Read the validated days (and the look-back day) at ``validated_version``, run the
        feature SQL and replace exactly the days ``first``..``last`` of the features table."""
        from pyspark.sql import functions as F

        days = lookback_days(first, last)
        validated = (
            spark.read.format("delta")
            .option("versionAsOf", validated_version)
            .load(spark_path(lake.table_uri(VALIDATED_TRANSACTIONS)))
            .where(F.col(PARTITION_COLUMN).between(days[0], days[-1]))
        )
        validated.withColumn(
            "event_seconds", F.col("timestamp").cast("long")
        ).createOrReplaceTempView("transactions")
        features = spark.sql(feature_sql(first, last))
        (
            features.write.format("delta")
            .mode("overwrite")
            .option(
                "replaceWhere",
                f"{PARTITION_COLUMN} >= '{first.isoformat()}' AND "
                f"{PARTITION_COLUMN} <= '{last.isoformat()}'",
            )
            .option("mergeSchema", "true")
            .partitionBy(PARTITION_COLUMN)
            .save(spark_path(lake.table_uri(TRANSACTION_FEATURES)))
        )
        return spark_table_schema(features.schema)
