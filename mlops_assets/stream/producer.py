"""Sending a delivered transaction file to the transactions topic, one Avro message a row.

A row becomes a message with the transaction schema (registered under the topic's subject
first; an incompatible schema is refused by the registry), keyed by its origin account (one
account's transactions stay in order on one partition) and with the transaction id the file
row would get in validation (``<file stem>:<row>``), so a day sent as messages and the same
day delivered as a file name their transactions alike. Rows whose values do not fit the
schema's types (text where a number belongs, an empty required cell) cannot be encoded: they
are counted and reported, not sent. Values of the right type that break the contract are sent:
the ingestion dead-letters and quarantines them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import polars as pl

from mlops_assets.ingest.delivery import parse_delivered, with_lineage
from mlops_assets.resources.landing import LandingFile
from mlops_assets.validate.contract import TYPED_COLUMNS
from mlops_assets.validate.rules import parse_delivered_text

_MICROS = 1_000_000


@dataclass
class ProduceReport:
    """What a produce run sent."""

    topic: str
    schema_id: int
    rows: int = 0
    sent: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (file row, why)
    failed: int = 0  # not acknowledged by the brokers
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        text = (
            f"sent {self.sent:,} of {self.rows:,} row(s) to {self.topic} (schema id "
            f"{self.schema_id}) in {self.seconds:.1f}s ({self.rate:,.0f}/s)"
        )
        if self.skipped:
            shown = "; ".join(f"row {row}: {why}" for row, why in self.skipped[:5])
            more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            text += f"; {len(self.skipped)} row(s) do not fit the schema and were not sent: "
            text += shown + more
        if self.failed:
            text += f"; {self.failed} message(s) were not acknowledged by the brokers"
        return text


def typed_records(
    file: LandingFile, content: bytes, epoch: date, schema_fields: list[str]
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(file row, record or None, why not) of every row of a delivered file, typed as the
    contract parses delivered text (timestamps as integer microseconds)."""
    delivered = with_lineage(parse_delivered(file, content), file, datetime(1970, 1, 1))
    raw = delivered.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
    for column in TYPED_COLUMNS:
        if column not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype=pl.Utf8).alias(column))
    typed = parse_delivered_text(raw, date(1970, 1, 1), epoch).with_columns(
        pl.col("timestamp").dt.epoch("us")
    )
    stem = file.name.rsplit(".", 1)[0]
    wanted = [name for name in schema_fields if name in typed.columns]
    for position, row in enumerate(typed.select(wanted).iter_rows(named=True), start=1):
        missing = [name for name in wanted if row[name] is None and name != "transaction_id"]
        if missing:
            text = raw.row(position - 1, named=True)
            yield position, None, "; ".join(_unfit(name, text.get(name)) for name in missing)
            continue
        row["transaction_id"] = f"{stem}:{position}"
        yield position, row, None


def _unfit(name: str, text: Any) -> str:
    if text is None or not str(text).strip():
        return f"{name} is empty"
    return f"{name} {text!r} is not a valid {TYPED_COLUMNS[name]}"


def produce_records(
    producer: Any,
    topic: str,
    encode: Callable[[dict[str, Any]], bytes],
    records: Iterator[tuple[int, dict[str, Any] | None, str | None]],
    schema_id: int,
    rate: float | None = None,
    flush_timeout: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Encode and send records (keyed by ``nameOrig``), at most ``rate`` a second when given;
    flush and report what the brokers acknowledged."""
    report = ProduceReport(topic=topic, schema_id=schema_id)
    failures: list[int] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(1)

    started = time.perf_counter()
    for row, record, why in records:
        report.rows += 1
        if record is None:
            report.skipped.append((row, why or "does not fit the schema"))
            continue
        if rate:
            due = started + report.sent / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        value = encode(record)
        while True:
            try:
                producer.produce(
                    topic, value=value, key=record["nameOrig"].encode(), on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.05)
        report.sent += 1
        if report.sent % 10_000 == 0:
            producer.poll(0)
            if on_progress is not None:
                on_progress(report.sent)
    remaining = producer.flush(flush_timeout)
    report.failed = len(failures) + remaining
    report.seconds = time.perf_counter() - started
    return report
