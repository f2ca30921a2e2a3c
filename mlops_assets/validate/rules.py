"""Splitting a day's delivered rows into contract-passing rows and quarantined rows.

Pure polars + pandera; no Dagster. Every delivered row ends up in exactly one of the two
outputs, and each quarantined row lists every rule it broke.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

import pandera.polars as pa
import polars as pl

from mlops_assets.validate.contract import TYPED_COLUMNS, TransactionContract

DELIVERED_COLUMNS = tuple(TYPED_COLUMNS)
DUPLICATE_RULE = "duplicate: identical to an earlier delivered row of this day"
REUSED_ID_RULE = "transaction_id: unique within the day (an earlier row has this id)"
#: lineage of a row, in this order: its file and row, or its topic, partition and offset
LINEAGE_COLUMNS = (
    "_source_file",
    "_source_row",
    "_source_topic",
    "_source_partition",
    "_source_offset",
    "_ingested_at",
)
#: what a quarantined streamed row also keeps: its writer schema and an unreadable message's bytes
QUARANTINE_EXTRA_COLUMNS = ("_schema_id", "_message_value")
_FILE_LINEAGE = {"_source_file": pl.Utf8, "_source_row": pl.Int64}
_TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
)
_ROW = "_row"
_MAX_STEP_HOURS = 24 * 366 * 100


@dataclass
class ContractOutcome:
    """The result of applying the contract to one day's delivered rows."""

    valid: pl.DataFrame
    quarantined: pl.DataFrame
    rejects_by_rule: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return self.valid.height + self.quarantined.height

    @property
    def reject_share(self) -> float:
        return self.quarantined.height / self.total_rows if self.total_rows else 0.0


def _text(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Utf8).str.strip_chars()


def parse_timestamps(text: pl.Series) -> pl.Series:
    """UTC datetimes from ISO-8601 text in any accepted format; null where none matches.

    The usual format is parsed in one pass; the others only when some values remain unparsed.
    """
    text = text.cast(pl.Utf8)
    parsed = pl.Series(dtype=pl.Datetime("us", "UTC"))
    for position, fmt in enumerate(_TIMESTAMP_FORMATS):
        attempt = text.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
        parsed = attempt if position == 0 else parsed.fill_null(attempt)
        if not (parsed.is_null() & text.is_not_null()).any():
            break
        if position == 0:
            text = text.str.strip_chars()  # tolerate surrounding spaces in the rare retries
            parsed = parsed.fill_null(
                text.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
            )
    return parsed.rename("timestamp")


def parse_numbers(text: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Numbers from delivered text; surrounding spaces are tolerated, anything else is null.

    One cast pass; only the values that fail it are stripped and cast again.
    """
    direct = text.cast(dtype, strict=False)
    retry = (direct.is_null() & text.is_not_null()).arg_true()
    if retry.len() == 0:
        return direct
    return direct.scatter(retry, text.gather(retry).str.strip_chars().cast(dtype, strict=False))


def _timestamp_from_step(epoch: date) -> pl.Expr:
    epoch_start = datetime(epoch.year, epoch.month, epoch.day)
    step = _text("step").cast(pl.Int64, strict=False)
    # a step of more than a century of hours is no PaySim hour: null (then quarantined), not
    # a datetime beyond year 9999 that overflows (a panic) once pandera reports the row
    step = pl.when(step.abs() <= _MAX_STEP_HOURS).then(step)
    return (
        pl.lit(epoch_start).dt.replace_time_zone("UTC") + pl.duration(hours=step - 1)
    ).dt.cast_time_unit("us")


def parse_delivered_text(raw: pl.DataFrame, day: date, epoch: date) -> pl.DataFrame:
    """Typed columns parsed from the delivered text (unparseable values become null)."""
    parsed = []
    for column, dtype in TYPED_COLUMNS.items():
        if column == "timestamp":
            delivered = parse_timestamps(raw.get_column("timestamp"))
            parsed.append(
                pl.when(pl.col("_timestamp_from_step"))
                .then(_timestamp_from_step(epoch))
                .otherwise(pl.lit(delivered))
                .alias("timestamp")
            )
        elif dtype == pl.Utf8:
            parsed.append(pl.col(column).cast(pl.Utf8))  # kept exactly as delivered
        else:
            numbers = parse_numbers(raw.get_column(column).cast(pl.Utf8), dtype)
            parsed.append(pl.lit(numbers).alias(column))
    return raw.select(pl.col(_ROW), *parsed, pl.lit(day, dtype=pl.Date).alias("partition_day"))


def _parse_failures(raw: pl.DataFrame, typed: pl.DataFrame) -> pl.DataFrame:
    """(row, column, rule) for every delivered value that does not parse into its type."""
    # a value can only have failed to parse where the parsed column is null
    checked = [
        c
        for c, dtype in TYPED_COLUMNS.items()
        if dtype != pl.Utf8 and typed.get_column(c).null_count() > 0
    ]
    if not checked:
        return _empty_failures()
    delivered = raw.select(
        pl.col(_ROW),
        pl.col("_timestamp_from_step"),
        *[pl.col(c).cast(pl.Utf8).alias(c) for c in checked],
    )
    failures = []
    for column in checked:
        mask = (
            delivered.get_column(column).is_not_null()
            & (delivered.get_column(column).str.strip_chars() != "")
            & typed.get_column(column).is_null()
        )
        if column == "timestamp":
            mask = mask & ~delivered.get_column("_timestamp_from_step")
        if not mask.any():
            continue
        rows = delivered.get_column(_ROW).filter(mask)
        failures.append(
            pl.DataFrame({_ROW: rows}).with_columns(
                pl.lit(column).alias("column"),
                pl.lit(f"{column}: not a valid {TYPED_COLUMNS[column]}").alias("rule"),
            )
        )
    return pl.concat(failures) if failures else _empty_failures()


def _empty_failures() -> pl.DataFrame:
    return pl.DataFrame(schema={_ROW: pl.Int64, "column": pl.Utf8, "rule": pl.Utf8})


def _contract_failures(typed: pl.DataFrame) -> pl.DataFrame:
    """(row, column, rule) for every pandera check a row fails."""
    try:
        TransactionContract.validate(typed.drop(_ROW), lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pl.DataFrame(schema={_ROW: pl.Int64, "column": pl.Utf8, "rule": pl.Utf8})
    whole_column = cases.filter(pl.col("index").is_null())
    if whole_column.height:
        raise RuntimeError(
            f"Contract failed on whole columns (a parsing bug, not bad rows): "
            f"{whole_column.select('column', 'check').rows()}"
        )
    model_name = TransactionContract.__name__
    rule = (
        pl.when(pl.col("column") == model_name)
        .then(pl.col("check"))
        .otherwise(pl.col("column") + ": " + pl.col("check"))
    )
    positions = cases.get_column("index").cast(pl.Int64)
    return cases.select(
        pl.Series(_ROW, typed.get_column(_ROW).gather(positions)),
        pl.col("column"),
        rule.alias("rule"),
    )


def _duplicate_failures(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows identical (in every contract column) to an earlier delivered row of the day.

    Rows are first hashed on a few columns that almost never repeat together; only rows
    sharing such a hash are compared exactly, on every column.
    """
    present = [c for c in DELIVERED_COLUMNS if c in raw.columns]
    probe = [c for c in ("timestamp", "nameOrig", "amount") if c in present] or present
    shared_hash = raw.select(pl.struct(probe).hash().is_duplicated()).to_series()
    if not shared_hash.any():
        return _empty_failures()
    candidates = raw.filter(shared_hash)
    duplicate = ~candidates.select(pl.struct(present).is_first_distinct()).to_series()
    rows = candidates.get_column(_ROW).filter(duplicate)
    return pl.DataFrame({_ROW: rows}).with_columns(
        pl.lit("").alias("column"), pl.lit(DUPLICATE_RULE).alias("rule")
    )


def _transaction_ids(raw: pl.DataFrame) -> pl.Expr:
    """File rows: ``<file stem>:<row>`` (the stem computed once per file, not once per row).
    Streamed rows: the producer's ``transaction_id``, else ``<topic>:<partition>:<offset>``."""
    files = [uri for uri in raw.get_column("_source_file").unique().to_list() if uri is not None]
    stems = {uri: uri.rsplit("/", 1)[-1].rsplit(".", 1)[0] for uri in files}
    from_file = (
        pl.col("_source_file").replace_strict(stems, default=None, return_dtype=pl.Utf8)
        + ":"
        + pl.col("_source_row").cast(pl.Utf8)
    )
    if "_source_topic" not in raw.columns:
        return from_file.alias("transaction_id")
    from_stream = (
        pl.col("_source_topic")
        + ":"
        + pl.col("_source_partition").cast(pl.Utf8)
        + ":"
        + pl.col("_source_offset").cast(pl.Utf8)
    )
    delivered = (
        pl.col("transaction_id").cast(pl.Utf8)
        if "transaction_id" in raw.columns
        else pl.lit(None, dtype=pl.Utf8)
    )
    return pl.coalesce(from_file, delivered, from_stream).alias("transaction_id")


def _in_delivery_order(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows ordered by source file and row, then topic, partition and offset (a cheap no-op
    for a single, ordered file)."""
    if "_source_topic" not in raw.columns:
        single_file = raw.get_column("_source_file").n_unique() <= 1
        if single_file and raw.get_column("_source_row").is_sorted():
            return raw
        return raw.sort("_source_file", "_source_row")
    order = ["_source_file", "_source_row", "_source_topic", "_source_partition", "_source_offset"]
    return raw.sort(order, nulls_last=True)


def _delivery_failures(raw: pl.DataFrame) -> pl.DataFrame:
    """(row, column, rule) of every streamed message that could not be read at all."""
    if "_delivery_error" not in raw.columns:
        return _empty_failures()
    failed = raw.filter(pl.col("_delivery_error").is_not_null())
    return failed.select(
        pl.col(_ROW),
        pl.lit("").alias("column"),
        (pl.lit("message: ") + pl.col("_delivery_error")).alias("rule"),
    )


def _reused_id_failures(
    raw: pl.DataFrame, ids: pl.Series, duplicates: pl.DataFrame
) -> pl.DataFrame:
    """Rows whose delivered transaction id an earlier row of the day already has (identical
    rows are reported as duplicates instead)."""
    if "transaction_id" not in raw.columns:
        return _empty_failures()
    delivered = raw.get_column("transaction_id").is_not_null()
    reused = delivered & ~ids.is_first_distinct()
    if not reused.any():
        return _empty_failures()
    rows = raw.get_column(_ROW).filter(reused)
    rows = rows.filter(~rows.is_in(duplicates.get_column(_ROW).implode()))
    return pl.DataFrame({_ROW: rows}).with_columns(
        pl.lit("transaction_id").alias("column"), pl.lit(REUSED_ID_RULE).alias("rule")
    )


def _lineage_columns(raw: pl.DataFrame) -> list[str]:
    """The lineage columns the day's rows carry (file rows; streamed rows too when present)."""
    return [c for c in LINEAGE_COLUMNS if c in raw.columns]


def apply_contract(raw: pl.DataFrame, day: date, epoch: date) -> ContractOutcome:
    """Split one day's delivered rows (text columns + lineage) by the contract."""
    for column, dtype in _FILE_LINEAGE.items():  # a day of streamed rows only
        if column not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype=dtype).alias(column))
    raw = _in_delivery_order(raw)
    for column in DELIVERED_COLUMNS:
        if column not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype=pl.Utf8).alias(column))
    raw = raw.with_row_index(_ROW).with_columns(pl.col(_ROW).cast(pl.Int64))
    typed = parse_delivered_text(raw, day, epoch)
    ids = raw.select(_transaction_ids(raw)).to_series()

    delivery_failures = _delivery_failures(raw)
    parse_failures = _parse_failures(raw, typed)
    contract_failures = _contract_failures(typed).join(
        # a value that did not parse is reported once, as a type error, not also as null
        parse_failures.select(_ROW, "column"),
        on=[_ROW, "column"],
        how="anti",
    )
    duplicates = _duplicate_failures(raw)
    failures = pl.concat(
        [
            # an unreadable message is reported for that alone, not for its empty values
            pl.concat([parse_failures, contract_failures, duplicates]).join(
                delivery_failures.select(_ROW), on=_ROW, how="anti"
            ),
            delivery_failures,
            _reused_id_failures(raw, ids, duplicates),
        ]
    )
    rules = failures.group_by(_ROW).agg(pl.col("rule").unique().sort().alias("_rules"))
    rejected = raw.get_column(_ROW).is_in(rules.get_column(_ROW).implode())
    lineage_columns = _lineage_columns(raw)

    # raw is in delivery order and filters keep it: no re-sorting needed
    quarantined = (
        raw.filter(rejected)
        .join(rules, on=_ROW, how="left", maintain_order="left")
        .select(
            *[pl.col(c).cast(pl.Utf8) for c in DELIVERED_COLUMNS],
            *lineage_columns,
            *[c for c in QUARANTINE_EXTRA_COLUMNS if c in raw.columns],
            "_rules",
        )
    )
    lineage = raw.select(lineage_columns)
    valid = (
        pl.concat([typed, lineage, ids.to_frame()], how="horizontal")
        .filter(~rejected)
        .select("transaction_id", *DELIVERED_COLUMNS, *lineage_columns)
    )
    counts = Counter(failures.get_column("rule").to_list())
    return ContractOutcome(valid=valid, quarantined=quarantined, rejects_by_rule=dict(counts))
