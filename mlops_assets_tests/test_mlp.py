"""The Keras MLP: it learns the generator's fraud signal, repeats itself, carries its own
preprocessing, works with optuna's pruning callback and survives an MLflow round trip."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import keras
import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from optuna_integration import KerasPruningCallback

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.features.definition import LABEL_COLUMN
from mlops_assets.train.metrics import best_f1_threshold, evaluate
from mlops_assets.train.mlp import (
    INPUT_COLUMNS,
    VALIDATION_METRIC,
    MlpParams,
    fit_mlp,
    load_mlp,
    log_mlp,
    mlp_scores,
)
from mlops_assets_tests.helpers import feature_days

D = [date(2026, 1, 1) + timedelta(days=i) for i in range(5)]
QUICK = MlpParams(epochs=2, batch_size=256)


@pytest.fixture(scope="module")
def days() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three days to fit on, the next day held out (the generator's real fraud signal)."""
    frame = feature_days(D, GeneratorConfig(rows_per_day=4_000, seed=5)).to_pandas()
    frame["txn_date"] = frame["txn_date"].dt.date
    return frame[frame["txn_date"] < D[4]], frame[frame["txn_date"] >= D[4]]


@pytest.fixture(scope="module")
def model(days: tuple[pd.DataFrame, pd.DataFrame]) -> keras.Model:
    train, _ = days
    return fit_mlp(train, train[LABEL_COLUMN], MlpParams(epochs=4, batch_size=256))


def raw_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the model's input columns, shuffled, with an unseen and a missing transaction type."""
    rows = frame[list(reversed(INPUT_COLUMNS))].head(200).copy()
    rows.loc[rows.index[0], "type"] = None
    rows.loc[rows.index[2], "type"] = "CRYPTO"
    return rows


def test_model_learns_the_fraud_signal_of_later_days(
    model: keras.Model, days: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, holdout = days
    labels = holdout[LABEL_COLUMN].to_numpy()
    scores = mlp_scores(model, holdout)
    assert scores.shape == labels.shape
    assert scores.dtype == np.float64
    metrics = evaluate(labels, scores, best_f1_threshold(labels, scores))
    assert metrics.pr_auc > 20 * metrics.fraud_rate  # about 0.75 against a 0.45 % fraud rate
    assert metrics.roc_auc > 0.95


def test_same_seed_and_data_give_the_same_model(days: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, holdout = days
    first = mlp_scores(fit_mlp(train, train[LABEL_COLUMN], QUICK), holdout)
    second = mlp_scores(fit_mlp(train, train[LABEL_COLUMN], QUICK), holdout)
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-7)
    other_seed = MlpParams(epochs=QUICK.epochs, batch_size=QUICK.batch_size, seed=QUICK.seed + 1)
    reseeded = mlp_scores(fit_mlp(train, train[LABEL_COLUMN], other_seed), holdout)
    assert np.abs(first - reseeded).max() > 1e-4


def test_preprocessing_lives_inside_the_model(
    model: keras.Model, days: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, holdout = days
    normalize = model.get_layer("normalize")
    assert isinstance(normalize, keras.layers.Normalization)
    assert np.isfinite(keras.ops.convert_to_numpy(normalize.mean)).all()
    assert isinstance(model.get_layer("type_one_hot"), keras.layers.StringLookup)

    rows = raw_rows(holdout)
    scores = mlp_scores(model, rows)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    # Column order and extra columns do not matter; the model picks its inputs by name.
    np.testing.assert_array_equal(scores[3:], mlp_scores(model, holdout.head(200))[3:])


def test_single_class_training_data_is_refused_clearly(
    days: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = days
    legit = train[train[LABEL_COLUMN] == 0]
    with pytest.raises(ValueError, match="only one class"):
        fit_mlp(legit, legit[LABEL_COLUMN], QUICK)


def test_missing_feature_values_are_refused_clearly(
    days: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = days
    broken = train.copy()
    broken.loc[broken.index[0], "amount"] = np.nan
    with pytest.raises(ValueError, match=r"\['amount'\] hold missing"):
        fit_mlp(broken, broken[LABEL_COLUMN], QUICK)


def test_optuna_pruning_callback_sees_the_validation_metric(
    days: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, holdout = days
    validation = (holdout, holdout[LABEL_COLUMN])
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    fit_mlp(
        train,
        train[LABEL_COLUMN],
        QUICK,
        validation=validation,
        callbacks=[KerasPruningCallback(trial, VALIDATION_METRIC)],
    )
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == [0, 1]
    assert all(0 < value <= 1 for value in reported.values())

    # A pruner that stops everything stops the fit after the first epoch.
    pruning = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0)
    )
    doomed = pruning.ask()
    with pytest.raises(optuna.TrialPruned, match="epoch 0"):
        fit_mlp(
            train,
            train[LABEL_COLUMN],
            QUICK,
            validation=validation,
            callbacks=[KerasPruningCallback(doomed, VALIDATION_METRIC)],
        )
    assert list(pruning.trials[0].intermediate_values) == [0]


@pytest.fixture
def local_mlflow(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite MLflow store with artifacts under ``tmp_path``; yields an experiment id."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        yield mlflow.create_experiment("mlp", artifact_location=(tmp_path / "artifacts").as_uri())
    finally:
        mlflow.set_tracking_uri(previous)


def test_logged_model_scores_raw_rows_like_the_trained_one(
    model: keras.Model, days: tuple[pd.DataFrame, pd.DataFrame], local_mlflow: str
) -> None:
    _, holdout = days
    with mlflow.start_run(experiment_id=local_mlflow):
        info = log_mlp(model, "model", input_example=holdout.head(5))

    loaded = load_mlp(info.model_uri)
    np.testing.assert_allclose(
        mlp_scores(loaded, holdout), mlp_scores(model, holdout), rtol=0, atol=1e-6
    )
    rows = raw_rows(holdout)
    np.testing.assert_allclose(mlp_scores(loaded, rows), mlp_scores(model, rows), atol=1e-6)

    # Generic MLflow consumers (pyfunc, model serving) get the same scores from a DataFrame
    # (given a default index and string types: MLflow reads row label 0, Keras rejects None).
    served_rows = rows.iloc[2:].reset_index(drop=True)
    served = mlflow.pyfunc.load_model(info.model_uri).predict(served_rows)
    np.testing.assert_allclose(
        np.asarray(served).reshape(-1), mlp_scores(model, served_rows), atol=1e-6
    )
