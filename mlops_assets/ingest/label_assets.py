"""The ``transaction_labels`` asset and the label sensor: fraud labels delivered days later."""

import json
from datetime import UTC, datetime

import dagster as dg

from mlops_assets.ingest.delivery import DeliveryError, content_digest
from mlops_assets.ingest.labels import label_files_for, parse_labels
from mlops_assets.ingest.sensors import SOURCE_DIGESTS, already_loaded, scan_zone
from mlops_assets.partitions import daily_partitions, describe_days, partition_days
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.landing import LandingZone
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import TRANSACTION_LABELS

LABELS = dg.AssetKey("transaction_labels")


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingest",
    kinds={"delta", "polars", "silver"},
)
def transaction_labels(
    context: dg.AssetExecutionContext, label_landing: LandingZone, lake: DeltaLake
) -> dg.MaterializeResult:
    """Fraud labels of a transaction day, as delivered later (`labels_<day>.csv` in the labels
    landing zone: `transaction_id`, `isFraud`). Partitioned by the transactions' day, not by
    the delivery's, so `model_performance` of a day waits for this day's labels and never uses
    labels it could not have had. Fails, naming the file and line, on a malformed delivery."""
    import polars as pl

    files = label_landing.list_files()
    ingested_at = datetime.now(UTC)
    digests: dict[str, str] = {}
    per_day: dict[str, dict[str, int]] = {}
    writes = []
    for day in partition_days(context):
        day_files = label_files_for(day, files)
        if not day_files:
            raise dg.Failure(
                description=f"No label file for {day} under {label_landing.uri} yet (expected "
                f"labels_{day.isoformat()}.csv); labels arrive days after the transactions",
                allow_retries=False,
            )
        frames = []
        for file in day_files:
            content = label_landing.read_bytes(file)
            try:
                frames.append(
                    parse_labels(file, content).with_columns(pl.lit(file.uri).alias("_source_file"))
                )
            except DeliveryError as error:
                raise dg.Failure(description=str(error), allow_retries=False) from error
            digests[file.uri] = content_digest(content)
        labels = pl.concat(frames)
        repeated = labels.filter(pl.col("transaction_id").is_duplicated())
        if repeated.height:
            raise dg.Failure(
                description=f"{day}: {repeated.height} labels of the same transactions in "
                f"different files (e.g. {repeated['transaction_id'][0]})",
                allow_retries=False,
            )
        labels = labels.with_columns(pl.lit(ingested_at).alias("_labelled_at"))
        writes.append(lake.overwrite_day(TRANSACTION_LABELS, labels.to_arrow(), day))
        per_day[day.isoformat()] = {"rows": labels.height, "fraud": int(labels["isFraud"].sum())}
        context.log.info(
            f"{day}: {labels.height} labels ({per_day[day.isoformat()]['fraud']} fraud)"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(d["rows"] for d in per_day.values()),
            "delta_version": writes[-1].version,
            "days": describe_days(partition_days(context)),
            "labels_by_day": dg.MetadataValue.json(per_day),
            SOURCE_DIGESTS: dg.MetadataValue.json(digests),
        }
    )


def label_sensor(
    context: dg.SensorEvaluationContext, label_landing: LandingZone, policy: PipelinePolicy
) -> dg.SensorResult:
    files = [f for f in label_landing.list_files() if f.name.startswith("labels_")]
    result = scan_zone(context, label_landing, policy, files)
    requests = [
        dg.RunRequest(
            run_key=f"labels:{request.run_key}",
            partition_key=request.day.isoformat(),
            asset_selection=[LABELS],
            tags={"mlops/label_file": request.uri},
        )
        for request in result.requests
        if not already_loaded(context.instance, LABELS, request)
    ]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(result.cursor()))


def build_label_sensor(running: bool = True) -> dg.SensorDefinition:
    """The label sensor, started by default unless ``running`` is False."""
    return dg.sensor(
        name="label_sensor",
        target=[transaction_labels],
        minimum_interval_seconds=60,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description="Watches the labels landing zone and requests transaction_labels for the "
        "transaction day of every new or changed label file; model_performance follows through "
        "its automation condition.",
    )(label_sensor)
