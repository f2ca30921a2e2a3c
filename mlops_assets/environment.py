"""The one place that turns settings into the resources of an environment.

Assets never branch on the environment: they receive these resources. Today there is one
environment, ``local`` (embedded defaults, or any locations given through the settings); the
production set (S3, Postgres, MLflow server, Spark cluster) is added here.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from mlops_assets.features.engines import DuckDBFeatureEngine, FeatureEngine
from mlops_assets.resources.alerts import AlertSink
from mlops_assets.resources.kafka import KafkaCluster, SchemaRegistry
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.landing import LandingZone
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.optuna_storage import OptunaStorage
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.settings import Settings


def build_resources(settings: Settings) -> dict[str, Any]:
    """Resources keyed by the names the assets ask for."""
    return {
        "landing": LandingZone(
            uri=settings.resolved_landing_uri, storage_options=settings.object_store_options
        ),
        "label_landing": LandingZone(
            uri=settings.resolved_labels_uri, storage_options=settings.object_store_options
        ),
        "lake": DeltaLake(
            root_uri=settings.resolved_lake_uri,
            compression=settings.lake_compression,
            batch_rows=settings.lake_batch_rows,
            storage_options=settings.object_store_options,
        ),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=settings.resolved_mlflow_tracking_uri,
            experiment_name=settings.mlflow_experiment,
            artifact_root=settings.resolved_mlflow_artifact_uri,
            ui_url=settings.mlflow_ui_url,
            dagster_ui_url=settings.dagster_ui_url,
        ),
        "feature_engine": build_feature_engine(settings),
        "policy": PipelinePolicy(
            paysim_epoch=settings.paysim_epoch.isoformat(),
            max_reject_share=settings.max_reject_share,
            drift_share_threshold=settings.drift_share_threshold,
            drift_max_rows=settings.drift_max_rows,
            drift_share_error=settings.drift_share_error,
            performance_warn_drop=settings.performance_warn_drop,
            performance_error_drop=settings.performance_error_drop,
            min_label_coverage=settings.min_label_coverage,
            segment_recall_drop=settings.segment_recall_drop,
            segment_min_fraud_rows=settings.segment_min_fraud_rows,
            segment_amount_bands=settings.segment_amount_bands,
            retrain_drift_days=settings.retrain_drift_days,
            model_name=settings.model_name,
            model_alias=settings.model_alias,
            landing_settle_seconds=settings.landing_settle_seconds,
            stream_settle_seconds=settings.stream_settle_seconds,
            stream_sensor_days=settings.stream_sensor_days,
            gate_metric=settings.gate_metric,
            gate_margin=settings.gate_margin,
            gate_min_pr_auc=settings.gate_min_pr_auc,
            gate_min_roc_auc=settings.gate_min_roc_auc,
            target_precision=settings.target_precision,
            explain_method=settings.explain_method,
            training_memory_budget_mb=settings.training_memory_budget_mb,
        ),
        # a Postgres URL holds the password: by reference, like the webhook
        "optuna_storage": OptunaStorage(
            url=_secret("MLOPS_OPTUNA_STORAGE_URI", settings.resolved_optuna_storage_uri)
        ),
        "alerts": AlertSink(
            webhook_url=_secret("MLOPS_ALERT_WEBHOOK_URL", settings.alert_webhook_url),
            timeout_seconds=settings.alert_timeout_seconds,
            retries=settings.alert_retries,
            backoff_seconds=settings.alert_backoff_seconds,
            max_seconds_per_alert=settings.alert_max_seconds,
        ),
        "kafka": build_kafka(settings),
        "schema_registry": SchemaRegistry(
            url=settings.schema_registry_url,
            username=settings.schema_registry_username,
            password_file=settings.schema_registry_password_file,
            ca_file=settings.schema_registry_ca_file,
            compatibility=settings.schema_compatibility,
        ),
    }


def build_kafka(settings: Settings) -> KafkaCluster:
    """The Kafka cluster of the streaming path (secrets by file reference only)."""
    return KafkaCluster(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        security_protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password_file=settings.kafka_sasl_password_file,
        ssl_ca_file=settings.kafka_ssl_ca_file,
        ssl_certificate_file=settings.kafka_ssl_certificate_file,
        ssl_key_file=settings.kafka_ssl_key_file,
        ssl_key_password_file=settings.kafka_ssl_key_password_file,
        transactions_topic=settings.kafka_transactions_topic,
        dead_letter_topic=settings.kafka_dead_letter_topic,
        decisions_topic=settings.kafka_decisions_topic,
        ingest_group=settings.kafka_ingest_group,
        scorer_group=settings.kafka_scorer_group,
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication=settings.kafka_topic_replication,
        session_timeout_ms=settings.kafka_session_timeout_ms,
    )


def _secret(variable: str, value: str | None) -> Any:
    """A secret setting as a ``dg.EnvVar`` when it came from the environment, so the Dagster UI
    shows the variable's name and never its value."""
    if value and os.environ.get(variable) == value:
        return dg.EnvVar(variable)
    return value


def spark_config(settings: Settings) -> dict[str, str]:
    """Spark configuration for the settings: master or Connect address, Delta, local tuning,
    and S3A (``spark.hadoop.fs.s3a.*``, its jars) only when the lake is on S3."""
    from mlops_assets.resources.spark_jars import cached_jars, delta_package
    from mlops_assets.resources.spark_s3 import on_s3, s3a_spark_config

    if settings.spark_master.startswith("sc://"):
        # a Connect server owns its static configuration (Delta extension, jars, UI)
        return {
            "spark.remote": settings.spark_master,
            "spark.sql.session.timeZone": "UTC",
            **settings.spark_conf,
        }
    config = {
        "spark.app.name": "mlops_assets",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
    }
    config["spark.master"] = settings.spark_master
    jars = cached_jars(settings.spark_jars_dir)
    if jars:
        config["spark.jars"] = ",".join(str(jar) for jar in jars)
    else:
        config["spark.jars.packages"] = delta_package()
    if settings.spark_master.startswith("local"):
        # small local jobs: few shuffle partitions and a small Delta log replay
        config["spark.sql.shuffle.partitions"] = "4"
        config["spark.databricks.delta.snapshotPartitions"] = "2"
        config["spark.ui.enabled"] = "false"
        config["spark.driver.memory"] = "4g"
    if on_s3(settings.resolved_lake_uri):
        config.update(s3a_spark_config(settings))
    config.update(settings.spark_conf)
    return config


def build_feature_engine(settings: Settings) -> FeatureEngine:
    """The feature engine the settings ask for (DuckDB by default)."""
    if settings.feature_engine == "spark":
        from dagster_pyspark import LazyPySparkResource

        from mlops_assets.features.spark_engine import SparkFeatureEngine

        return SparkFeatureEngine(
            pyspark=LazyPySparkResource(spark_config=spark_config(settings)),
            jars_dir=settings.spark_jars_dir,
        )
    return DuckDBFeatureEngine()
