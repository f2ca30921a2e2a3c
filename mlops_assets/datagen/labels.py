"""Late label deliveries: which transactions of a day turned out to be fraud.

In real life a transaction's fraud label is known days later (chargebacks, investigations).
The demo models that with a separate file per transaction day, ``labels_<day>.csv``, landed
``label_delay_days`` after the day in the labels landing zone. Each row names a delivered
transaction by its ``transaction_id`` (``<transaction file stem>:<row>``, the id validation
gives it) and carries its ``isFraud`` label.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from mlops_assets.datagen.generator import (
    GeneratorConfig,
    _write_atomic,
    day_file_name,
    generate_day,
)


def label_file_name(day: date) -> str:
    """File name of a day's label delivery, e.g. ``labels_2026-01-01.csv``."""
    return f"labels_{day.isoformat()}.csv"


def generate_labels(day: date, config: GeneratorConfig, fmt: str = "csv") -> pl.DataFrame:
    """The true label of every transaction delivered for ``day`` (same generator, same rows)."""
    transactions = generate_day(day, config)
    stem = day_file_name(day, fmt).rsplit(".", 1)[0]
    return transactions.select(
        (pl.lit(f"{stem}:") + pl.int_range(1, transactions.height + 1).cast(pl.Utf8)).alias(
            "transaction_id"
        ),
        pl.col("isFraud").cast(pl.Utf8).cast(pl.Int8).alias("isFraud"),
    )


def write_labels(
    day: date, config: GeneratorConfig, labels_dir: str | Path, fmt: str = "csv"
) -> Path:
    """Land the label file of ``day`` atomically in ``labels_dir``."""
    target = Path(labels_dir) / label_file_name(day)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(generate_labels(day, config, fmt), target, "csv")
    return target
