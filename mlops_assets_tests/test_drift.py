"""Tests for ``mlops_assets.monitor.drift`` against the real Evidently (no mocks)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mlops_assets.monitor.drift import (
    ColumnDrift,
    DriftSummary,
    compute_drift,
    drift_severity,
    top_drifted,
)

N_ROWS = 3_000
NUMERICAL = ["amount", "customer_age"]
CATEGORICAL = ["merchant_category", "channel"]
SHIFTED = {"amount", "merchant_category"}


def make_transactions(
    seed: int,
    n: int = N_ROWS,
    amount_mean: float = 3.0,
    merchant_mix: tuple[float, ...] = (0.5, 0.3, 0.2),
) -> pd.DataFrame:
    """Synthetic card transactions; ``amount_mean``/``merchant_mix`` control the shift."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(mean=amount_mean, sigma=1.0, size=n),
            "customer_age": rng.normal(40.0, 12.0, size=n),
            "merchant_category": rng.choice(
                ["grocery", "travel", "online"], size=n, p=list(merchant_mix)
            ),
            "channel": rng.choice(["pos", "web", "app"], size=n, p=[0.6, 0.3, 0.1]),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """Reference window."""
    return make_transactions(seed=0)


@pytest.fixture(scope="module")
def shifted_summary(reference: pd.DataFrame) -> DriftSummary:
    """Current window with a +0.6 lognormal mean on amount and a changed merchant mix."""
    current = make_transactions(seed=1, amount_mean=3.6, merchant_mix=(0.2, 0.3, 0.5))
    return compute_drift(reference, current, NUMERICAL, CATEGORICAL)


@pytest.fixture(scope="module")
def stable_summary(reference: pd.DataFrame) -> DriftSummary:
    """Current window drawn from the reference distribution with another seed."""
    return compute_drift(reference, make_transactions(seed=2), NUMERICAL, CATEGORICAL)


def test_shifted_columns_are_flagged(shifted_summary: DriftSummary) -> None:
    s = shifted_summary
    assert {c.column for c in s.columns if c.drifted} == SHIFTED
    assert (s.drifted_columns, s.total_columns) == (2, 4)
    assert s.drift_share == pytest.approx(0.5)
    assert s.dataset_drift
    # Most drifted first: the two shifted columns lead the list.
    assert {c.column for c in s.columns[:2]} == SHIFTED
    assert (s.reference_rows, s.current_rows, s.sampled) == (N_ROWS, N_ROWS, False)


def test_stattests_chosen_for_large_reference(shifted_summary: DriftSummary) -> None:
    by_column = {c.column: c for c in shifted_summary.columns}
    assert by_column["amount"].stattest == "Wasserstein distance (normed)"
    assert by_column["merchant_category"].stattest == "Jensen-Shannon distance"
    assert all(c.threshold == pytest.approx(0.1) for c in shifted_summary.columns)
    assert by_column["amount"].score > by_column["amount"].threshold


def test_same_distribution_is_not_flagged(stable_summary: DriftSummary) -> None:
    assert stable_summary.drift_share < 0.5
    assert not stable_summary.dataset_drift
    assert stable_summary.drifted_columns == 0
    assert all(not c.drifted and c.score < c.threshold for c in stable_summary.columns)


def test_html_is_full_report(shifted_summary: DriftSummary) -> None:
    html = shifted_summary.html
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "</html>" in html.lower()
    assert len(html) > 10_000
    assert all(column in html for column in [*NUMERICAL, *CATEGORICAL])


def test_top_drifted(shifted_summary: DriftSummary, stable_summary: DriftSummary) -> None:
    top = top_drifted(shifted_summary, n=2)
    assert set(top) == SHIFTED
    assert top["amount"] == next(c.score for c in shifted_summary.columns if c.column == "amount")
    assert len(top_drifted(shifted_summary)) == 4
    assert top_drifted(stable_summary, only_drifted=True) == {}


def test_downsampling_sets_sampled_and_switches_to_p_values(
    reference: pd.DataFrame,
) -> None:
    current = make_transactions(seed=1, amount_mean=3.6, merchant_mix=(0.2, 0.3, 0.5))
    s = compute_drift(reference, current, NUMERICAL, CATEGORICAL, max_rows=1_000, seed=7)
    assert s.sampled
    assert (s.reference_rows, s.current_rows) == (1_000, 1_000)
    # <= 1000 reference rows: Evidently switches to p-value tests (lower score = drift).
    by_column = {c.column: c for c in s.columns}
    assert by_column["amount"].stattest == "K-S p_value"
    assert by_column["merchant_category"].stattest == "chi-square p_value"
    assert {c.column for c in s.columns if c.drifted} == SHIFTED
    assert {c.column for c in s.columns[:2]} == SHIFTED


def test_awkward_columns_are_handled(reference: pd.DataFrame) -> None:
    """Constant, all-NaN, nullable Int64 (with NA) and bool columns don't break the run."""

    def add_awkward(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        flag = pd.array(rng.integers(0, 3, N_ROWS), dtype="Int64")
        flag[:10] = pd.NA
        return frame.assign(
            constant=1.0,
            blank=np.nan,
            dev_flag=flag,
            is_foreign=rng.random(N_ROWS) < 0.1,
        )

    extra = ["constant", "blank", "dev_flag", "is_foreign"]
    ref, cur = add_awkward(reference, 10), add_awkward(make_transactions(seed=2), 11)
    s = compute_drift(ref, cur, [*NUMERICAL, *extra], CATEGORICAL)
    by_column = {c.column: c for c in s.columns}
    assert not by_column["constant"].drifted
    assert by_column["constant"].score == pytest.approx(0.0)
    blank = by_column["blank"]
    assert blank.stattest.startswith("not tested") and math.isnan(blank.score) and not blank.drifted
    assert s.columns[-1] is blank  # untested columns go last
    assert s.total_columns == 7  # tested columns only
    assert s.drifted_columns == 0
    assert "blank" not in top_drifted(s, n=10)


def test_missing_column_error_names_it(reference: pd.DataFrame) -> None:
    current = make_transactions(seed=1).drop(columns=["channel"])
    with pytest.raises(ValueError, match=r"current frame: \['channel', 'device_type'\]") as exc:
        compute_drift(reference, current, NUMERICAL, [*CATEGORICAL, "device_type"])
    assert "reference frame: ['device_type']" in str(exc.value)


@pytest.mark.parametrize("which", ["reference", "current"])
def test_empty_frame_is_rejected(reference: pd.DataFrame, which: str) -> None:
    frames = {"reference": reference, "current": reference}
    frames[which] = reference.iloc[0:0]
    with pytest.raises(ValueError, match=f"{which} frame is empty"):
        compute_drift(frames["reference"], frames["current"], NUMERICAL, CATEGORICAL)


def test_invalid_column_specs_are_rejected(reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="non-numeric"):
        compute_drift(reference, reference, ["merchant_category"], [])
    with pytest.raises(ValueError, match="more than once"):
        compute_drift(reference, reference, ["amount"], ["amount"])
    with pytest.raises(ValueError, match="no columns"):
        compute_drift(reference, reference, [], [])


def test_severity_is_comparable_across_test_families() -> None:
    at_threshold_p = ColumnDrift("a", "K-S p_value", 0.05, 0.05, True)
    at_threshold_d = ColumnDrift("b", "Wasserstein distance (normed)", 0.1, 0.1, True)
    assert drift_severity(at_threshold_p) == pytest.approx(1.0)
    assert drift_severity(at_threshold_d) == pytest.approx(1.0)
    tiny_p = ColumnDrift("c", "chi-square p_value", 0.0, 0.05, True)
    assert math.isfinite(drift_severity(tiny_p)) and drift_severity(tiny_p) > 100
    assert drift_severity(ColumnDrift("d", "K-S p_value", 1.0, 0.05, False)) == 0.0
    assert drift_severity(ColumnDrift("e", "not tested", math.nan, math.nan, False)) == -math.inf


def test_module_import_does_not_load_evidently() -> None:
    code = "import sys, mlops_assets.monitor.drift; assert 'evidently' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
