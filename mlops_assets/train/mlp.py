"""A Keras MLP fraud classifier whose preprocessing lives inside the saved model.

The model takes the raw feature columns (one input per column, named after it) and returns the
probability of fraud. Inside it: a signed ``log1p`` that tames the heavy-tailed amounts and
balances, a ``Normalization`` adapted on the training rows, and a one-hot ``StringLookup`` of the
transaction ``type`` with an out-of-vocabulary bucket for types it has never seen. A loaded model
therefore needs nothing else at serving time.

Training runs those (weightless) preprocessing layers once over the whole training set and fits
the dense layers on the resulting matrix, so an epoch costs what a bare ``fit`` on numeric arrays
costs; the returned model chains the same preprocessing layers and the same dense layers.

TensorFlow takes seconds to import: only training code imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import keras
import mlflow
import mlflow.tensorflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import Schema, TensorSpec

from mlops_assets.features.definition import FEATURE_COLUMNS
from mlops_assets.paysim import TRANSACTION_TYPES
from mlops_assets.train.device import TrainingDevice, tensorflow_training_device

CATEGORY_COLUMN = "type"
#: The model's inputs: the numeric features, then the transaction type.
INPUT_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, CATEGORY_COLUMN)
#: What ``fit`` logs for the validation data after each epoch (PR-AUC, higher is better):
#: the metric to monitor for pruning or early stopping.
VALIDATION_METRIC = "val_pr_auc"
_PREDICT_BATCH = 65_536
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MlpParams:
    """Hyperparameters of the MLP and of its training."""

    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 1024
    epochs: int = 10
    positive_weight: float | None = None
    """Loss weight of a fraud row relative to a legitimate one. ``None``: the square root of the
    legitimate-to-fraud ratio of the training labels (the full ratio over-corrects)."""
    seed: int = 7
    deterministic: bool = True
    """Make TensorFlow's ops deterministic (same seed and data, same model). Process-wide."""

    def as_dict(self) -> dict[str, Any]:
        """Flat values for ``mlflow.log_params``."""
        values = asdict(self)
        values["hidden_units"] = "-".join(str(units) for units in self.hidden_units)
        return values


def fit_mlp(
    train: pd.DataFrame,
    labels: pd.Series | np.ndarray,
    params: MlpParams | None = None,
    validation: tuple[pd.DataFrame, pd.Series | np.ndarray] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    verbose: int = 0,
) -> keras.Model:
    """Fit the MLP on raw feature rows (``INPUT_COLUMNS``) and their 0/1 labels.

    With ``validation``, each epoch logs ``val_loss`` and :data:`VALIDATION_METRIC` for the
    ``callbacks`` (e.g. optuna's ``KerasPruningCallback``). Callbacks see the dense part of the
    model, whose weights the returned model shares. Training runs where
    :func:`~mlops_assets.train.device.tensorflow_training_device` says: record that as the run's
    ``lineage.device``.
    """
    params = params or MlpParams()
    y = _labels(labels)
    classes = np.unique(y).astype(int).tolist()
    if len(classes) < 2:
        raise ValueError(
            f"Training data has only one class ({classes}); "
            "widen the training window so it contains fraud and non-fraud rows"
        )
    device = tensorflow_training_device()
    _log.info("Fitting the MLP on %s (%s)", device.tag(), device.detail)
    _seed(params)
    with _placement(device):
        logged, types = _raw_tensors(train)
        normalize, one_hot = _preprocessing_layers(logged)
        features = _join(normalize(logged), one_hot(types))
        classifier = _classifier(features.shape[-1], params)
        validation_data = None
        if validation is not None:
            frame, validation_labels = validation
            validation_data = (
                _features(normalize, one_hot, frame),
                _labels(validation_labels),
            )
        classifier.fit(
            features,
            y,
            sample_weight=_sample_weights(y, params.positive_weight),
            batch_size=params.batch_size,
            epochs=params.epochs,
            validation_data=validation_data,
            callbacks=list(callbacks or []),
            shuffle=True,
            verbose=verbose,
        )
    return _end_to_end(normalize, one_hot, classifier)


def mlp_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's inputs: one 1-D array per column, float32 features and the type as ``str``."""
    inputs = {column: frame[column].to_numpy(dtype=np.float32) for column in FEATURE_COLUMNS}
    inputs[CATEGORY_COLUMN] = _types(frame)
    return inputs


def mlp_scores(model: keras.Model, frame: pd.DataFrame) -> np.ndarray:
    """Probability of fraud for each raw row (``INPUT_COLUMNS``), as a 1-D float64 array."""
    if len(frame) == 0:
        return np.empty(0, dtype=np.float64)
    inputs: dict[str, Any] = mlp_inputs(frame)
    inputs[CATEGORY_COLUMN] = tf.constant(inputs[CATEGORY_COLUMN], dtype=tf.string)
    scores = model.predict(inputs, batch_size=_PREDICT_BATCH, verbose=0)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def mlp_signature() -> ModelSignature:
    """The MLflow signature: one named 1-D tensor per input column, a fraud probability out."""
    columns = [TensorSpec(np.dtype(np.float32), (-1,), column) for column in FEATURE_COLUMNS]
    category = TensorSpec(np.dtype(object), (-1,), CATEGORY_COLUMN)
    output = TensorSpec(np.dtype(np.float32), (-1, 1), "fraud_probability")
    return ModelSignature(inputs=Schema([*columns, category]), outputs=Schema([output]))


def mlp_requirements() -> list[str]:
    """Pinned runtime requirements of the logged model (skips MLflow's slow inference)."""
    return [
        f"{_installed_tensorflow()}=={tf.__version__}",
        *(f"{name}=={version(name)}" for name in ("keras", "numpy", "pandas")),
    ]


def log_mlp(
    model: keras.Model,
    name: str,
    input_example: pd.DataFrame,
    pip_requirements: list[str] | None = None,
    **kwargs: Any,
) -> ModelInfo:
    """Log the model to the active MLflow run; returns the logged model's info.

    Uses MLflow's ``tensorflow`` flavour, which stores the Keras 3 model as a ``.keras`` file and
    loads it back with Keras 3 (``mlflow.keras`` cannot save an input example in MLflow 3.17,
    mlflow/mlflow#16183). ``input_example`` holds raw rows; only ``INPUT_COLUMNS`` are kept.
    Other keyword arguments (``model_type``, ``registered_model_name``...) go to
    ``mlflow.tensorflow.log_model``.
    """
    return mlflow.tensorflow.log_model(
        model,
        name=name,
        signature=mlp_signature(),
        input_example=input_example[list(INPUT_COLUMNS)],
        pip_requirements=pip_requirements or mlp_requirements(),
        **kwargs,
    )


def load_mlp(model_uri: str) -> keras.Model:
    """Load a model logged by :func:`log_mlp`; score it with :func:`mlp_scores`."""
    return mlflow.tensorflow.load_model(model_uri)


def _installed_tensorflow() -> str:
    """The name of the installed TensorFlow distribution (``tensorflow-cpu`` here)."""
    for distribution in ("tensorflow", "tensorflow-cpu"):
        try:
            version(distribution)
        except PackageNotFoundError:
            continue
        return distribution
    return "tensorflow"


def _labels(labels: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.float32).reshape(-1)


def _types(frame: pd.DataFrame) -> np.ndarray:
    """The type column as ``str`` objects, missing values as the empty (unknown) type."""
    return frame[CATEGORY_COLUMN].to_numpy(dtype=object, na_value="")


def _seed(params: MlpParams) -> None:
    """Seed Python, NumPy and the backend; optionally make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()


def _placement(device: TrainingDevice) -> contextlib.AbstractContextManager[Any]:
    """Pin the CPU when that is the device; otherwise let TensorFlow place ops (GPU first)."""
    if device.kind == "cpu":
        return tf.device("/CPU:0")
    return contextlib.nullcontext()


def _signed_log1p(x: Any) -> Any:
    """``sign(x) * log(1 + |x|)``: compresses heavy tails, keeps sign and order, maps 0 to 0."""
    return keras.ops.sign(x) * keras.ops.log1p(keras.ops.abs(x))


def _join(scaled: Any, one_hot: Any) -> Any:
    """The dense layers' input: scaled numeric features, then the one-hot type."""
    return keras.ops.concatenate([scaled, one_hot], axis=1)


def _raw_tensors(frame: pd.DataFrame) -> tuple[tf.Tensor, tf.Tensor]:
    """The signed-log numeric matrix and the type strings of all rows, in one pass each."""
    numeric = frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32)
    _require_finite(numeric)
    return _signed_log1p(tf.constant(numeric)), tf.constant(_types(frame), dtype=tf.string)


def _require_finite(numeric: np.ndarray) -> None:
    """Refuse missing or infinite feature values: they would poison the normalisation."""
    finite = np.isfinite(numeric).all(axis=0)
    if not finite.all():
        columns = [column for column, ok in zip(FEATURE_COLUMNS, finite, strict=True) if not ok]
        raise ValueError(
            f"Feature columns {columns} hold missing or infinite values; "
            "the MLP needs finite numeric features"
        )


def _preprocessing_layers(
    logged: tf.Tensor,
) -> tuple[keras.layers.Normalization, keras.layers.StringLookup]:
    """The normalisation adapted on the training rows and the type's one-hot lookup."""
    normalize = keras.layers.Normalization(name="normalize")
    normalize.adapt(logged)
    one_hot = keras.layers.StringLookup(
        vocabulary=list(TRANSACTION_TYPES),
        num_oov_indices=1,
        output_mode="one_hot",
        name="type_one_hot",
    )
    return normalize, one_hot


def _features(
    normalize: keras.layers.Normalization,
    one_hot: keras.layers.StringLookup,
    frame: pd.DataFrame,
) -> tf.Tensor:
    """The dense layers' input for raw rows, computed by the model's own preprocessing layers."""
    logged, types = _raw_tensors(frame)
    return _join(normalize(logged), one_hot(types))


def _classifier(width: int, params: MlpParams) -> keras.Model:
    """The trainable dense layers, compiled for binary cross-entropy and PR-AUC."""
    features = keras.Input(shape=(width,), name="features")
    hidden = features
    for index, units in enumerate(params.hidden_units):
        hidden = keras.layers.Dense(units, activation="relu", name=f"dense_{index}")(hidden)
        if params.dropout > 0:
            hidden = keras.layers.Dropout(params.dropout, name=f"dropout_{index}")(hidden)
    probability = keras.layers.Dense(1, activation="sigmoid", name="fraud_probability")(hidden)
    model = keras.Model(features, probability, name="classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(curve="PR", name="pr_auc")],
    )
    return model


def _end_to_end(
    normalize: keras.layers.Normalization,
    one_hot: keras.layers.StringLookup,
    classifier: keras.Model,
) -> keras.Model:
    """Raw columns in, fraud probability out: the preprocessing layers, then the classifier."""
    raw = {column: keras.Input(shape=(), name=column) for column in FEATURE_COLUMNS}
    raw[CATEGORY_COLUMN] = keras.Input(shape=(), name=CATEGORY_COLUMN, dtype="string")
    numeric = keras.ops.stack([raw[column] for column in FEATURE_COLUMNS], axis=1)
    features = _join(normalize(_signed_log1p(numeric)), one_hot(raw[CATEGORY_COLUMN]))
    return keras.Model(raw, classifier(features), name="fraud_mlp")


def _sample_weights(labels: np.ndarray, positive_weight: float | None) -> np.ndarray:
    """Weight 1 for legitimate rows and ``positive_weight`` for fraud rows."""
    if positive_weight is None:
        positives = float(labels.sum())
        positive_weight = math.sqrt((len(labels) - positives) / positives)
    return np.where(labels > 0.5, positive_weight, 1.0).astype(np.float32)
