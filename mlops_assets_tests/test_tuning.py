"""Optuna studies: persistent and resumable, pruned by the real XGBoost callback."""

from __future__ import annotations

import contextlib
from datetime import date, timedelta
from pathlib import Path

import optuna
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.features.definition import LABEL_COLUMN
from mlops_assets.train.families import XGBoostFamily
from mlops_assets.train.tuning import open_study, redacted, run_study
from mlops_assets_tests.helpers import feature_days

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(5)]


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = feature_days(DAYS, GeneratorConfig(rows_per_day=4_000, seed=11)).to_pandas()
    frame["txn_date"] = frame["txn_date"].dt.date
    return frame[frame["txn_date"] < DAYS[4]], frame[frame["txn_date"] == DAYS[4]]


def objective_for(family: XGBoostFamily, train: pd.DataFrame, valid: pd.DataFrame):
    def objective(trial: optuna.Trial) -> float:
        model = family.fit(train, family.suggest(trial), validation=valid, trial=trial)
        return float(average_precision_score(valid[LABEL_COLUMN], family.scores(model, valid)))

    return objective


def no_recording(trial: optuna.Trial) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def test_a_study_resumes_from_its_storage(tmp_path: Path, data) -> None:
    url = f"sqlite:///{tmp_path / 'optuna' / 'optuna.db'}"
    family = XGBoostFamily(threads=2)
    objective = objective_for(family, *data)
    lines: list[str] = []
    first = run_study(
        open_study("fraud-xgboost", url), objective, 2, None, no_recording, lines.append
    )
    assert first.trials_total == 2 and len(first.trials_this_run) == 2
    assert any("trial 1 [2/2]" in line for line in lines)

    # a new process would open the same study by name: the trials so far are kept
    second = run_study(open_study("fraud-xgboost", url), objective, 2, None, no_recording)
    assert second.trials_total == 4
    assert [t.number for t in second.trials_this_run] == [2, 3]
    # the resumed sampler drew new candidates instead of repeating the first ones
    assert second.trials_this_run[0].params != first.trials_this_run[0].params
    assert second.best_value >= first.best_value
    assert 0.0 < second.best_value <= 1.0
    assert set(second.best_params) == {
        "n_estimators",
        "max_depth",
        "learning_rate",
        "subsample",
        "colsample_bytree",
        "min_child_weight",
        "reg_lambda",
    }
    assert second.importances and sum(second.importances.values()) == pytest.approx(1.0)


def test_a_hopeless_trial_is_pruned_by_the_xgboost_callback(tmp_path: Path, data) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    good = {
        "n_estimators": 100,
        "max_depth": 6,
        "learning_rate": 0.3,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "min_child_weight": 1.0,
        "reg_lambda": 1.0,
    }
    # shallow trees learning 15x slower on subsamples stay below the median of good trials
    hopeless = {
        **good,
        "max_depth": 3,
        "learning_rate": 0.02,
        "colsample_bytree": 0.6,
        "subsample": 0.6,
        "min_child_weight": 10.0,
    }
    study = open_study("pruning", url, warmup_steps=5)
    for params in (good, good, good, hopeless):
        study.enqueue_trial(params)
    outcome = run_study(
        study, objective_for(XGBoostFamily(threads=2), *data), 4, None, no_recording
    )
    states = [t.state for t in outcome.trials_this_run]
    assert states[:3] == ["COMPLETE"] * 3
    assert states[3] == "PRUNED"
    assert outcome.pruned_this_run == 1
    pruned = study.trials[3]
    assert pruned.intermediate_values and max(pruned.intermediate_values) < 100


def test_a_study_with_no_finished_trial_says_so(tmp_path: Path) -> None:
    def always_pruned(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        raise optuna.TrialPruned()

    study = open_study("empty", f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(RuntimeError, match="no completed trial yet"):
        run_study(study, always_pruned, 2, None, no_recording)
    with pytest.raises(ValueError, match="at least 1"):
        run_study(study, always_pruned, 0, None, no_recording)


def test_storage_urls_are_shown_without_passwords() -> None:
    assert redacted("postgresql+psycopg2://optuna:s3cret@db:5432/optuna") == (
        "postgresql+psycopg2://optuna:***@db:5432/optuna"
    )
    assert redacted("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"


def _open_storage(url: str) -> str:
    from mlops_assets.train.tuning import storage_for

    storage_for(url)
    return "ok"


def test_processes_opening_a_fresh_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Both tuning steps of the first training run (multiprocess executor) create the schema."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'optuna' / 'optuna.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.map(_open_storage, [url] * 4) == ["ok"] * 4
