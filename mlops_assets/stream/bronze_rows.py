"""Consumed messages as ``raw_transactions`` rows: pure code, no broker or lake.

Every message becomes exactly one bronze row, as delivered: the record's fields as text (like
a delivered file's cells; numbers in their shortest exact form, the timestamp in ISO-8601 UTC),
a compatible writer's extra fields as extra columns, and where it came from
(``_source_topic``, ``_source_partition``, ``_source_offset``, ``_schema_id``) instead of a file
and row. A message that cannot be read is a row too, with ``_delivery_error`` saying why and
``_message_value`` holding its bytes (base64): validation quarantines it with that reason, so
raw = validated + quarantined still holds for streamed days. Messages that cannot be read,
break a one-row contract rule, or carry a timestamp no daily partition takes are also dead
letters (``dead_letters.py``).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from mlops_assets.stream.codec import AvroCodec, UndecodableMessage, WriterSchema
from mlops_assets.stream.dead_letters import CONTRACT, OUT_OF_RANGE, UNDECODABLE, DeadLetter
from mlops_assets.stream.messages import StreamMessage
from mlops_assets.tables import PARTITION_COLUMN
from mlops_assets.validate.one_row import first_violation

#: the lineage columns of a streamed row (file rows have ``_source_file``/``_source_row``)
STREAM_LINEAGE = (
    "_source_topic",
    "_source_partition",
    "_source_offset",
    "_schema_id",
    "_delivery_error",
    "_message_value",
)
_MICROS_PER_DAY = 86_400_000_000
_EPOCH = date(1970, 1, 1)
_PRIMITIVE = {
    "string": pl.Utf8,
    "long": pl.Int64,
    "int": pl.Int32,
    "double": pl.Float64,
    "float": pl.Float32,
    "boolean": pl.Boolean,
}
_TIMESTAMP_UNITS = {"timestamp-micros": 1, "timestamp-millis": 1000}


@dataclass
class MessageBatch:
    """A batch of consumed messages read into bronze rows."""

    table: pa.Table
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: (topic, partition) -> (first offset, last offset, messages)
    offsets: dict[tuple[str, int], tuple[int, int, int]] = field(default_factory=dict)
    rows_by_day: dict[str, int] = field(default_factory=dict)
    dead_letters_by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return self.table.num_rows


def _field_type(field_spec: dict[str, Any]) -> tuple[Any, int | None]:
    """(polars type of the plain value, timestamp unit in µs) of an Avro field; None for types
    kept as JSON text."""
    avro_type = field_spec["type"]
    if isinstance(avro_type, list):  # a union with null: its other branch
        others = [t for t in avro_type if t != "null"]
        avro_type = others[0] if len(others) == 1 else None
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical in _TIMESTAMP_UNITS:
            return pl.Int64, _TIMESTAMP_UNITS[logical]
        if avro_type.get("type") == "enum":
            return pl.Utf8, None
        avro_type = avro_type.get("type") if avro_type.get("type") in _PRIMITIVE else None
    return (_PRIMITIVE.get(avro_type) if isinstance(avro_type, str) else None), None


def _as_text(values: list[Any], field_spec: dict[str, Any]) -> pa.Array:
    """A field's values as delivered text: numbers in their shortest exact form (as polars
    writes a delivered CSV), timestamps as ISO-8601 UTC."""
    dtype, micros = _field_type(field_spec)
    if dtype is None:
        text = [None if v is None else json.dumps(v, default=str) for v in values]
        return pa.array(text, pa.string())
    series = pl.Series(field_spec["name"], values, dtype=dtype)
    if micros is not None:
        series = (series * micros).cast(pl.Datetime("us", "UTC"))
        series = series.dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")
    elif dtype != pl.Utf8:
        series = series.cast(pl.Utf8)
    return series.to_arrow().cast(pa.string())


def _timestamp_micros(record: dict[str, Any], writer: WriterSchema) -> int | None:
    spec = next(f for f in writer.schema["fields"] if f["name"] == "timestamp")
    value = record.get("timestamp")
    unit = _field_type(spec)[1] or 1
    return None if value is None else int(value) * unit


def _lineage(messages: Sequence[StreamMessage], ingested_at: datetime) -> dict[str, pa.Array]:
    return {
        "_source_topic": pa.array([m.topic for m in messages], pa.string()),
        "_source_partition": pa.array([m.partition for m in messages], pa.int32()),
        "_source_offset": pa.array([m.offset for m in messages], pa.int64()),
        "_ingested_at": pa.array([ingested_at] * len(messages), pa.timestamp("us", tz="UTC")),
        "_timestamp_from_step": pa.array([False] * len(messages), pa.bool_()),
    }


def _decoded_table(
    writer: WriterSchema,
    messages: list[StreamMessage],
    records: list[dict[str, Any]],
    days: list[date],
    ingested_at: datetime,
) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for spec in writer.schema["fields"]:
        name = spec["name"]
        columns[name] = _as_text([r.get(name) for r in records], spec)
    columns |= _lineage(messages, ingested_at)
    columns["_schema_id"] = pa.array([writer.schema_id] * len(messages), pa.int32())
    columns["_delivery_error"] = pa.nulls(len(messages), pa.string())
    columns["_message_value"] = pa.nulls(len(messages), pa.string())
    columns[PARTITION_COLUMN] = pa.array(days, pa.date32())
    return pa.table(columns)


def _undecodable_table(failed: list[tuple[StreamMessage, str]], ingested_at: datetime) -> pa.Table:
    messages = [m for m, _ in failed]
    columns = _lineage(messages, ingested_at)
    columns["_schema_id"] = pa.nulls(len(messages), pa.int32())
    columns["_delivery_error"] = pa.array([reason for _, reason in failed], pa.string())
    columns["_message_value"] = pa.array(
        [base64.b64encode(m.value).decode() if m.value else None for m in messages], pa.string()
    )
    columns[PARTITION_COLUMN] = pa.array(
        [(m.sent_at() or ingested_at).date() for m in messages], pa.date32()
    )
    return pa.table(columns)


def read_messages(
    messages: Sequence[StreamMessage],
    codec: AvroCodec,
    ingested_at: datetime,
    first_day: date,
    last_day: date | None = None,
) -> MessageBatch:
    """Bronze rows (one per message, in the order given) and dead letters of ``messages``.

    ``first_day``..``last_day`` (default: tomorrow, UTC) are the days a transaction may have;
    one outside them is kept in bronze under its own day and dead-lettered. A registry that
    cannot be reached raises ``RegistryUnavailable``: the batch is not read, not lost.
    """
    last_day = last_day or (datetime.now(UTC).date() + timedelta(days=1))
    groups: dict[int, tuple[WriterSchema, list[StreamMessage], list[dict], list[date]]] = {}
    positions: dict[int | None, list[int]] = {}  # schema id (None: unreadable) -> positions
    failed: list[tuple[StreamMessage, str]] = []
    letters: list[DeadLetter] = []
    for position, message in enumerate(messages):
        try:
            writer, record = codec.decode(message.value)
        except UndecodableMessage as error:
            failed.append((message, str(error)))
            positions.setdefault(None, []).append(position)
            letters.append(DeadLetter(message, UNDECODABLE, str(error)))
            continue
        micros = _timestamp_micros(record, writer)
        day = _EPOCH + timedelta(days=micros // _MICROS_PER_DAY) if micros is not None else None
        violation = first_violation(record)
        if violation is not None:
            letters.append(DeadLetter(message, CONTRACT, str(violation), writer.schema_id))
        elif day is not None and not first_day <= day <= last_day:
            letters.append(
                DeadLetter(
                    message,
                    OUT_OF_RANGE,
                    f"timestamp: its day {day} is outside the daily partitions "
                    f"{first_day}..{last_day}",
                    writer.schema_id,
                )
            )
        group = groups.setdefault(writer.schema_id, (writer, [], [], []))
        group[1].append(message)
        group[2].append(record)
        group[3].append(day or ingested_at.date())
        positions.setdefault(writer.schema_id, []).append(position)
    tables = [_decoded_table(w, ms, rs, ds, ingested_at) for w, ms, rs, ds in groups.values()]
    order = [p for schema_id in groups for p in positions[schema_id]]
    if failed:
        tables.append(_undecodable_table(failed, ingested_at))
        order += positions[None]
    table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    if len(tables) > 1:  # back into the order consumed
        table = table.take(pc.sort_indices(pa.array(order, pa.int64())))
    return MessageBatch(
        table=table,
        dead_letters=letters,
        offsets=_offsets(messages),
        rows_by_day=_rows_by_day(table),
        dead_letters_by_kind=dict(Counter(letter.kind for letter in letters)),
    )


def _offsets(messages: Sequence[StreamMessage]) -> dict[tuple[str, int], tuple[int, int, int]]:
    offsets: dict[tuple[str, int], tuple[int, int, int]] = {}
    for message in messages:
        key = (message.topic, message.partition)
        first, last, count = offsets.get(key, (message.offset, message.offset, 0))
        offsets[key] = (min(first, message.offset), max(last, message.offset), count + 1)
    return offsets


def _rows_by_day(table: pa.Table) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    counts = pc.value_counts(table.column(PARTITION_COLUMN))
    return {str(item["values"]): int(item["counts"]) for item in counts.to_pylist()}
