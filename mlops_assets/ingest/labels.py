"""The label delivery format: ``labels_<transaction day>.<csv|parquet>`` with the columns
``transaction_id`` and ``isFraud`` (0 or 1), one row per labelled transaction."""

from __future__ import annotations

import io
from datetime import date
from typing import TYPE_CHECKING

from mlops_assets.ingest.delivery import DeliveryError, file_day
from mlops_assets.resources.landing import LandingFile

if TYPE_CHECKING:
    import polars as pl

LABEL_COLUMNS = ("transaction_id", "isFraud")


def label_files_for(day: date, files: list[LandingFile]) -> list[LandingFile]:
    """The label files of ``day`` (named ``labels_<day>...``)."""
    return [f for f in files if f.name.startswith("labels_") and file_day(f) == day]


def parse_labels(file: LandingFile, content: bytes) -> pl.DataFrame:
    """A label file as (transaction_id: str, isFraud: int8); DeliveryError naming the problem."""
    import polars as pl

    if not content.strip():
        raise DeliveryError(f"Label file {file.uri} is empty")
    try:
        if file.name.lower().endswith(".parquet"):
            frame = pl.read_parquet(io.BytesIO(content))
        else:
            frame = pl.read_csv(io.BytesIO(content), infer_schema=False)
    except Exception as error:  # polars raises several types for malformed input
        raise DeliveryError(f"Label file {file.uri} is malformed: {error}") from error
    frame = frame.rename({c: c.strip() for c in frame.columns})
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise DeliveryError(
            f"Label file {file.uri} is missing column(s) {', '.join(missing)}; expected "
            f"{', '.join(LABEL_COLUMNS)}, found {', '.join(frame.columns)}"
        )
    labels = frame.select(
        pl.col("transaction_id").cast(pl.Utf8).str.strip_chars(),
        pl.col("isFraud").cast(pl.Utf8).str.strip_chars().cast(pl.Int8, strict=False),
        pl.int_range(2, frame.height + 2).alias("_line"),
    )
    bad = labels.filter(
        pl.col("transaction_id").is_null()
        | (pl.col("transaction_id") == "")
        | ~pl.col("isFraud").is_in([0, 1]).fill_null(False)
    )
    if bad.height:
        lines = ", ".join(str(n) for n in bad["_line"].head(5).to_list())
        raise DeliveryError(
            f"Label file {file.uri}: {bad.height} row(s) without a transaction_id or with an "
            f"isFraud other than 0/1 (first at line(s) {lines})"
        )
    duplicated = labels.filter(pl.col("transaction_id").is_duplicated())
    if duplicated.height:
        first = duplicated["transaction_id"][0]
        raise DeliveryError(
            f"Label file {file.uri}: {duplicated.height} rows label the same transactions "
            f"twice (e.g. {first})"
        )
    return labels.drop("_line")
