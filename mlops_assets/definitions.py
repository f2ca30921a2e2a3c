"""The mlops_assets code location: every asset, check and job, with the environment's resources."""

from __future__ import annotations

import warnings

import dagster as dg

from mlops_assets.deployment import executor_for
from mlops_assets.environment import build_resources
from mlops_assets.features.assets import transaction_features
from mlops_assets.ingest.assets import raw_transactions
from mlops_assets.ingest.label_assets import build_label_sensor, transaction_labels
from mlops_assets.ingest.sensors import build_landing_sensor
from mlops_assets.ingest.stream_sensor import build_stream_sensor, transaction_stream
from mlops_assets.monitor.ab_report_assets import model_ab_report
from mlops_assets.monitor.assets import drift_report
from mlops_assets.monitor.performance_assets import model_performance
from mlops_assets.monitor.retrain_sensor import build_retrain_sensor
from mlops_assets.monitor.sensors import build_run_failure_alert_sensor
from mlops_assets.partitions import daily_partitions
from mlops_assets.registry.assets import challenger_model, champion_model
from mlops_assets.registry.canary_assets import (
    build_canary_sensor,
    canary_promotion_job,
    canary_release,
)
from mlops_assets.score.assets import scored_transactions
from mlops_assets.score.explanations import fraud_explanations
from mlops_assets.serve.log_assets import served_predictions
from mlops_assets.settings import load_settings
from mlops_assets.train.assets import CANDIDATE_ASSETS, TUNING_ASSETS, training_set
from mlops_assets.validate.assets import validated_transactions

ALL_ASSETS = [
    transaction_stream,
    raw_transactions,
    validated_transactions,
    transaction_features,
    training_set,
    *TUNING_ASSETS,
    *CANDIDATE_ASSETS,
    challenger_model,
    champion_model,
    canary_release,
    scored_transactions,
    fraud_explanations,
    drift_report,
    transaction_labels,
    model_performance,
    model_ab_report,
    served_predictions,
]

# who answers for each stage (the UI's owner filter and each asset's page show it)
OWNERS = {
    "ingest": "team:data-platform",
    "validate": "team:data-platform",
    "features": "team:data-platform",
    "train": "team:ml-engineering",
    "registry": "team:ml-engineering",
    "serve": "team:ml-engineering",
    "score": "team:fraud-analytics",
    "monitor": "team:fraud-analytics",
}


def _for_the_ui(assets: list) -> list:
    """The assets with their stage's owner and a link to the code that defines them (local file
    references: the checkout has no remote to link to)."""
    owned = dg.map_asset_specs(
        lambda spec: spec.replace_attributes(owners=[*spec.owners, OWNERS[spec.group_name]]),
        assets,
    )
    with warnings.catch_warnings():  # code references are beta: not a warning per load
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.with_source_code_references(owned))


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(
        raw_transactions, validated_transactions, transaction_features
    ),
    description="Land, validate and featurize one day.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets(
        training_set, *TUNING_ASSETS, *CANDIDATE_ASSETS, challenger_model, champion_model
    ),
    description="The model factory: pin a training set, tune and train every model family, "
    "register the candidates, gate the best against the champion and promote it if it passes.",
)
daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline_job",
    selection=dg.AssetSelection.assets(
        raw_transactions,
        validated_transactions,
        transaction_features,
        scored_transactions,
        drift_report,
    ),
    partitions_def=daily_partitions,
    description="The whole partitioned graph for one day (or a range): land, validate, "
    "featurize, score and report drift.",
)
daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline_job,
    name="daily_pipeline_schedule",
    hour_of_day=3,
    description="Every day at 03:00 UTC, rebuild yesterday's partitions (a safety net for the "
    "landing sensor; starts stopped).",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.assets(transaction_labels, model_performance),
    partitions_def=daily_partitions,
    description="Load a transaction day's late labels and measure how its scoring model did.",
)
served_predictions_job = dg.define_asset_job(
    "served_predictions_job",
    selection=dg.AssetSelection.assets(served_predictions),
    partitions_def=daily_partitions,
    description="Compact a day of the model service's prediction log and report it.",
)
scoring_job = dg.define_asset_job(
    "scoring_job",
    selection=dg.AssetSelection.assets(scored_transactions, drift_report),
    description="Score one day with the champion and report its drift.",
)


def build_definitions() -> dg.Definitions:
    """Definitions for the environment the settings describe."""
    settings = load_settings()
    sensor_status = (
        dg.DefaultSensorStatus.RUNNING
        if settings.automation_enabled
        else dg.DefaultSensorStatus.STOPPED
    )
    refresh_downstream_days = dg.AutomationConditionSensorDefinition(
        "refresh_downstream_days",
        target=dg.AssetSelection.all(),
        default_status=sensor_status,
        minimum_interval_seconds=30,
        description="Evaluates the assets' automation conditions: a changed day upstream "
        "refreshes that day's validated rows, features, scores and drift report.",
    )
    served_predictions_schedule = dg.build_schedule_from_partitioned_job(
        served_predictions_job,
        name="served_predictions_schedule",
        hour_of_day=1,
        minute_of_hour=30,
        description="Every day at 01:30 UTC, compact yesterday's served predictions (the model "
        "service's micro-batches) and report them.",
        default_status=dg.DefaultScheduleStatus.RUNNING
        if settings.automation_enabled
        else dg.DefaultScheduleStatus.STOPPED,
    )
    return dg.Definitions(
        assets=_for_the_ui(ALL_ASSETS),
        jobs=[
            ingest_job,
            training_job,
            scoring_job,
            monitoring_job,
            daily_pipeline_job,
            served_predictions_job,
            canary_promotion_job,
        ],
        schedules=[daily_pipeline_schedule, served_predictions_schedule],
        sensors=[
            build_landing_sensor(settings.automation_enabled),
            build_stream_sensor(settings.automation_enabled),
            build_label_sensor(settings.automation_enabled),
            build_retrain_sensor(settings.automation_enabled),
            build_canary_sensor(settings.automation_enabled),
            build_run_failure_alert_sensor(sensor_status),
            refresh_downstream_days,
        ],
        resources=build_resources(settings),
        executor=executor_for(settings),
    )


defs = build_definitions()
