"""The A/B comparison of served versions: figures per version and day, significance that needs
enough rows, and verdicts in words (the asset over a real served log is tested with the canary,
test_canary.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from mlops_assets.monitor.ab_report import (
    champion_of,
    compare,
    quality_worse,
    two_proportion_p_value,
    version_figures,
)
from mlops_assets.monitor.ab_report_assets import model_ab_report
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import SERVED_PREDICTIONS
from mlops_assets_tests.pipeline import failure_text

DAY = date(2026, 1, 5)


def _served(version: int, alias: str, n: int, flag_rate: float, seed: int, day: date = DAY):
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    return pl.DataFrame(
        {
            "transaction_id": [f"v{version}-{day}-{i}" for i in range(n)],
            "txn_date": [day] * n,
            "model_version": [version] * n,
            "model_alias": [alias] * n,
            "fraud_score": scores,
            "is_fraud_predicted": scores < flag_rate,
            "served_at": [
                datetime(2026, 1, 5, tzinfo=UTC) + timedelta(seconds=i) for i in range(n)
            ],
        }
    )


@pytest.mark.parametrize(("rows", "significant"), [(5000, True), (300, False), (30, False)])
def test_a_version_that_flags_twice_as_much_is_significant_only_with_enough_rows(
    rows: int, significant: bool
) -> None:
    served = pl.concat([_served(3, "champion", rows, 0.02, 1), _served(4, "canary", rows, 0.04, 2)])
    _, window = version_figures(
        served, pl.DataFrame(schema={"transaction_id": pl.String, "isFraud": pl.Int64})
    )
    champion = champion_of(window)
    assert champion.version == 3
    (canary,) = [f for f in window if f.version == 4]
    comparison = compare(champion, canary)
    flagged = next(d for d in comparison.differences if d.metric == "flagged_share")
    assert flagged.significant is significant
    assert "insufficient labels" in comparison.verdict
    if significant:
        assert comparison.verdict.startswith("v4 flags significantly more")
    else:
        assert comparison.verdict.startswith("no significant difference")


def test_recall_is_compared_on_labelled_frauds_and_retries_count_once() -> None:
    champion = _served(3, "champion", 4000, 0.0, 1)
    canary = _served(4, "canary", 4000, 0.0, 2)

    # 200 frauds each: the champion catches 160, the canary 80
    def label(frame: pl.DataFrame, caught: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        ids = frame["transaction_id"]
        fraud = pl.Series([i < 200 for i in range(frame.height)])
        flagged = pl.Series([i < caught for i in range(frame.height)])
        return frame.with_columns(is_fraud_predicted=flagged), pl.DataFrame(
            {"transaction_id": ids, "isFraud": fraud.cast(pl.Int64)}
        )

    champion, champion_labels = label(champion, 160)
    canary, canary_labels = label(canary, 80)
    retry = canary.head(10).with_columns(pl.col("served_at") + timedelta(minutes=5))
    per_day, window = version_figures(
        pl.concat([champion, canary, retry]), pl.concat([champion_labels, canary_labels])
    )
    figures = {f.version: f for f in window}
    assert figures[4].volume == 4000  # the retried answers count once
    assert figures[3].recall == pytest.approx(0.8) and figures[4].recall == pytest.approx(0.4)
    assert figures[3].precision == pytest.approx(1.0)
    assert [(f.version, f.day) for f in per_day] == [(3, str(DAY)), (4, str(DAY))]
    comparison = compare(figures[3], figures[4])
    assert [d.metric for d in quality_worse(comparison)] == ["recall"]
    assert "v4 has recall significantly lower (0.400 vs 0.800" in comparison.verdict


def test_the_two_proportion_test() -> None:
    assert two_proportion_p_value(50, 100, 50, 100) == pytest.approx(1.0)
    assert two_proportion_p_value(100, 5000, 200, 5000) < 1e-6
    assert two_proportion_p_value(0, 100, 0, 100) == 1.0


def test_nothing_served_in_the_window_is_a_clear_failure(tmp_path: Path) -> None:
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    with dg.instance_for_test() as instance:

        def run(config: dict | None = None) -> dg.ExecuteInJobResult:
            return dg.materialize(
                [model_ab_report],
                resources={"lake": lake},
                instance=instance,
                run_config={"ops": {"model_ab_report": {"config": config or {}}}},
                raise_on_error=False,
            )

        empty = run()
        assert not empty.success
        assert "served_predictions is empty" in failure_text(empty)
        lake.overwrite_day(SERVED_PREDICTIONS, _served(3, "champion", 10, 0.1, 1).to_arrow(), DAY)
        elsewhere = run({"window_days": 3, "end_date": "2026-02-01"})
        assert not elsewhere.success
        assert f"no day in 2026-01-30..2026-02-01 (it has {DAY}..{DAY})" in failure_text(elsewhere)
