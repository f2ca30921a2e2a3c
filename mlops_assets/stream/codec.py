"""Avro messages in the Confluent wire format, against a schema registry.

A message value is ``0x00`` (the magic byte), the writer schema's registry id (4 bytes, big
endian) and the Avro binary encoding of the record. Producers register their schema under the
topic's subject (``<topic>-value``) before they send; the registry refuses a schema that is not
compatible with the versions before it (the subject's compatibility level, BACKWARD by default),
so an incompatible producer never gets to send. Consumers read each message with the writer
schema its id names (fetched once per id), so a compatible new field arrives with the rest.

What cannot be read is an ``UndecodableMessage`` naming why (no magic byte, unknown schema id,
an Avro payload that does not decode, a schema that is not a transaction); a registry that
cannot be reached is a ``RegistryUnavailable``, never a bad message.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro

from mlops_assets.stream.schemas import field_names, required_fields, without_logical_types

MAGIC_BYTE = 0
#: an id the registry did not know is asked for again after this long (a restored registry)
UNKNOWN_ID_SECONDS = 60.0
_HEADER = struct.Struct(">bI")


class UndecodableMessage(ValueError):
    """A message that is not a readable Avro transaction; the text says why."""


class RegistryUnavailable(RuntimeError):
    """The schema registry could not answer (a passing fault: retry, never dead-letter)."""


class IncompatibleSchema(ValueError):
    """The registry refused a producer's schema as incompatible with the registered ones."""


def subject_for(topic: str) -> str:
    """The registry subject of a topic's message values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


@dataclass(frozen=True)
class WriterSchema:
    """A registered schema, ready to read or write with."""

    schema_id: int
    schema: dict[str, Any]
    parsed: Any  # fastavro's parsed form, logical types removed
    fields: tuple[str, ...]
    missing: tuple[str, ...]  # required reader fields this schema lacks

    @property
    def version_label(self) -> str:
        return f"schema id {self.schema_id} ({self.schema.get('name', '?')})"


def _registry_error_status(error: Exception) -> int | None:
    return getattr(error, "http_status_code", None)


class AvroCodec:
    """Encodes and decodes records of one kind (``reader_schema``: what this code reads)
    through a Confluent-compatible registry client
    (``confluent_kafka.schema_registry.SchemaRegistryClient`` or one with the same methods)."""

    def __init__(
        self, registry: Any, reader_schema: dict[str, Any], registry_url: str = ""
    ) -> None:
        self.registry = registry
        self.reader_schema = reader_schema
        self.registry_url = registry_url
        self._required = tuple(required_fields(reader_schema))
        self._writers: dict[int, WriterSchema | UndecodableMessage] = {}
        self._refused_at: dict[int, float] = {}  # when an id was found unknown (asked again later)
        self._lock = threading.Lock()

    # --- producing ------------------------------------------------------------------------
    def register(self, subject: str, schema: dict[str, Any] | None = None) -> WriterSchema:
        """Register ``schema`` (default: the reader schema) under ``subject``; the registry
        returns the id of an identical schema already there. ``IncompatibleSchema`` when the
        subject's compatibility rule refuses it."""
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        schema = schema or self.reader_schema
        try:
            schema_id = self.registry.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
        except SchemaRegistryError as error:
            if _registry_error_status(error) == 409:
                raise IncompatibleSchema(
                    f"the schema registry at {self.registry_url or '?'} refused this producer's "
                    f"schema {schema.get('name')!r} for subject {subject!r}: it is not compatible "
                    f"with the versions already registered ({self._compatibility(subject)} "
                    f"compatibility): {error.error_message}"
                ) from error
            if _registry_error_status(error) in (400, 422):
                raise IncompatibleSchema(
                    f"the schema registry at {self.registry_url or '?'} refused the schema for "
                    f"subject {subject!r} as invalid: {error.error_message}"
                ) from error
            raise RegistryUnavailable(
                f"registering a schema for {subject!r} failed: {error}"
            ) from error
        except Exception as error:  # connection refused, timeouts
            raise RegistryUnavailable(
                f"the schema registry at {self.registry_url or '?'} cannot be reached: {error}"
            ) from error
        writer = self._writer_from(int(schema_id), schema)
        with self._lock:
            self._writers[writer.schema_id] = writer
        return writer

    def _compatibility(self, subject: str) -> str:
        try:
            return str(self.registry.get_compatibility(subject))
        except Exception:
            try:
                return str(self.registry.get_compatibility())
            except Exception:
                return "the registry's"

    def encoder(self, writer: WriterSchema) -> Callable[[dict[str, Any]], bytes]:
        """A function encoding a record (timestamps as integer microseconds) as a message."""
        header = _HEADER.pack(MAGIC_BYTE, writer.schema_id)
        parsed = writer.parsed

        def encode(record: dict[str, Any]) -> bytes:
            buffer = io.BytesIO()
            buffer.write(header)
            fastavro.schemaless_writer(buffer, parsed, record)
            return buffer.getvalue()

        return encode

    # --- consuming ------------------------------------------------------------------------
    def writer(self, schema_id: int) -> WriterSchema:
        """The registered schema ``schema_id`` (fetched once); ``UndecodableMessage`` when the
        registry does not know it or it is not a schema this reader can read."""
        known = self._writers.get(schema_id)
        if known is None or (
            isinstance(known, UndecodableMessage)
            and time.monotonic() - self._refused_at.get(schema_id, 0.0) > UNKNOWN_ID_SECONDS
        ):
            known = self._fetch(schema_id)
            with self._lock:
                self._writers[schema_id] = known
                if isinstance(known, UndecodableMessage):
                    self._refused_at[schema_id] = time.monotonic()
        if isinstance(known, UndecodableMessage):
            raise known
        return known

    def _fetch(self, schema_id: int) -> WriterSchema | UndecodableMessage:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            registered = self.registry.get_schema(schema_id)
        except SchemaRegistryError as error:
            if _registry_error_status(error) == 404:
                return UndecodableMessage(
                    f"unknown schema id {schema_id}: the schema registry at "
                    f"{self.registry_url or '?'} has no such schema"
                )
            raise RegistryUnavailable(f"fetching schema id {schema_id} failed: {error}") from error
        except Exception as error:
            raise RegistryUnavailable(
                f"the schema registry at {self.registry_url or '?'} cannot be reached: {error}"
            ) from error
        if getattr(registered, "schema_type", "AVRO") not in (None, "AVRO"):
            return UndecodableMessage(
                f"schema id {schema_id} is a {registered.schema_type} schema, not Avro"
            )
        try:
            schema = json.loads(registered.schema_str)
            writer = self._writer_from(schema_id, schema)
        except Exception as error:
            return UndecodableMessage(f"schema id {schema_id} is not a usable Avro schema: {error}")
        if writer.missing:
            return UndecodableMessage(
                f"schema id {schema_id} ({schema.get('name')}) is not a "
                f"{self.reader_schema['name']} schema: it lacks {', '.join(writer.missing)}"
            )
        return writer

    def _writer_from(self, schema_id: int, schema: dict[str, Any]) -> WriterSchema:
        if schema.get("type") != "record":
            raise ValueError("not an Avro record schema")
        names = tuple(field_names(schema))
        return WriterSchema(
            schema_id=schema_id,
            schema=schema,
            parsed=fastavro.parse_schema(without_logical_types(schema)),
            fields=names,
            missing=tuple(name for name in self._required if name not in names),
        )

    def decode(self, value: bytes | None) -> tuple[WriterSchema, dict[str, Any]]:
        """(writer schema, record) of a message value; ``UndecodableMessage`` saying why not."""
        if not value:
            raise UndecodableMessage("empty message: no value")
        if len(value) < _HEADER.size or value[0] != MAGIC_BYTE:
            raise UndecodableMessage(
                f"not Avro in the Confluent wire format: starts with 0x{value[:1].hex() or '?'} "
                f"(expected the magic byte 0x00 and a 4-byte schema id), {len(value)} bytes"
            )
        schema_id = _HEADER.unpack_from(value)[1]
        writer = self.writer(schema_id)
        payload = io.BytesIO(value)
        payload.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(payload, writer.parsed)
        except EOFError:
            raise UndecodableMessage(
                f"the Avro payload does not decode with {writer.version_label}: it ends before "
                f"the record does ({len(value)} bytes)"
            ) from None
        except Exception as error:
            raise UndecodableMessage(
                f"the Avro payload does not decode with {writer.version_label}: "
                f"{type(error).__name__}: {error}"
            ) from None
        if payload.tell() != len(value):
            raise UndecodableMessage(
                f"the Avro payload does not decode with {writer.version_label}: "
                f"{len(value) - payload.tell()} byte(s) left over"
            )
        return writer, record
