"""XGBoost trained from batches of rows: an ``xgboost.DataIter`` into an ``ExtMemQuantileDMatrix``.

Why ``ExtMemQuantileDMatrix`` (xgboost 3.2): it is XGBoost's external-memory matrix for the
``hist`` trees this project trains, on the CPU as on a GPU. Building it reads the iterator a
few times (3 passes on the CPU: quantile sketch, then the quantised pages), each pass one batch
at a time; the quantised pages go to a cache on disk under the iterator's ``cache_prefix``, and
training reads them from there. A ``QuantileDMatrix`` from the same iterator reads batch by batch
too but keeps the whole quantised matrix in memory (a byte or more per value), so it bounds only
the raw batches. ``cache_host_ratio`` (how much of the cache a GPU keeps in host memory) and
``on_host`` / ``min_cache_page_bytes`` concern only the GPU implementation and are left at
XGBoost's defaults.

The booster trains with ``xgboost.train`` on the same parameters an ``XGBClassifier`` would pass
(``get_xgb_params``) and is then loaded into an ``XGBClassifier``, so the rest of the factory
(scoring, MLflow logging, ONNX export, explanations) sees the same kind of model as from the
in-memory fit. The batches carry the feature columns by name, in the in-memory order, as float64
(``model_inputs``), so the model's feature names and types are the in-memory model's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN
from mlops_assets.train.model import DEFAULT_PARAMS, model_inputs

#: a source of batches: called once per pass, each call yields the fit rows anew
BatchSource = Callable[[], Iterable[pd.DataFrame]]


@dataclass(frozen=True)
class BatchStats:
    """What the iterator handed XGBoost: per pass ``rows`` rows in ``batches / passes`` batches."""

    passes: int
    batches: int
    max_batch_rows: int
    rows: int
    positives: int

    def as_metadata(self) -> dict[str, int]:
        return {
            "passes": self.passes,
            "batches": self.batches,
            "max_batch_rows": self.max_batch_rows,
            "rows": self.rows,
            "positives": self.positives,
        }


class FrameBatches(xgb.DataIter):
    """Hands XGBoost one batch at a time: the model inputs (``FEATURE_COLUMNS`` as float64) and
    labels of the frames ``source()`` yields, calling ``source`` again at every pass."""

    def __init__(self, source: BatchSource, cache_prefix: str) -> None:
        self._source = source
        self._current: Iterator[pd.DataFrame] | None = None
        self.passes = 0
        self.batches = 0
        self.max_batch_rows = 0
        self.rows = 0
        self.positives = 0
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def reset(self) -> None:
        self._close()

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._current is None:
            self._current = iter(self._source())
            self.passes += 1
        for frame in self._current:
            if not len(frame):
                continue
            labels = frame[LABEL_COLUMN].to_numpy(dtype=np.float64)
            if self.passes == 1:
                self.rows += len(frame)
                self.positives += int(labels.sum())
            self.batches += 1
            self.max_batch_rows = max(self.max_batch_rows, len(frame))
            input_data(data=model_inputs(frame, FEATURE_COLUMNS), label=labels)
            return True
        self._close()
        return False

    def _close(self) -> None:
        close = getattr(self._current, "close", None)
        if close is not None:
            close()
        self._current = None

    def stats(self) -> BatchStats:
        return BatchStats(
            passes=self.passes,
            batches=self.batches,
            max_batch_rows=self.max_batch_rows,
            rows=self.rows,
            positives=self.positives,
        )


@dataclass
class ExternalMatrix:
    """An ``ExtMemQuantileDMatrix`` and what its iterator read (``matrix`` is None once closed)."""

    matrix: xgb.DMatrix | None
    stats: BatchStats


@contextmanager
def external_memory_matrix(
    source: BatchSource,
    threads: int | None = None,
    max_bin: int | None = None,
    cache_dir: str | None = None,
) -> Iterator[ExternalMatrix]:
    """The fit rows of ``source`` as an ``ExtMemQuantileDMatrix`` whose pages are cached in a
    temporary directory (under ``cache_dir``, default the system's temporary directory), freed
    and removed on exit. One matrix can train several boosters (the trials of a study)."""
    with tempfile.TemporaryDirectory(prefix="xgboost-extmem-", dir=cache_dir) as tmp:
        batches = FrameBatches(source, str(Path(tmp) / "cache"))
        built = ExternalMatrix(
            matrix=xgb.ExtMemQuantileDMatrix(batches, nthread=threads, max_bin=max_bin),
            stats=batches.stats(),
        )
        try:
            yield built
        finally:
            built.matrix = None  # frees the pages before their directory is removed


def fit_on_matrix(
    matrix: xgb.DMatrix,
    params: dict[str, Any] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    validation: tuple[pd.DataFrame, pd.Series] | None = None,
    callbacks: Sequence[Any] = (),
) -> xgb.XGBClassifier:
    """An ``XGBClassifier`` trained on ``matrix`` with the parameters ``fit_xgboost`` uses;
    with ``validation`` its PR-AUC is evaluated every round as ``validation_0-aucpr``."""
    model = xgb.XGBClassifier(**{**DEFAULT_PARAMS, **(params or {})}, n_jobs=threads, device=device)
    native = {k: v for k, v in model.get_xgb_params().items() if v is not None}
    evals = []
    if validation is not None:
        features, labels = validation
        evals = [(xgb.DMatrix(features, label=labels, nthread=threads), "validation_0")]
    booster = xgb.train(
        native,
        matrix,
        num_boost_round=model.get_num_boosting_rounds(),
        evals=evals,
        verbose_eval=False,
        callbacks=list(callbacks) or None,
    )
    model.load_model(bytearray(booster.save_raw("ubj")))
    return model


def fit_xgboost_external(
    source: BatchSource,
    params: dict[str, Any] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    validation: tuple[pd.DataFrame, pd.Series] | None = None,
    callbacks: Sequence[Any] = (),
    cache_dir: str | None = None,
) -> tuple[xgb.XGBClassifier, BatchStats]:
    """Fit the classifier from batches of fit rows (``source``, called once per pass), like
    ``fit_xgboost`` fits it from one frame; also returns what the iterator read."""
    max_bin = (params or {}).get("max_bin")
    with external_memory_matrix(source, threads, max_bin, cache_dir) as built:
        stats = built.stats
        if stats.positives in (0, stats.rows):
            only = "no rows" if not stats.rows else f"only one class ({int(stats.positives > 0)})"
            raise ValueError(
                f"Training data has {only}; widen the training window so it contains fraud "
                "and non-fraud rows"
            )
        assert built.matrix is not None
        model = fit_on_matrix(built.matrix, params, threads, device, validation, callbacks)
    return model, stats
