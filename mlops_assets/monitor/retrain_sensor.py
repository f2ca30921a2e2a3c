"""The retraining trigger: a sensor that requests the model factory when the champion's drift
persists or its measured performance fails (see ``monitor/retrain.py`` for the rule)."""

from datetime import date

import dagster as dg

from mlops_assets.monitor.retrain import DayDrift, DayQuality, decide_retrain
from mlops_assets.registry.versions import CHAMPION, current_version
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy

#: how many of the latest reported days the sensor looks at
LOOKBACK_DAYS = 14


def _latest_per_day(instance: dg.DagsterInstance, key: str) -> dict[date, dict]:
    """Metadata of the latest materialization of each of the asset's latest partitions."""
    asset_key = dg.AssetKey(key)
    partitions = sorted(instance.get_materialized_partitions(asset_key))[-LOOKBACK_DAYS:]
    latest: dict[date, dict] = {}
    for partition in partitions:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
        ).records
        if records and records[0].asset_materialization is not None:
            metadata = records[0].asset_materialization.metadata
            latest[date.fromisoformat(partition)] = {k: v.value for k, v in metadata.items()}
    return latest


def retrain_sensor(
    context: dg.SensorEvaluationContext, mlflow_tracking: MlflowTracking, policy: PipelinePolicy
) -> dg.SensorResult | dg.SkipReason:
    champion = current_version(mlflow_tracking.client(), policy.model_name, CHAMPION)
    drift = [
        DayDrift(
            day,
            bool(m["dataset_drift"]),
            float(m["drift_share"]),
            str(m["reference_model_version"]),
        )
        for day, m in _latest_per_day(context.instance, "drift_report").items()
        if "reference_model_version" in m
    ]
    quality = [
        DayQuality(day, str(m["level"]), float(m["pr_auc"]), str(m["model_version"]))
        for day, m in _latest_per_day(context.instance, "model_performance").items()
        if "level" in m
    ]
    decision = decide_retrain(champion, drift, quality, policy.retrain_drift_days)
    if not decision.retrain:
        return dg.SkipReason(decision.reason)
    context.log.info(f"Requesting the model factory: {decision.reason}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=decision.run_key(str(champion)),
                tags={"mlops/retrain_reason": decision.reason[:1000]},
            )
        ]
    )


def build_retrain_sensor(running: bool = True) -> dg.SensorDefinition:
    """The retraining trigger, started by default unless ``running`` is False."""
    return dg.sensor(
        name="retrain_on_drift_or_decay",
        job_name="training_job",
        minimum_interval_seconds=300,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description="Requests training_job (the latest window, so it includes the recent days; "
        "the gate decides) when drift against the champion persists MLOPS_RETRAIN_DRIFT_DAYS "
        "consecutive days or the champion's latest judged day is at the error level. One "
        "request per champion and evidence day (run key).",
    )(retrain_sensor)
