"""Quality per segment: how the model did per transaction type and amount band, and which
segment's recall falls far below the whole (pure logic, no Dagster).

A model can keep its overall figures while missing one kind of fraud (large transfers, say):
the overall recall hides it. Each segment gets its rows, fraud rows, flagged share, precision
and recall; a segment is *weak* when its recall is more than ``max_recall_drop`` (absolute)
below the overall recall and it holds at least ``min_fraud_rows`` fraud labels, so that a
segment with three frauds cannot raise an alarm by chance.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


#: upper bounds of the amount bands (the last band is open)
AMOUNT_BANDS: tuple[float, ...] = (1_000.0, 10_000.0, 100_000.0, 1_000_000.0)


@dataclass(frozen=True)
class SegmentRule:
    max_recall_drop: float = 0.25
    min_fraud_rows: int = 20
    amount_bands: tuple[float, ...] = AMOUNT_BANDS

    def __post_init__(self) -> None:
        bands = self.amount_bands
        if not bands or bands[0] <= 0 or any(b <= a for a, b in itertools.pairwise(bands)):
            raise ValueError(
                "segment_amount_bands must be positive upper bounds in increasing order, e.g. "
                f"[1000, 10000, 100000, 1000000]; got {list(bands)}"
            )
        if not 0 < self.max_recall_drop <= 1:
            raise ValueError(
                f"segment_recall_drop must be in (0, 1] (absolute recall), got "
                f"{self.max_recall_drop}"
            )
        if self.min_fraud_rows < 1:
            raise ValueError(f"segment_min_fraud_rows must be >= 1, got {self.min_fraud_rows}")


@dataclass(frozen=True)
class SegmentQuality:
    dimension: str  # "type" | "amount_band"
    segment: str
    rows: int
    fraud_rows: int
    flagged_share: float
    precision: float  # NaN when nothing was flagged
    recall: float  # NaN without fraud labels

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: an undefined figure (NaN) becomes None, as JSON has no NaN."""
        return {k: None if v != v else v for k, v in asdict(self).items()}


def band_labels(bands: tuple[float, ...] = AMOUNT_BANDS) -> list[str]:
    edges = [0.0, *bands]
    labels = [f"{_short(lo)}-{_short(hi)}" for lo, hi in itertools.pairwise(edges)]
    return [*labels, f">={_short(bands[-1])}"]


def _short(value: float) -> str:
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def amount_band(amount: pl.Expr, bands: tuple[float, ...] = AMOUNT_BANDS) -> pl.Expr:
    """The band label of each amount."""
    import polars as pl

    labels = band_labels(bands)
    expression = pl.lit(labels[-1])
    for bound, label in reversed(list(zip(bands, labels, strict=False))):
        expression = pl.when(amount < bound).then(pl.lit(label)).otherwise(expression)
    return expression


def segment_quality(
    frame: pl.DataFrame, bands: tuple[float, ...] = AMOUNT_BANDS
) -> list[SegmentQuality]:
    """Per type and per amount band, from labelled rows with columns ``type``, ``amount``,
    ``isFraud`` and ``is_fraud_predicted``."""
    import polars as pl

    labelled = frame.with_columns(
        amount_band(pl.col("amount"), bands).alias("amount_band"),
        pl.col("isFraud").cast(pl.Int64).alias("_fraud"),
        pl.col("is_fraud_predicted").cast(pl.Int64).alias("_flagged"),
    )
    order = {label: i for i, label in enumerate(band_labels(bands))}
    segments: list[SegmentQuality] = []
    for dimension in ("type", "amount_band"):
        grouped = labelled.group_by(dimension).agg(
            pl.len().alias("rows"),
            pl.col("_fraud").sum().alias("fraud"),
            pl.col("_flagged").sum().alias("flagged"),
            (pl.col("_fraud") * pl.col("_flagged")).sum().alias("caught"),
        )
        rows = sorted(
            grouped.iter_rows(named=True),
            key=lambda r: (
                order.get(r[dimension], 0) if dimension == "amount_band" else r[dimension]
            ),
        )
        for row in rows:
            segments.append(
                SegmentQuality(
                    dimension=dimension,
                    segment=str(row[dimension]),
                    rows=int(row["rows"]),
                    fraud_rows=int(row["fraud"]),
                    flagged_share=row["flagged"] / row["rows"],
                    precision=row["caught"] / row["flagged"] if row["flagged"] else float("nan"),
                    recall=row["caught"] / row["fraud"] if row["fraud"] else float("nan"),
                )
            )
    return segments


def weak_segments(
    segments: list[SegmentQuality], overall_recall: float, rule: SegmentRule
) -> list[SegmentQuality]:
    """The segments whose recall is more than the rule's drop below the overall recall."""
    return [
        s
        for s in segments
        if s.fraud_rows >= rule.min_fraud_rows and overall_recall - s.recall > rule.max_recall_drop
    ]


def segments_markdown(segments: list[SegmentQuality], weak: list[SegmentQuality]) -> str:
    flagged = {(s.dimension, s.segment) for s in weak}
    lines = [
        "| dimension | segment | rows | fraud | flagged share | precision | recall | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in segments:
        mark = "**recall far below the whole**" if (s.dimension, s.segment) in flagged else ""
        lines.append(
            f"| {s.dimension} | {s.segment} | {s.rows} | {s.fraud_rows} | "
            f"{s.flagged_share:.2%} | {_figure(s.precision)} | {_figure(s.recall)} | {mark} |"
        )
    return "\n".join(lines)


def _figure(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"
