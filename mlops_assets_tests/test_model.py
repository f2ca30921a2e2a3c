"""Training window, threshold and metrics; the model learns the generator's fraud signal."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN
from mlops_assets.train.metrics import best_f1_threshold, evaluate, recall_at_precision
from mlops_assets.train.model import fit_xgboost, fraud_scores, model_inputs
from mlops_assets.train.split import choose_window
from mlops_assets_tests.helpers import feature_days

D = [date(2026, 1, 1) + timedelta(days=i) for i in range(10)]


def test_window_takes_the_latest_days_and_holds_out_the_last() -> None:
    window = choose_window(D, window_days=4, holdout_days=1)
    assert window.fit_days == D[6:9]
    assert window.holdout_days == [D[9]]


def test_window_respects_end_date_and_gaps() -> None:
    available = [D[0], D[2], D[3], D[7]]
    window = choose_window(available, window_days=5, holdout_days=1, end=D[5])
    assert window.fit_days == [D[0], D[2]]
    assert window.holdout_days == [D[3]]


def test_window_errors_name_what_is_missing() -> None:
    with pytest.raises(ValueError, match="found 1"):
        choose_window([D[0]], window_days=3, holdout_days=1)
    with pytest.raises(ValueError, match="must exceed"):
        choose_window(D, window_days=2, holdout_days=2)


def test_best_f1_threshold_separates_perfectly_separable_scores() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    threshold = best_f1_threshold(labels, scores)
    assert 0.3 < threshold <= 0.8
    assert evaluate(labels, scores, threshold).f1 == 1.0


def test_single_class_data_is_refused_clearly() -> None:
    import pandas as pd

    with pytest.raises(ValueError, match="only one class"):
        fit_xgboost(pd.DataFrame({"x": [1.0, 2.0]}), pd.Series([0, 0]))
    with pytest.raises(ValueError, match="single class"):
        evaluate(np.array([0, 0]), np.array([0.1, 0.2]), 0.5)


def test_model_beats_the_trivial_baseline_on_later_days() -> None:
    config = GeneratorConfig(rows_per_day=6_000, seed=5)
    frame = feature_days(D[:6], config).to_pandas()
    frame["txn_date"] = frame["txn_date"].dt.date
    train = frame[frame["txn_date"] < D[4]]
    holdout = frame[frame["txn_date"] >= D[4]]
    model = fit_xgboost(model_inputs(train, FEATURE_COLUMNS), train[LABEL_COLUMN], threads=2)
    scores = fraud_scores(model, model_inputs(holdout, FEATURE_COLUMNS))
    labels = holdout[LABEL_COLUMN].to_numpy()
    metrics = evaluate(labels, scores, best_f1_threshold(labels, scores))
    assert metrics.pr_auc > 10 * metrics.fraud_rate
    assert metrics.roc_auc > 0.9
    assert metrics.pr_auc < 1.0  # imperfect on purpose


def test_recall_at_precision_is_the_best_recall_meeting_the_precision() -> None:
    labels = np.array([1, 1, 0, 1, 0, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    # precision stays 1.0 down to 0.8 (recall 0.5); 0.75 at 0.6 (recall 0.75); 0.5 at 0.2
    assert recall_at_precision(labels, scores, 1.0) == 0.5
    assert recall_at_precision(labels, scores, 0.75) == 0.75
    assert recall_at_precision(labels, scores, 0.5) == 1.0
    assert evaluate(labels, scores, 0.55, target_precision=0.75).recall_at_precision == 0.75
