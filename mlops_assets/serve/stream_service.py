"""The streaming scorer as the settings describe it (``mlops-assets score-stream``): the model
behind the alias (polled, so a new champion takes over without a restart), the rolling history
from the latest validated days, the prediction log, the metrics endpoint."""

from __future__ import annotations

import logging
from typing import Any

from mlops_assets.settings import Settings

log = logging.getLogger(__name__)


def build_scorer(settings: Settings, resources: dict[str, Any] | None = None) -> Any:
    from mlops_assets.environment import build_resources
    from mlops_assets.features.online_engine import prepare
    from mlops_assets.features.rolling_history import RollingHistory
    from mlops_assets.registry.champion import load_scorer
    from mlops_assets.serve.model_holder import ModelHolder
    from mlops_assets.serve.prediction_log import PredictionLog
    from mlops_assets.serve.stream_scorer import StreamScorer, load_history_table
    from mlops_assets.stream.codec import subject_for
    from mlops_assets.stream.setup import decision_codec, transaction_codec
    from mlops_assets.tables import SERVED_PREDICTIONS

    resources = resources or build_resources(settings)
    kafka, registry, lake = resources["kafka"], resources["schema_registry"], resources["lake"]
    prepare()
    history = RollingHistory()
    history.append(load_history_table(lake, settings.serve_history_days))
    decisions = decision_codec(registry)
    prediction_log = (
        PredictionLog(
            lake.appender(SERVED_PREDICTIONS, settings.serve_log_compact_every),
            flush_rows=settings.serve_log_flush_rows,
            flush_seconds=settings.stream_log_flush_seconds,
            max_pending_rows=settings.serve_log_max_pending_rows,
        )
        if settings.serve_log_predictions
        else None
    )
    instance = settings.kafka_group_instance_id
    return StreamScorer(
        consumer_factory=lambda: kafka.consumer(
            kafka.scorer_group, instance_id=f"{instance}.scorer" if instance else None
        ),
        codec=transaction_codec(registry),
        decisions=decisions.register(subject_for(kafka.decisions_topic)),
        decision_codec=decisions,
        producer=kafka.producer(**{"linger.ms": 0}),
        holder=ModelHolder(
            resources["mlflow_tracking"].client,
            settings.model_name,
            settings.model_alias,
            loader=lambda model: load_scorer(model, threads=1),
        ),
        topic=kafka.transactions_topic,
        decisions_topic=kafka.decisions_topic,
        first_day=settings.partitions_start,
        history=history,
        prediction_log=prediction_log,
        max_wait_seconds=settings.stream_align_max_wait_ms / 1000.0,
    )


def run_scorer(settings: Settings, until_caught_up: bool = False, idle_seconds: float = 2.0) -> Any:
    """Run the streaming scorer until stopped (or caught up); the scorer."""
    from mlops_assets.serve.refresh import PeriodicRefresh
    from mlops_assets.stream.service import stop_on_signals

    scorer = build_scorer(settings)
    stop_on_signals(scorer.stop)
    if settings.stream_metrics_port:
        scorer.metrics.serve(settings.stream_metrics_port)
    refresher = (
        PeriodicRefresh(_reload(scorer), settings.serve_refresh_seconds)
        if settings.serve_refresh_seconds > 0
        else None
    )
    if scorer.prediction_log is not None:
        scorer.prediction_log.start()
    if refresher is not None:
        refresher.start()
    try:
        scorer.run(stop_when_caught_up=until_caught_up, idle_seconds=idle_seconds)
    finally:
        if refresher is not None:
            refresher.stop()
        if scorer.prediction_log is not None:
            scorer.prediction_log.stop()
    return scorer


def _reload(scorer: Any) -> Any:
    def reload() -> None:
        outcome = scorer.holder.reload()
        if outcome.changed:
            log.info(
                "scoring the stream with %s v%s (was v%s)",
                scorer.holder.name,
                outcome.version,
                outcome.previous_version,
            )
        elif not outcome.ok:
            log.error(
                "reload of %s@%s failed, v%s keeps scoring: %s",
                scorer.holder.name,
                scorer.holder.alias,
                outcome.previous_version,
                outcome.error,
            )

    return reload
