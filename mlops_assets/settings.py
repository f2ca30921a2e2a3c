"""Typed settings read from environment variables, with the embedded (laptop) defaults.

Every location and service the platform uses is a setting here. With no environment variable
set, everything lives under one project-local directory (``./.mlops``): the landing zone, the
Delta lake, the MLflow store and the Dagster instance. See the README for the full list.
"""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["text", "json"]

Compatibility = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"
]


def _is_uri(location: str) -> bool:
    return "://" in location


class Settings(BaseSettings):
    """Platform settings; each field is read from ``MLOPS_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore", frozen=True)

    home: str = Field(".mlops", description="Project-local root of every embedded default.")
    environment: str = Field("local", description="Which resource set to build: 'local'.")
    landing_uri: str | None = Field(None, description="Landing zone; default <home>/landing.")
    lake_uri: str | None = Field(None, description="Root of the Delta lake; default <home>/lake.")
    labels_uri: str | None = Field(
        None, description="Landing zone of the late label deliveries; default <home>/labels."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, LocalStack, moto); none: AWS itself."
    )
    s3_region: str | None = Field(
        None, description="Region of the buckets; none: AWS_REGION or the SDK's default."
    )
    s3_allow_http: bool = Field(False, description="Allow a plain-HTTP S3 endpoint (tests only).")
    lake_compression: Literal["LZ4_RAW", "SNAPPY", "ZSTD", "UNCOMPRESSED"] = Field(
        "LZ4_RAW", description="Parquet codec of the Delta files the platform writes."
    )
    lake_batch_rows: int = Field(
        1_000_000,
        gt=0,
        description="Rows a run over a range of days (a backfill) reads, checks and writes per "
        "Delta commit: memory stays bounded and a year of days is a few commits per table.",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking store; default sqlite:///<home>/mlflow/mlflow.db."
    )
    mlflow_artifact_uri: str | None = Field(
        None,
        description="Artifact root for new MLflow experiments; default <home>/mlflow/artifacts.",
    )
    mlflow_experiment: str = "fraud-detection"
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000", description="Base URL of the MLflow UI, for links in Dagster."
    )
    dagster_ui_url: str = Field(
        "http://127.0.0.1:3000", description="Base URL of the Dagster UI, for links from MLflow."
    )
    model_name: str = Field("fraud_detector", description="Registered model name in MLflow.")
    model_alias: str = Field("champion", description="Alias that batch scoring loads.")
    optuna_storage_uri: str | None = Field(
        None,
        repr=False,  # holds the database password in production: never in a repr or a log
        description="Optuna study storage (SQLAlchemy URL); default sqlite:///<home>/optuna/"
        "optuna.db, e.g. postgresql+psycopg2://user:pass@host/optuna in production.",
    )
    gate_metric: Literal["pr_auc", "roc_auc", "recall_at_precision", "f1"] = Field(
        "pr_auc", description="Holdout metric on which a challenger must beat the champion."
    )
    gate_margin: float = Field(
        0.005, ge=0.0, description="How much better than the champion the challenger must be."
    )
    gate_min_pr_auc: float = Field(
        0.2, ge=0.0, le=1.0, description="Holdout PR-AUC below which no model is promoted."
    )
    gate_min_roc_auc: float = Field(
        0.8, ge=0.0, le=1.0, description="Holdout ROC-AUC below which no model is promoted."
    )
    target_precision: float = Field(
        0.9, gt=0.0, le=1.0, description="Precision at which recall_at_precision is measured."
    )
    training_memory_budget_mb: float = Field(
        2048.0,
        ge=0.0,
        description="Memory budget of a candidate's fit (MB): when the in-memory fit of the "
        "fit rows is estimated to need more, XGBoost trains from an external-memory iterator "
        "over the Delta partitions instead of one in-memory frame (0: always).",
    )
    partitions_start: date = Field(date(2026, 1, 1), description="First daily partition (UTC).")
    paysim_epoch: date = Field(
        date(2026, 1, 1), description="Date of PaySim step 1 (hour 00:00 UTC) for undated files."
    )
    max_reject_share: float = Field(
        0.05, ge=0.0, le=1.0, description="Reject share above which the contract check fails."
    )
    drift_share_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="Share of drifted columns that flags a day as drifted."
    )
    drift_max_rows: int = Field(50_000, gt=0, description="Rows sampled per side for drift.")
    drift_share_error: float = Field(
        0.8, gt=0.0, le=1.0, description="Share of drifted columns at which the check errors."
    )
    performance_warn_drop: float = Field(
        0.2, ge=0.0, le=1.0, description="Relative PR-AUC drop (vs holdout) that warns."
    )
    performance_error_drop: float = Field(
        0.4, ge=0.0, le=1.0, description="Relative PR-AUC drop (vs holdout) that errors."
    )
    segment_recall_drop: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="A segment (transaction type, amount band) whose recall is this far below "
        "the day's overall recall (absolute) fails segment_recall_within_threshold.",
    )
    segment_min_fraud_rows: int = Field(
        20, ge=1, description="Fraud labels a segment needs before its recall is judged."
    )
    segment_amount_bands: list[float] = Field(
        default_factory=lambda: [1_000.0, 10_000.0, 100_000.0, 1_000_000.0],
        description="Upper bounds of model_performance's amount bands, increasing (JSON list; "
        "the last band is open).",
    )

    @field_validator("segment_amount_bands")
    @classmethod
    def _increasing_bands(cls, value: list[float]) -> list[float]:
        if not value or value[0] <= 0 or sorted(set(value)) != value:
            raise ValueError(
                "MLOPS_SEGMENT_AMOUNT_BANDS must be positive upper bounds in increasing order, "
                f"e.g. [1000, 10000, 100000, 1000000]; got {value}"
            )
        return value

    min_label_coverage: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of a day's scored transactions that should have a label once "
        "model_performance runs; below it the quality figures are thin (alert LabelCoverageLow).",
    )
    log_format: LogFormat = Field(
        "text",
        description="Log lines of the platform's processes and of Dagster runs' console: text, or "
        "json (one object per line with request id, model version, run, asset, partition).",
    )
    exporter_host: str = Field("127.0.0.1", description="Address `mlops-assets exporter` uses.")
    exporter_port: int = Field(9110, gt=0, description="Port of `mlops-assets exporter`.")
    exporter_refresh_seconds: float = Field(
        15.0,
        gt=0,
        description="The exporter reads the Dagster instance at most this often (scrapes in "
        "between get the last reading).",
    )
    exporter_days: int = Field(
        30, gt=0, description="Days of drift share and PR-AUC the exporter lists per day."
    )
    alert_webhook_url: str | None = Field(
        None,
        repr=False,  # the URL is the credential: never in a repr or a log
        description="Slack-compatible incoming webhook for alerts; none: alerts are only logged.",
    )
    alert_timeout_seconds: float = Field(5.0, gt=0, description="Timeout of one alert POST.")
    alert_retries: int = Field(3, ge=0, description="Retries of an alert that was not delivered.")
    alert_backoff_seconds: float = Field(
        0.5, ge=0, description="First wait between alert retries (doubles each time)."
    )
    alert_max_seconds: float = Field(
        10.0, gt=0, description="Time limit of one alert's delivery, retries included."
    )
    retrain_drift_days: int = Field(
        2, ge=1, description="Consecutive drifted days (vs the champion) that trigger retraining."
    )
    landing_settle_seconds: float = Field(
        10.0, ge=0, description="A landing file must be unmodified this long before it is read."
    )
    automation_enabled: bool = Field(
        True,
        description="Start the landing sensor and the automation sensor running by default.",
    )
    serve_max_batch_size: int = Field(
        1000, gt=0, description="Most transactions in one /predict/batch request."
    )
    serve_max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest request body the model service reads (413 above)."
    )
    serve_history_days: int = Field(
        2, ge=1, description="Latest validated days the service holds as account history."
    )
    serve_refresh_seconds: float = Field(
        60.0,
        ge=0,
        description="How often the model service polls the alias and the validated table "
        "(0: only on POST /reload).",
    )
    serve_log_predictions: bool = Field(
        True, description="Append every served prediction to the served_predictions table."
    )
    serve_log_flush_seconds: float = Field(
        5.0, gt=0, description="Longest wait before the prediction log writes a micro-batch."
    )
    serve_log_flush_rows: int = Field(
        5000, gt=0, description="Predictions that make the prediction log write at once."
    )
    serve_log_compact_every: int = Field(
        50,
        ge=0,
        description="Prediction-log writes to one day after which the service compacts that "
        "day's files (0: never; the nightly served_predictions schedule still does).",
    )
    serve_log_max_pending_rows: int = Field(
        100_000,
        gt=0,
        description="Unwritten predictions kept while the lake is unreachable (oldest dropped "
        "beyond).",
    )
    serve_shadow: bool = Field(
        False,
        description="Shadow mode: the shadow alias also scores every request, off the request "
        "path, and its scores are logged beside the champion's.",
    )
    serve_shadow_alias: str = Field(
        "challenger", description="Alias of the model that scores in shadow mode."
    )
    serve_runtime: Literal["native", "onnx"] = Field(
        "native",
        description="What the model service scores with: native (the family's own library) or "
        "onnx (onnxruntime over the version's ONNX copy, served only when it passed the "
        "onnx_matches_native parity check).",
    )
    explain_method: Literal["treeshap", "saabas"] = Field(
        "treeshap",
        description="How XGBoost decisions are explained, online (explain=true) and in "
        "fraud_explanations: treeshap (exact Shapley values) or saabas (XGBoost's approximate "
        "contributions, cheaper: 0.76 against 1.07 ms for one row of the benchmark's model, "
        "a tenth for deep forests); the MLP's are integrated gradients.",
    )
    serve_canary: bool = Field(
        True,
        description="Route a share of origin accounts to the version behind the canary alias "
        "while that alias exists, and roll it back on a broken SLO.",
    )
    serve_canary_alias: str = Field("canary", description="Alias of the canary model version.")
    serve_canary_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Share of accounts the canary decides when its version has no canary.share "
        "tag (canary_release sets one).",
    )
    serve_canary_max_error_rate: float = Field(
        0.01, ge=0, lt=1, description="Canary SLO: most failed canary model calls (share)."
    )
    serve_canary_max_latency_ratio: float = Field(
        2.0, ge=1, description="Canary SLO: most canary p99 model time, in champion p99s."
    )
    serve_canary_max_score_shift: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Canary SLO: largest KS statistic between canary and champion scores.",
    )
    serve_canary_max_flagged_jump: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Canary SLO: most extra share of transactions the canary may flag.",
    )
    serve_canary_hold_seconds: float = Field(
        3600.0, ge=0, description="A canary that keeps its SLOs this long is held (promotable)."
    )
    serve_canary_hold_rows: int = Field(
        5000, ge=0, description="Rows the canary must decide before it can be held."
    )
    serve_auth: Literal["keys", "jwt", "keys+jwt", "off"] = Field(
        "keys",
        description="Who may call the model service: API keys, JWTs of an issuer, both, or "
        "off (anyone; logged as a warning).",
    )
    serve_api_keys_file: str | None = Field(
        None,
        description="File of API keys ('<client> <roles> <key>' per line), e.g. a mounted "
        "Secret; none and no MLOPS_SERVE_API_KEYS_ENV: a generated local key under the home.",
    )
    serve_api_keys_env: str | None = Field(
        None, description="Name of an environment variable holding the API key lines instead."
    )
    serve_jwt_jwks_url: str | None = Field(None, description="JWKS URL of the token issuer.")
    serve_jwt_issuer: str | None = Field(None, description="Expected `iss` of the tokens.")
    serve_jwt_audience: str | None = Field(None, description="Expected `aud` of the tokens.")
    serve_jwt_roles_claim: str = Field(
        "roles", description="Claim with the caller's roles (a list, or a space-separated scope)."
    )
    serve_metrics_auth: bool = Field(
        False, description="Require the metrics role for /metrics (default: open to scrapes)."
    )
    serve_rate_limit: str = Field(
        "300/second",
        description="Requests per authenticated client on the scoring and admin paths "
        "(429 with Retry-After beyond; empty: none).",
    )
    serve_failed_auth_limit: str = Field(
        "30/minute", description="Requests with bad credentials per client address (then 429)."
    )
    serve_request_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest a request waits for its scoring pass (503 beyond)."
    )
    serve_host: str = Field("127.0.0.1", description="Address `mlops-assets serve` listens on.")
    serve_port: int = Field(8080, gt=0, description="Port `mlops-assets serve` listens on.")
    feature_engine: Literal["duckdb", "spark"] = Field(
        "duckdb", description="Engine that runs the feature SQL: duckdb or spark."
    )
    spark_master: str = Field(
        "local[*]",
        description="Spark master URL (local[*], spark://..., k8s://...) or a Spark Connect "
        "address (sc://host:15002).",
    )
    spark_jars_dir: str = Field(
        "~/.cache/mlops_assets/spark-jars",
        description="Cache of the Spark jars fetched with Maven (delta-spark; hadoop-aws and the "
        "AWS SDK for s3a); when empty Spark "
        "resolves them itself (spark.jars.packages).",
    )
    executor: Literal["multiprocess", "in_process", "k8s"] = Field(
        "multiprocess",
        description="multiprocess (Dagster's default), in_process, or k8s: one Kubernetes Job "
        "per step (k8s_job_executor).",
    )
    k8s_namespace: str | None = Field(
        None, description="Namespace of the step Jobs; default: the run launcher's."
    )
    k8s_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Image pull policy of the step pods."
    )
    k8s_env_secrets: list[str] = Field(
        default_factory=lambda: ["mlops-assets-env"],
        description="Secrets whose keys become the step pods' environment (JSON list).",
    )
    k8s_env_config_maps: list[str] = Field(
        default_factory=list, description="ConfigMaps whose keys become the environment."
    )
    k8s_service_account: str | None = Field(None, description="Service account of step pods.")
    k8s_max_concurrent: int | None = Field(None, gt=0, description="Step pods per run at once.")
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='Extra Spark configuration as JSON, e.g. {"spark.driver.memory": "8g"}.',
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka brokers (host:port, comma-separated)."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to the brokers."
    )
    kafka_sasl_mechanism: str | None = Field(
        None, description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) with SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password_file: str | None = Field(
        None, description="File holding the SASL password (a mounted Secret; never logged)."
    )
    kafka_ssl_ca_file: str | None = Field(None, description="CA certificate(s) of the brokers.")
    kafka_ssl_certificate_file: str | None = Field(None, description="Client certificate (mTLS).")
    kafka_ssl_key_file: str | None = Field(None, description="Client private key (mTLS).")
    kafka_ssl_key_password_file: str | None = Field(
        None, description="File holding the client key's password."
    )
    kafka_transactions_topic: str = Field(
        "transactions", description="Topic the transactions arrive on (Avro)."
    )
    kafka_dead_letter_topic: str = Field(
        "transactions.dead-letter",
        description="Topic of the messages that could not be read or break the contract.",
    )
    kafka_decisions_topic: str = Field(
        "transaction-decisions", description="Topic the streaming scorer writes decisions to."
    )
    kafka_ingest_group: str = Field(
        "mlops-assets-bronze", description="Consumer group of the bronze ingestion."
    )
    kafka_scorer_group: str = Field(
        "mlops-assets-scorer", description="Consumer group of the streaming scorer."
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=6_000,
        description="How long the brokers wait for a silent consumer before giving its "
        "partitions to another (a crashed pod's partitions wait this long).",
    )
    kafka_group_instance_id: str | None = Field(
        None,
        description="Static group membership id of this consumer (e.g. a StatefulSet pod "
        "name): a restarted consumer takes its partitions back at once, without a rebalance.",
    )
    kafka_topic_partitions: int = Field(
        3, gt=0, description="Partitions of the topics the platform creates when missing."
    )
    kafka_topic_replication: int = Field(
        1, gt=0, description="Replication factor of the topics the platform creates."
    )
    kafka_jars_dir: str = Field(
        "~/.cache/mlops_assets/kafka-jars",
        description="Cache of the Kafka server jars for the local broker (demo, tests).",
    )
    schema_registry_url: str = Field(
        "http://127.0.0.1:8081/apis/ccompat/v7",
        description="Confluent-compatible schema registry API (Confluent, Apicurio's ccompat).",
    )
    schema_registry_username: str | None = Field(None, description="Registry basic-auth user.")
    schema_registry_password_file: str | None = Field(
        None, description="File holding the registry basic-auth password."
    )
    schema_registry_ca_file: str | None = Field(None, description="CA certificate of the registry.")
    schema_registry_dir: str = Field(
        "~/.cache/mlops_assets/schema-registry",
        description="Where the local schema registry (demo, tests) is built.",
    )
    schema_compatibility: Compatibility = Field(
        "BACKWARD", description="Compatibility rule set on the platform's subjects."
    )
    stream_batch_rows: int = Field(
        50_000, gt=0, description="Most messages the bronze ingestion writes in one Delta commit."
    )
    stream_batch_seconds: float = Field(
        1.0, gt=0, description="Longest wait before the bronze ingestion writes a micro-batch."
    )
    stream_compact_every: int = Field(
        50, ge=0, description="Bronze writes to one day after which its files are compacted."
    )
    stream_settle_seconds: float = Field(
        60.0,
        ge=0,
        description="A streamed day is loaded into raw_transactions once no message for it "
        "arrived for this long (later ones load it again).",
    )
    stream_sensor_days: int = Field(
        7, gt=0, description="Latest days the stream sensor watches for newly streamed rows."
    )
    stream_metrics_port: int = Field(
        0, ge=0, description="Port of the consumer's or scorer's /metrics (0: none)."
    )
    stream_log_flush_seconds: float = Field(
        1.0,
        gt=0,
        description="Longest wait before the streaming scorer's prediction log writes (small "
        "writes keep building a write from stalling decisions).",
    )
    stream_align_max_wait_ms: float = Field(
        5000.0,
        ge=0,
        description="How long a partition may deliver nothing, while not read to its end, "
        "before the scorer stops waiting for it (a partition without a leader).",
    )

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, value: str) -> str:
        if value not in {"local"}:
            raise ValueError(f"MLOPS_ENVIRONMENT must be 'local' (got {value!r})")
        return value

    def canary_slo(self) -> Any:
        """The canary SLOs of these settings (``serve/canary.py``'s ``CanarySlo``)."""
        from mlops_assets.serve.canary import CanarySlo

        return CanarySlo(
            max_error_rate=self.serve_canary_max_error_rate,
            max_latency_ratio=self.serve_canary_max_latency_ratio,
            max_score_shift=self.serve_canary_max_score_shift,
            max_flagged_jump=self.serve_canary_max_flagged_jump,
            hold_seconds=self.serve_canary_hold_seconds,
            hold_rows=self.serve_canary_hold_rows,
        )

    @cached_property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    def _under_home(self, value: str | None, *parts: str) -> str:
        if value:
            return value if _is_uri(value) else str(Path(value).expanduser().resolve())
        return str(self.home_path.joinpath(*parts))

    @property
    def resolved_landing_uri(self) -> str:
        return self._under_home(self.landing_uri, "landing")

    @property
    def resolved_lake_uri(self) -> str:
        return self._under_home(self.lake_uri, "lake")

    @property
    def object_store_options(self) -> dict[str, str]:
        """delta-rs / pyarrow storage options for s3:// locations. Credentials stay in the
        standard AWS_* environment (or the pod's IAM role), never in settings."""
        options: dict[str, str] = {}
        if self.s3_endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.s3_endpoint_url
        if self.s3_region:
            options["AWS_REGION"] = self.s3_region
        if self.s3_allow_http:
            options["AWS_ALLOW_HTTP"] = "true"
        return options

    @property
    def resolved_labels_uri(self) -> str:
        return self._under_home(self.labels_uri, "labels")

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.home_path / 'mlflow' / 'mlflow.db'}"

    @property
    def resolved_mlflow_artifact_uri(self) -> str:
        return self._under_home(self.mlflow_artifact_uri, "mlflow", "artifacts")

    @property
    def resolved_optuna_storage_uri(self) -> str:
        if self.optuna_storage_uri:
            return self.optuna_storage_uri
        return f"sqlite:///{self.home_path / 'optuna' / 'optuna.db'}"

    @property
    def dagster_home(self) -> Path:
        """The project-local DAGSTER_HOME used when none is set."""
        return self.home_path / "dagster"


def load_settings() -> Settings:
    """Read the settings from the environment (a fresh read each call)."""
    return Settings()
