"""The landing sensor: one ``raw_transactions`` run per new or changed file, for its day."""

import json
import time
from datetime import date

import dagster as dg

from mlops_assets.ingest.assets import SOURCE_DIGESTS, raw_transactions
from mlops_assets.ingest.landing_scan import DayRequest, ScanResult, load_cursor, scan
from mlops_assets.partitions import daily_partitions
from mlops_assets.resources.landing import LandingFile, LandingZone
from mlops_assets.resources.policy import PipelinePolicy

RAW = dg.AssetKey("raw_transactions")


def already_loaded(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, request: DayRequest
) -> bool:
    """True when the day's latest materialization of ``asset_key`` read this exact file
    content (its ``source_digests`` metadata holds the file's digest)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[request.day.isoformat()]),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return False
    digests = records[0].asset_materialization.metadata.get(SOURCE_DIGESTS)
    return digests is not None and digests.value.get(request.uri) == request.digest


def scan_zone(
    context: dg.SensorEvaluationContext,
    zone: LandingZone,
    policy: PipelinePolicy,
    files: list[LandingFile] | None = None,
) -> ScanResult:
    """Scan a landing zone against the sensor's cursor; the scan's notes go to the sensor log."""
    first = date.fromisoformat(daily_partitions.get_first_partition_key())
    last_key = daily_partitions.get_last_partition_key()
    result = scan(
        files=zone.list_files() if files is None else files,
        previous=load_cursor(json.loads(context.cursor) if context.cursor else None),
        read=zone.read_bytes,
        now_ns=time.time_ns(),
        settle_seconds=policy.landing_settle_seconds,
        first_day=first,
        last_day=date.fromisoformat(last_key) if last_key else None,
        epoch=policy.epoch,
    )
    for note in result.notes:
        context.log.info(note)
    return result


def landing_sensor(
    context: dg.SensorEvaluationContext, landing: LandingZone, policy: PipelinePolicy
) -> dg.SensorResult:
    result = scan_zone(context, landing, policy)
    requests = []
    for request in result.requests:
        if already_loaded(context.instance, RAW, request):
            context.log.info(f"{request.uri}: already ingested for {request.day}")
            continue
        context.log.info(f"{request.uri}: requesting raw_transactions for {request.day}")
        requests.append(
            dg.RunRequest(
                run_key=request.run_key,
                partition_key=request.day.isoformat(),
                asset_selection=[RAW],
                tags={"mlops/landing_file": request.uri},
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(result.cursor()))


def build_landing_sensor(running: bool = True) -> dg.SensorDefinition:
    """The landing sensor, started by default unless ``running`` is False."""
    return dg.sensor(
        name="landing_sensor",
        target=[raw_transactions],
        minimum_interval_seconds=30,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description="Watches the landing zone and requests raw_transactions for the day of "
        "every new or changed file (run key: day, file and content hash). Downstream days "
        "refresh through their automation conditions.",
    )(landing_sensor)
