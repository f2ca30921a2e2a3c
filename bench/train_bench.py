"""Training benchmark: seconds per XGBoost trial and per MLP epoch inside the platform, against
the bare library call on the same rows in the same run.

Inside the platform means the real ``xgboost_tuning`` and ``mlp_tuning`` assets, materialized by
Dagster on an ephemeral instance: the training set read back from Delta at its pinned version,
an Optuna trial in SQLite storage with its pruning callback, a nested MLflow run per trial in a
SQLite store. The trials are enqueued with fixed parameters so that the bare calls train exactly
the same models:

* XGBoost: ``XGBClassifier(**same params).fit(X, y, eval_set=[tuning day])`` and scoring the
  tuning day (what a trial computes); a fit without the evaluation set is printed too;
* MLP: the same dense network (``keras.Model.fit`` on the already-numeric float32 matrix, same
  batch size, epochs, sample weights and validation data), per epoch.

Usage: ``.venv/bin/python bench/train_bench.py [--rows 1000000] [--strict]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

TARGET = 1.2
XGB_PARAMS = {
    "n_estimators": 100,
    "max_depth": 6,
    "learning_rate": 0.1,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "min_child_weight": 1.0,
    "reg_lambda": 1.0,
}
MLP_PARAMS = {"hidden_units": "64-32", "dropout": 0.1, "learning_rate": 1e-3, "batch_size": 1024}
EPOCHS = 4


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def build_lake(lake: Any, rows_per_day: int, days: list[date]) -> None:
    """Validated rows for every day and features for all but the first, written to the lake."""
    import polars as pl

    from mlops_assets.datagen import GeneratorConfig
    from mlops_assets.features.duckdb_engine import compute_features_duckdb
    from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mlops_assets_tests.helpers import validated_day

    config = GeneratorConfig(rows_per_day=rows_per_day, seed=3)
    validated = {}
    for day in days:
        validated[day] = validated_day(day, config)
        lake.overwrite_day(VALIDATED_TRANSACTIONS, validated[day].to_arrow(), day)
    for previous, day in itertools.pairwise(days):
        both = pl.concat([validated[previous], validated[day]]).to_arrow()
        lake.overwrite_days(TRANSACTION_FEATURES, compute_features_duckdb(both, day), day, day)


def trial_seconds(study: Any, numbers: set[int]) -> list[float]:
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.trials
        if t.number in numbers and t.datetime_complete is not None
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="training rows (default 1M)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating pairs (default 2)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mlops-train-bench-"))
    os.environ["MLOPS_HOME"] = str(work / "home")
    os.environ.setdefault("MLOPS_PARTITIONS_START", "2026-01-01")
    import dagster as dg

    from mlops_assets.definitions import ALL_ASSETS, build_definitions

    # 5 training days + the tuning day + the holdout day, and a day of history before them
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(8)]
    per_day = args.rows // 5
    defs = build_definitions()
    resources = defs.resources
    print(f"Generating {len(days)} days x {per_day:,} rows ...", flush=True)
    seconds, _ = timed(lambda: build_lake(resources["lake"], per_day, days))
    print(f"  {seconds:.0f}s", flush=True)
    instance = dg.DagsterInstance.ephemeral()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def materialize(key: str, config: dict[str, Any]) -> None:
        result = dg.materialize(
            ALL_ASSETS,
            selection=[key],
            resources=resources,
            instance=instance,
            run_config={"ops": {key: {"config": config}}, **quiet},
        )
        assert result.success

    materialize(
        "training_set", {"window_days": 7, "holdout_days": 1, "end_date": days[-1].isoformat()}
    )
    from mlops_assets.train.dataset import TrainingSetSpec, load_training_set

    event = instance.get_latest_materialization_event(dg.AssetKey("training_set"))
    spec = TrainingSetSpec.from_metadata(event.asset_materialization.metadata["spec"].value)
    data = load_training_set(resources["lake"], spec)
    train, tuning = data.train, data.tuning
    print(f"Training rows {len(train):,}, tuning-day rows {len(tuning):,}", flush=True)

    # -- XGBoost: the bare call and a platform trial (enqueued fixed parameters), alternating
    storage = resources["optuna_storage"]
    xgb_pairs: list[tuple[float, float]] = []
    xgb_bare_no_eval = 0.0
    step = 0.0
    for _ in range(args.repeats):
        bare, xgb_bare_no_eval = bare_xgboost(train, tuning)
        study = storage.open_study("fraud_detector-xgboost")
        study.enqueue_trial(XGB_PARAMS)
        before = {t.number for t in study.trials if t.state.name != "WAITING"}
        step, _ = timed(lambda: materialize("xgboost_tuning", {"n_trials": 1}))
        study = storage.open_study("fraud_detector-xgboost")
        platform = trial_seconds(study, {t.number for t in study.trials} - before)[0]
        xgb_pairs.append((platform, bare))
        print(f"  XGBoost trial: platform {platform:.2f}s, bare {bare:.2f}s", flush=True)

    # -- MLP: the same, one trial of EPOCHS epochs against the bare network
    from mlops_assets.train import families
    from mlops_assets.train.assets import build_tuning_asset

    families.FAMILIES["mlp"] = families.MlpFamily(epochs=EPOCHS)
    others = [a for a in ALL_ASSETS if dg.AssetKey("mlp_tuning") not in a.keys]
    mlp_asset = build_tuning_asset(families.FAMILIES["mlp"])
    mlp_pairs: list[tuple[float, float]] = []
    mlp_trial = 0.0
    for _ in range(args.repeats):
        bare = bare_mlp(train, tuning)
        mlp_study = storage.open_study("fraud_detector-mlp")
        mlp_study.enqueue_trial(MLP_PARAMS)
        before = {t.number for t in mlp_study.trials if t.state.name != "WAITING"}
        result = dg.materialize(
            [*others, mlp_asset],
            selection=["mlp_tuning"],
            resources=resources,
            instance=instance,
            run_config={"ops": {"mlp_tuning": {"config": {"n_trials": 1}}}, **quiet},
        )
        assert result.success
        mlp_study = storage.open_study("fraud_detector-mlp")
        mlp_trial = trial_seconds(mlp_study, {t.number for t in mlp_study.trials} - before)[0]
        mlp_pairs.append((mlp_trial / EPOCHS, bare))
        print(f"  MLP epoch: platform {mlp_trial / EPOCHS:.2f}s, bare {bare:.2f}s", flush=True)

    xgb_platform, xgb_bare = min(p for p, _ in xgb_pairs), min(b for _, b in xgb_pairs)
    mlp_epoch, mlp_bare = min(p for p, _ in mlp_pairs), min(b for _, b in mlp_pairs)
    print()
    print(f"{'':<34}{'platform':>10}{'bare':>10}{'ratio':>8}")
    print(
        f"{'XGBoost trial (s)':<34}{xgb_platform:>10.2f}{xgb_bare:>10.2f}"
        f"{xgb_platform / xgb_bare:>8.2f}"
    )
    print(
        f"{'MLP epoch (s, trial / epochs)':<34}{mlp_epoch:>10.2f}{mlp_bare:>10.2f}"
        f"{mlp_epoch / mlp_bare:>8.2f}"
    )
    print()
    print(
        f"XGBoost: {len(train):,} rows, {XGB_PARAMS['n_estimators']} rounds, best of "
        f"{args.repeats} alternating pairs; the whole tuning step took {step:.1f}s (reading the "
        f"set, MLflow parent run, plots); a bare fit without the evaluation set takes "
        f"{xgb_bare_no_eval:.2f}s"
    )
    print(
        f"MLP: {EPOCHS} epochs, batch {MLP_PARAMS['batch_size']}; last platform trial "
        f"{mlp_trial:.2f}s, counted per epoch with its one-off preprocessing and the scoring of "
        "the tuning day"
    )
    targets = {
        f"XGBoost trial within {TARGET}x of bare": xgb_platform <= TARGET * xgb_bare,
        f"MLP epoch within {TARGET}x of bare": mlp_epoch <= TARGET * mlp_bare,
    }
    for target, met in targets.items():
        print(f"  {'PASS' if met else 'MISS'}  {target}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(targets.values()) or not args.strict else 1


def bare_xgboost(train: Any, tuning: Any) -> tuple[float, float]:
    """The same model trained by XGBoost directly: (with the evaluation set, without)."""
    import xgboost as xgb
    from sklearn.metrics import average_precision_score

    from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN
    from mlops_assets.train.model import DEFAULT_PARAMS

    x = train[list(FEATURE_COLUMNS)].astype("float64")
    y = train[LABEL_COLUMN]
    xv = tuning[list(FEATURE_COLUMNS)].astype("float64")
    yv = tuning[LABEL_COLUMN]
    params = {**DEFAULT_PARAMS, **XGB_PARAMS}

    def with_eval() -> float:
        model = xgb.XGBClassifier(**params)
        model.fit(x, y, eval_set=[(xv, yv)], verbose=False)
        return float(average_precision_score(yv, model.predict_proba(xv)[:, 1]))

    def without_eval() -> None:
        xgb.XGBClassifier(**params).fit(x, y)

    return timed(with_eval)[0], timed(without_eval)[0]


def bare_mlp(train: Any, tuning: Any) -> float:
    """Seconds per epoch of the same dense network fitted by Keras on a numeric matrix."""
    import keras
    import numpy as np

    from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN
    from mlops_assets.paysim import TRANSACTION_TYPES

    def matrix(frame: Any) -> np.ndarray:
        numeric = frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32)
        numeric = np.sign(numeric) * np.log1p(np.abs(numeric))
        numeric = (numeric - numeric.mean(axis=0)) / (numeric.std(axis=0) + 1e-6)
        one_hot = np.stack(
            [(frame["type"] == t).to_numpy(np.float32) for t in (*TRANSACTION_TYPES, "")], axis=1
        )
        return np.concatenate([numeric, one_hot], axis=1)

    x, xv = matrix(train), matrix(tuning)
    y = train[LABEL_COLUMN].to_numpy(np.float32)
    yv = tuning[LABEL_COLUMN].to_numpy(np.float32)
    weight = np.sqrt((len(y) - y.sum()) / y.sum())
    keras.utils.set_random_seed(7)
    inputs = keras.Input(shape=(x.shape[1],))
    hidden = keras.layers.Dropout(0.1)(keras.layers.Dense(64, activation="relu")(inputs))
    hidden = keras.layers.Dropout(0.1)(keras.layers.Dense(32, activation="relu")(hidden))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(curve="PR", name="pr_auc")],
    )
    seconds, _ = timed(
        lambda: model.fit(
            x,
            y,
            sample_weight=np.where(y > 0.5, weight, 1.0).astype(np.float32),
            batch_size=MLP_PARAMS["batch_size"],
            epochs=EPOCHS,
            validation_data=(xv, yv),
            verbose=0,
        )
    )
    return seconds / EPOCHS


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
