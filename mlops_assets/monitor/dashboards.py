"""The Grafana dashboards of the fraud model, defined once in Python and written as provisioned
JSON (``mlops-assets render-monitoring``): the model service (traffic, latency quantiles,
errors, model versions, score distribution, shadow, prediction log), the streaming path (lag,
throughput, decision latency), and the model's quality and the pipeline (drift share and PR-AUC
per day, label coverage, runs, freshness, sensors, backfills).

Every query names metrics the platform exports; the end-to-end monitoring test runs each one
against a real Prometheus and checks its metric names against the live ``/metrics``.
"""

from __future__ import annotations

from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(
    title: str,
    queries: list[tuple[str, str]],
    kind: str = "timeseries",
    unit: str = "short",
    description: str = "",
    instant: bool = False,
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "instant": instant,
                "range": not instant,
            }
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def _layout(panels: list[dict[str, Any]], width: int = 12, height: int = 8) -> list[dict[str, Any]]:
    for i, panel in enumerate(panels):
        panel["id"] = i + 1
        panel["gridPos"] = {"x": (i % 2) * width, "y": (i // 2) * height, "w": width, "h": height}
    return panels


def _dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["mlops-assets", "fraud"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": _layout(panels),
    }


PREDICT = 'job="model-service", endpoint=~"/predict|/predict/batch"'


def model_service() -> dict[str, Any]:
    return _dashboard(
        "mlops-model-service",
        "Fraud model: model service",
        [
            _panel(
                "Requests per second by endpoint and status",
                [
                    (
                        f"sum by (endpoint, status) (rate(mlops_serve_requests_total{{{PREDICT}}}[5m]))",
                        "{{endpoint}} {{status}}",
                    )
                ],
                unit="reqps",
            ),
            _panel(
                "POST /predict latency (p50, p95, p99)",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) (rate("
                        'mlops_serve_request_latency_seconds_bucket{job="model-service", '
                        'endpoint="/predict"}[5m])))',
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                unit="s",
                description="Alert ModelServiceHighLatency: p95 over 100 ms for 5 minutes.",
            ),
            _panel(
                "Error ratio (5xx) of predictions",
                [
                    (
                        f'sum(rate(mlops_serve_requests_total{{{PREDICT}, status=~"5.."}}[5m])) / '
                        f"sum(rate(mlops_serve_requests_total{{{PREDICT}}}[5m]))",
                        "5xx share",
                    )
                ],
                unit="percentunit",
                description="Alert ModelServiceErrorRate: over 1% for 5 minutes.",
            ),
            _panel(
                "Model versions served, per replica",
                [
                    (
                        'mlops_serve_model_version{job="model-service"}',
                        "{{instance}} {{alias}}",
                    ),
                    ('mlops_serve_model_loaded{job="model-service"}', "{{instance}} loaded"),
                ],
                description="0: no model loaded (alert ModelServiceNoModel).",
            ),
            _panel(
                "Fraud score distribution",
                [
                    (
                        'sum by (le) (increase(mlops_serve_fraud_score_bucket{job="model-service"}[15m]))',
                        "{{le}}",
                    )
                ],
                kind="bargauge",
                instant=True,
            ),
            _panel(
                "Decisions per second",
                [
                    (
                        'sum by (decision) (rate(mlops_serve_predictions_total{job="model-service"}[5m]))',
                        "{{decision}}",
                    )
                ],
                unit="ops",
            ),
            _panel(
                "Shadow disagreement ratio",
                [
                    (
                        'sum(rate(mlops_serve_shadow_disagreements_total{job="model-service"}[15m])) / '
                        'sum(rate(mlops_serve_shadow_rows_total{job="model-service", outcome="compared"}[15m]))',
                        "disagreements",
                    )
                ],
                unit="percentunit",
            ),
            _panel(
                "Canary: share of accounts, rows and rollbacks",
                [
                    ('max(mlops_serve_canary_share{job="model-service"})', "share"),
                    (
                        'sum by (outcome) (rate(mlops_serve_canary_rows_total{job="model-service"}[5m]))',
                        "rows {{outcome}}/s",
                    ),
                    (
                        'sum by (version, rule) (mlops_serve_canary_rollbacks_total{job="model-service"})',
                        "rolled back v{{version}} ({{rule}})",
                    ),
                ],
                description="The canary's share of origin accounts (0: none in traffic), the rows "
                "it decided or that fell back to the champion, and its rollbacks by SLO.",
            ),
            _panel(
                "Prediction log: rows written and dropped, pending",
                [
                    (
                        'sum by (outcome) (rate(mlops_serve_prediction_log_rows_total{job="model-service"}[5m]))',
                        "{{outcome}}/s",
                    ),
                    (
                        'sum(mlops_serve_prediction_log_pending_rows{job="model-service"})',
                        "pending",
                    ),
                ],
            ),
            _panel(
                "Replicas up",
                [('sum(up{job="model-service"})', "up")],
                kind="stat",
            ),
            _panel(
                "Requests per scoring pass",
                [
                    (
                        "histogram_quantile(0.95, sum by (le) (rate("
                        'mlops_serve_scoring_pass_requests_bucket{job="model-service"}[5m])))',
                        "p95",
                    )
                ],
            ),
        ],
    )


def streaming() -> dict[str, Any]:
    return _dashboard(
        "mlops-streaming",
        "Fraud model: streaming",
        [
            _panel(
                "Bronze ingestion lag (messages) by partition",
                [
                    (
                        'mlops_stream_consumer_lag_messages{job="bronze-ingestion"}',
                        "{{topic}}/{{partition}}",
                    )
                ],
                description="Alert StreamConsumerLagging: over 100,000 for 10 minutes.",
            ),
            _panel(
                "Messages into bronze per second, dead letters by kind",
                [
                    (
                        'sum(rate(mlops_stream_messages_total{job="bronze-ingestion"}[5m]))',
                        "messages/s",
                    ),
                    (
                        'sum by (kind) (rate(mlops_stream_dead_letters_total{job="bronze-ingestion"}[5m]))',
                        "dead letters {{kind}}",
                    ),
                ],
                unit="ops",
            ),
            _panel(
                "Bronze commit time (p95) and retries",
                [
                    (
                        "histogram_quantile(0.95, sum by (le) (rate("
                        'mlops_stream_batch_seconds_bucket{job="bronze-ingestion"}[5m])))',
                        "commit p95",
                    ),
                    (
                        'sum by (step) (rate(mlops_stream_retries_total{job="bronze-ingestion"}[5m]))',
                        "retries {{step}}",
                    ),
                ],
                unit="s",
            ),
            _panel(
                "Streaming decisions per second",
                [
                    (
                        'sum by (decision) (rate(mlops_stream_decisions_total{job="stream-scorer"}[5m]))',
                        "{{decision}}",
                    )
                ],
                unit="ops",
            ),
            _panel(
                "Decision latency (p50, p99)",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) (rate("
                        'mlops_stream_decision_latency_seconds_bucket{job="stream-scorer"}[5m])))',
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ],
                unit="s",
            ),
            _panel(
                "Transactions held for event-time order",
                [('sum(mlops_stream_held_transactions{job="stream-scorer"})', "held")],
            ),
        ],
    )


def quality_and_pipeline() -> dict[str, Any]:
    return _dashboard(
        "mlops-quality-pipeline",
        "Fraud model: quality and pipeline",
        [
            _panel(
                "Drift share per day",
                [
                    ('mlops_drift_share{job="mlops-exporter"}', "{{day}}"),
                    ('mlops_drift_share_warn_threshold{job="mlops-exporter"}', "warn"),
                    ('mlops_drift_share_error_threshold{job="mlops-exporter"}', "error"),
                ],
                kind="barchart",
                unit="percentunit",
                instant=True,
            ),
            _panel(
                "PR-AUC per labelled day",
                [('mlops_model_pr_auc{job="mlops-exporter"}', "{{day}} v{{model_version}}")],
                kind="barchart",
                instant=True,
            ),
            _panel(
                "Latest day: PR-AUC drop against the holdout, label coverage",
                [
                    ('mlops_model_pr_auc_drop_latest{job="mlops-exporter"}', "drop {{day}}"),
                    ('mlops_model_label_coverage_latest{job="mlops-exporter"}', "coverage {{day}}"),
                ],
                kind="stat",
                unit="percentunit",
            ),
            _panel(
                "Runs in the last 24 hours by job and status",
                [('mlops_pipeline_runs{job="mlops-exporter"}', "{{dagster_job}} {{status}}")],
                kind="bargauge",
                instant=True,
            ),
            _panel(
                "Jobs whose latest run failed",
                [
                    (
                        'mlops_pipeline_latest_run_failed{job="mlops-exporter"} == 1',
                        "{{dagster_job}} ({{reason}})",
                    )
                ],
                kind="stat",
            ),
            _panel(
                "Hours since each daily asset was materialized (fail at 36 h)",
                [
                    (
                        "(time() - mlops_asset_last_materialization_timestamp_seconds"
                        '{job="mlops-exporter"}) / 3600',
                        "{{asset}}",
                    )
                ],
                kind="bargauge",
                unit="h",
            ),
            _panel(
                "Seconds since each sensor's last tick",
                [
                    (
                        'time() - mlops_sensor_last_tick_timestamp_seconds{job="mlops-exporter"}',
                        "{{sensor}}",
                    )
                ],
                kind="bargauge",
                unit="s",
            ),
            _panel(
                "Backfills in progress: minutes since progress",
                [
                    (
                        "(time() - mlops_backfill_last_progress_timestamp_seconds"
                        '{job="mlops-exporter"}) / 60',
                        "{{backfill}}",
                    )
                ],
                kind="bargauge",
                unit="m",
            ),
        ],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {
        "model-service.json": model_service(),
        "streaming.json": streaming(),
        "quality-and-pipeline.json": quality_and_pipeline(),
    }


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every query of a dashboard."""
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
