"""Quality per segment: a segment the model misses is named, a small one is not judged."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mlops_assets.monitor.segments import (
    SegmentRule,
    band_labels,
    segment_quality,
    segments_markdown,
    weak_segments,
)
from mlops_assets.settings import Settings


def _rows(kind: str, amount: float, fraud: int, caught: int, legit: int, false_alarms: int):
    """``fraud`` frauds of which ``caught`` flagged, ``legit`` legit of which ``false_alarms``
    flagged."""
    labels = [1] * fraud + [0] * legit
    flagged = [True] * caught + [False] * (fraud - caught)
    flagged += [True] * false_alarms + [False] * (legit - false_alarms)
    n = len(labels)
    return {
        "type": [kind] * n,
        "amount": [amount] * n,
        "isFraud": labels,
        "is_fraud_predicted": flagged,
    }


def _frame(*parts: dict) -> pl.DataFrame:
    return pl.concat([pl.DataFrame(p) for p in parts])


def test_a_segment_whose_recall_falls_far_below_the_whole_is_named() -> None:
    frame = _frame(
        _rows("CASH_OUT", 500.0, fraud=100, caught=90, legit=1000, false_alarms=10),
        _rows("TRANSFER", 2_000_000.0, fraud=40, caught=8, legit=500, false_alarms=0),
        _rows("PAYMENT", 50.0, fraud=3, caught=0, legit=2000, false_alarms=0),  # too few
    )
    segments = segment_quality(frame)
    overall = float(np.mean([98 / 143]))
    weak = weak_segments(segments, overall, SegmentRule(max_recall_drop=0.25, min_fraud_rows=20))
    assert [(s.dimension, s.segment) for s in weak] == [
        ("type", "TRANSFER"),
        ("amount_band", ">=1M"),
    ]
    transfer = next(s for s in segments if s.segment == "TRANSFER")
    assert transfer.rows == 540 and transfer.fraud_rows == 40
    assert transfer.recall == pytest.approx(0.2) and transfer.precision == pytest.approx(1.0)
    assert transfer.flagged_share == pytest.approx(8 / 540)
    payment = next(s for s in segments if s.segment == "PAYMENT")
    assert payment.precision != payment.precision  # nothing flagged: NaN, not 0
    assert payment.as_dict()["precision"] is None  # JSON metadata has no NaN
    table = segments_markdown(segments, weak)
    assert "| type | TRANSFER | 540 | 40 |" in table and "recall far below" in table
    assert (
        "| type | PAYMENT |" in table
        and "recall far below" not in table.split("PAYMENT")[1].split("\n")[0]
    )


def test_bands_cover_every_amount_in_order() -> None:
    assert band_labels() == ["0-1k", "1k-10k", "10k-100k", "100k-1M", ">=1M"]
    frame = pl.DataFrame(
        {
            "type": ["PAYMENT"] * 6,
            "amount": [0.0, 999.99, 1000.0, 99_999.0, 100_000.0, 5e6],
            "isFraud": [0] * 6,
            "is_fraud_predicted": [False] * 6,
        }
    )
    bands = [s for s in segment_quality(frame) if s.dimension == "amount_band"]
    assert [(s.segment, s.rows) for s in bands] == [
        ("0-1k", 2), ("1k-10k", 1), ("10k-100k", 1), ("100k-1M", 1), (">=1M", 1)
    ]  # fmt: skip


def test_bands_come_from_the_policy() -> None:
    frame = pl.DataFrame(
        {
            "type": ["PAYMENT"] * 3,
            "amount": [10.0, 150.0, 900.0],
            "isFraud": [0, 0, 1],
            "is_fraud_predicted": [False, False, True],
        }
    )
    bands = [s for s in segment_quality(frame, (100.0, 500.0)) if s.dimension == "amount_band"]
    assert [(s.segment, s.rows, s.fraud_rows) for s in bands] == [
        ("0-100", 1, 0), ("100-500", 1, 0), (">=500", 1, 1)
    ]  # fmt: skip
    assert bands[2].recall == 1.0 and bands[0].as_dict()["recall"] is None


def test_segment_rules_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="segment_recall_drop must be in"):
        SegmentRule(max_recall_drop=0)
    with pytest.raises(ValueError, match="segment_min_fraud_rows must be >= 1"):
        SegmentRule(min_fraud_rows=0)
    with pytest.raises(ValueError, match="segment_amount_bands must be positive upper bounds"):
        SegmentRule(amount_bands=(10_000.0, 1_000.0))
    # from the environment: a JSON list, checked when the settings load
    monkeypatch.setenv("MLOPS_SEGMENT_AMOUNT_BANDS", "[500, 5000]")
    assert Settings().segment_amount_bands == [500.0, 5000.0]
    monkeypatch.setenv("MLOPS_SEGMENT_AMOUNT_BANDS", "[5000, 500]")
    with pytest.raises(ValueError, match="MLOPS_SEGMENT_AMOUNT_BANDS must be positive"):
        Settings()
