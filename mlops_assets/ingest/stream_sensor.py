"""The transactions topic in Dagster: an external asset the stream sensor observes, and the
sensor that loads streamed days into ``raw_transactions``.

The bronze ingestion runs outside Dagster (``mlops-assets consume``, a Deployment); every tick
the sensor reads what it wrote from the bronze table's Delta log, the offsets committed with
the rows and the topic's end offsets, records an observation of ``transaction_stream`` (lag,
offsets, every write since the last one, streamed rows per day) and requests
``raw_transactions`` for each ended day whose streamed rows changed and settled; validation,
features, scores and drift follow through their automation conditions, as for files.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from mlops_assets.ingest.assets import TRANSACTION_STREAM, raw_transactions
from mlops_assets.ingest.stream_scan import days_to_load, lag_by_partition, observation_metadata
from mlops_assets.ingest.streamed import (
    committed_offsets,
    has_streamed_rows,
    stream_writes,
    streamed_days,
)
from mlops_assets.partitions import daily_partitions
from mlops_assets.resources.kafka import KafkaCluster
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import RAW_TRANSACTIONS

RAW = dg.AssetKey("raw_transactions")
#: the longest a quiet stream goes without an observation
OBSERVE_EVERY_SECONDS = 300.0
MAX_HISTORY = 500

transaction_stream = dg.AssetSpec(
    TRANSACTION_STREAM,
    group_name="ingest",
    kinds={"kafka", "avro"},
    description="The Kafka topic the transactions arrive on, as Avro against the transaction "
    "schema (mlops_assets/stream/schemas, registered in the schema registry). The bronze "
    "ingestion (`mlops-assets consume`) writes every message into raw_transactions exactly "
    "once, dead-lettering what it cannot use; the stream sensor observes the lag, the offsets "
    "committed with the bronze rows and every bronze write.",
)


def _loaded_stream_rows(instance: dg.DagsterInstance, days: list[date]) -> dict[date, int | None]:
    """The streamed rows each day's latest raw_transactions materialization loaded."""
    loaded: dict[date, int | None] = {}
    for day in days:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[day.isoformat()]), limit=1
        ).records
        materialization = records[0].asset_materialization if records else None
        rows = materialization.metadata.get("rows_by_day") if materialization else None
        loaded[day] = (rows.value.get(day.isoformat()) or {}).get("stream_rows") if rows else None
    return loaded


def _lag(kafka: KafkaCluster, lake: DeltaLake) -> tuple[Any, Any, dict[int, int | None], str]:
    try:
        end_offsets = kafka.end_offsets(kafka.transactions_topic, timeout=5.0)
    except Exception as error:  # the brokers down or unreachable: the lake part goes on
        return None, None, {}, f"{type(error).__name__}: {error}"
    committed = committed_offsets(lake, kafka.transactions_topic, sorted(end_offsets))
    return lag_by_partition(end_offsets, committed), end_offsets, committed, ""


def stream_sensor(
    context: dg.SensorEvaluationContext,
    lake: DeltaLake,
    kafka: KafkaCluster,
    policy: PipelinePolicy,
) -> dg.SensorResult | dg.SkipReason:
    version = lake.version(RAW_TRANSACTIONS)
    if version is None or not has_streamed_rows(lake):
        return dg.SkipReason("raw_transactions holds no streamed rows yet")
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen = int(cursor.get("version", -1))
    history = lake.history(RAW_TRANSACTIONS, limit=max(1, min(version - seen, MAX_HISTORY)))
    writes = [w for w in stream_writes(history) if (w["version"] or 0) > seen]
    today = datetime.now(UTC).date()
    recent = [today - timedelta(days=n) for n in range(policy.stream_sensor_days)]
    for write in writes:  # a late message for an older day
        recent += [date.fromisoformat(d) for d in write.get("rows_by_day", {})]
    streamed = streamed_days(lake, sorted(set(recent)), version=version)
    last_key = daily_partitions.get_last_partition_key()
    scan = days_to_load(
        streamed,
        _loaded_stream_rows(context.instance, sorted(streamed)),
        now=datetime.now(UTC),
        settle_seconds=policy.stream_settle_seconds,
        first_day=date.fromisoformat(daily_partitions.get_first_partition_key()),
        last_day=date.fromisoformat(last_key) if last_key else None,
    )
    for note in scan.notes:
        context.log.info(note)
    lag, end_offsets, committed, lag_error = _lag(kafka, lake)
    total_lag = sum(lag.values()) if lag is not None else None
    now = time.time()
    observe = (
        bool(writes)
        or total_lag != cursor.get("lag")
        or now - float(cursor.get("observed_at", 0)) >= OBSERVE_EVERY_SECONDS
    )
    events = []
    if observe:
        metadata = observation_metadata(
            kafka.transactions_topic,
            lag,
            end_offsets,
            committed,
            writes,
            streamed,
            version,
            lag_error,
        )
        events.append(
            dg.AssetObservation(
                TRANSACTION_STREAM,
                metadata={
                    k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
                    for k, v in metadata.items()
                },
            )
        )
    requests = []
    for request in scan.requests:
        context.log.info(
            f"{request.day}: {request.rows} streamed row(s): requesting raw_transactions"
        )
        requests.append(
            dg.RunRequest(
                run_key=request.run_key,
                partition_key=request.day.isoformat(),
                asset_selection=[RAW],
                tags={"mlops/stream_rows": str(request.rows)},
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        asset_events=events,
        cursor=json.dumps(
            {
                "version": version,
                "lag": total_lag if observe else cursor.get("lag"),
                "observed_at": now if observe else cursor.get("observed_at", 0),
            }
        ),
    )


def build_stream_sensor(running: bool = True) -> dg.SensorDefinition:
    """The stream sensor, started by default unless ``running`` is False (it skips at once
    while the bronze table has no streamed rows, and never calls Kafka then)."""
    return dg.sensor(
        name="transaction_stream_sensor",
        target=[raw_transactions],
        minimum_interval_seconds=30,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description="Observes the transactions topic (lag, offsets committed with the bronze "
        "rows, every bronze write) and requests raw_transactions for each ended day whose "
        "streamed rows changed, once no message for it arrived for MLOPS_STREAM_SETTLE_SECONDS "
        "(run key: day and streamed row count).",
    )(stream_sensor)
