"""The delivery format: which landing files belong to a day and how a file is read as delivered.

Conventions (documented in the README):

* A file whose name contains an ISO date (``transactions_2026-01-03.csv``) holds that day's
  transactions. Several files may exist for one day; all are loaded.
* A file without a date in its name is a multi-day PaySim log: each row belongs to the day of
  ``paysim_epoch + (step - 1) hours``.
* Every column is kept as delivered, as text. A file without a ``timestamp`` column gets its
  timestamps from ``step`` during validation (``_timestamp_from_step``).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING

from mlops_assets.paysim import PAYSIM_COLUMNS
from mlops_assets.resources.landing import LandingFile

if TYPE_CHECKING:
    import polars as pl

REQUIRED_COLUMNS = PAYSIM_COLUMNS
OPTIONAL_COLUMNS = ("timestamp",)
LINEAGE_COLUMNS = ("_source_file", "_source_row", "_ingested_at", "_timestamp_from_step")

_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")


class DeliveryError(ValueError):
    """A landing file that cannot be loaded; the message names the file and the problem."""


def file_day(file: LandingFile) -> date | None:
    """The day a file is for, from the ISO date in its name; None for an undated file."""
    match = _DATE_IN_NAME.search(file.name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError as error:
        raise DeliveryError(
            f"Landing file {file.uri}: {match.group(1)!r} in its name is not a valid date"
        ) from error


def parse_delivered(file: LandingFile, content: bytes) -> pl.DataFrame:
    """Read a delivered file with every column as text, exactly as delivered.

    Raises DeliveryError for an unreadable, empty or incomplete file, or one naming a column
    twice.
    """
    import polars as pl

    if not content.strip():
        raise DeliveryError(f"Landing file {file.uri} is empty (0 bytes of data)")
    try:
        if file.name.lower().endswith(".parquet"):
            frame = pl.read_parquet(io.BytesIO(content))
            frame = frame.with_columns(_as_text(frame))
        else:
            frame = pl.read_csv(io.BytesIO(content), infer_schema=False)
    except Exception as error:  # polars/arrow raise several types for malformed input
        raise DeliveryError(
            f"Landing file {file.uri} is malformed and cannot be read: {error}"
        ) from error
    names = [c.strip() for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:  # e.g. "step" and " step": one column twice once padding is stripped
        raise DeliveryError(
            f"Landing file {file.uri} has duplicated column(s) {', '.join(map(repr, duplicated))}"
        )
    frame = frame.rename(dict(zip(frame.columns, names, strict=True)))
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DeliveryError(
            f"Landing file {file.uri} is missing required column(s) {', '.join(missing)}; "
            f"expected {', '.join(REQUIRED_COLUMNS)} (+ optional timestamp), "
            f"found {', '.join(frame.columns)}"
        )
    if frame.height == 0:
        raise DeliveryError(f"Landing file {file.uri} has a header but no rows")
    return frame


def _as_text(frame: pl.DataFrame) -> list[pl.Expr]:
    import polars as pl

    expressions = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is not None:
                column = column.dt.convert_time_zone("UTC")
            column = column.dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")
        elif dtype != pl.Utf8:
            column = column.cast(pl.Utf8)
        expressions.append(column.alias(name))
    return expressions


def with_lineage(frame: pl.DataFrame, file: LandingFile, ingested_at: datetime) -> pl.DataFrame:
    """Add ``_source_file``, ``_source_row`` (1-based), ``_ingested_at`` and the timestamp flag."""
    import polars as pl

    from_step = "timestamp" not in frame.columns
    return frame.with_columns(
        pl.lit(file.uri).alias("_source_file"),
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("_source_row"),
        pl.lit(ingested_at).dt.replace_time_zone("UTC").alias("_ingested_at"),
        pl.lit(from_step).alias("_timestamp_from_step"),
    )


def rows_of_day_from_log(frame: pl.DataFrame, day: date, epoch: date) -> tuple[pl.DataFrame, int]:
    """The rows of a multi-day PaySim log that fall on ``day``, and how many rows have no day.

    A row's day is ``epoch + (step - 1) // 24`` days; rows whose step is not a positive
    integer cannot be placed on any day and are counted (and reported) instead.
    """
    import polars as pl

    step = pl.col("step").str.strip_chars().cast(pl.Int64, strict=False)
    offset = (day - epoch).days
    first_step, last_step = offset * 24 + 1, offset * 24 + 24
    unassignable = frame.filter(step.is_null() | (step < 1)).height
    return frame.filter(step.is_between(first_step, last_step)), unassignable


def load_day(
    day: date,
    files: list[LandingFile],
    read: Callable[[LandingFile], bytes],
    epoch: date,
    ingested_at: datetime,
) -> tuple[pl.DataFrame, dict[str, str], int]:
    """All delivered rows for ``day``: (rows, {file URI: content digest}, unassignable rows)."""
    import polars as pl

    parts: list[pl.DataFrame] = []
    sources: dict[str, str] = {}
    unassignable = 0
    for file in files:
        dated = file_day(file)
        if dated is not None and dated != day:
            continue
        content = read(file)
        frame = with_lineage(parse_delivered(file, content), file, ingested_at)
        if dated is None:
            frame, lost = rows_of_day_from_log(frame, day, epoch)
            unassignable += lost
            if frame.height == 0:
                continue
        parts.append(frame)
        sources[file.uri] = content_digest(content)
    if not parts:
        return pl.DataFrame(), sources, unassignable
    return pl.concat(parts, how="diagonal"), sources, unassignable


def content_digest(content: bytes) -> str:
    """The fingerprint of a delivered file's content (re-delivering the same bytes keeps it)."""
    return hashlib.sha256(content).hexdigest()
