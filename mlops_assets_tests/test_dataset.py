"""Training sets pinned to Delta versions: chosen by time, hashed, rebuilt by time travel."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS
from mlops_assets.train.dataset import (
    content_hash,
    select_training_set,
    verify_training_set,
)
from mlops_assets_tests.helpers import feature_days, validated_day

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(6)]
CONFIG = GeneratorConfig(rows_per_day=1_500, seed=3)


@pytest.fixture
def lake(tmp_path: Path) -> DeltaLake:
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    for day in DAYS:
        lake.overwrite_day(VALIDATED_TRANSACTIONS, validated_day(day, CONFIG).to_arrow(), day)
    features = feature_days(DAYS, CONFIG)
    lake.overwrite_days(TRANSACTION_FEATURES, features.to_arrow(), DAYS[1], DAYS[-1])
    return lake


def test_the_window_is_split_by_time_and_pinned(lake: DeltaLake) -> None:
    selected = select_training_set(lake, window_days=4, holdout_days=1)
    spec = selected.spec
    assert spec.fit_days == tuple(d.isoformat() for d in DAYS[2:5])
    assert spec.holdout_days == (DAYS[5].isoformat(),)
    assert spec.train_days == spec.fit_days[:-1] and spec.tuning_days == spec.fit_days[-1:]
    assert spec.features_version == lake.version(TRANSACTION_FEATURES)
    assert (
        spec.rows
        == len(selected.frame)
        == (len(selected.train) + len(selected.tuning) + len(selected.holdout))
    )
    assert set(selected.holdout["txn_date"]) == {DAYS[5].isoformat()}


def test_the_first_day_without_history_is_never_chosen(lake: DeltaLake) -> None:
    # DAYS[0] has validated rows but no features; DAYS[1]'s history (DAYS[0]) is complete
    selected = select_training_set(lake, window_days=10, holdout_days=1)
    assert selected.spec.fit_days[0] == DAYS[1].isoformat()


def test_the_hash_ignores_row_order_but_not_values(lake: DeltaLake) -> None:
    frame = select_training_set(lake, window_days=3, holdout_days=1).frame
    shuffled = frame.sample(frac=1.0, random_state=1)
    assert content_hash(shuffled) == content_hash(frame)
    changed = frame.copy()
    changed.loc[changed.index[0], "amount"] += 0.01
    assert content_hash(changed) != content_hash(frame)


def test_time_travel_rebuilds_the_set_after_newer_data_was_written(lake: DeltaLake) -> None:
    spec = select_training_set(lake, window_days=4, holdout_days=1).spec
    # newer data lands in the same days: relabelled rows and a re-run of a day's features
    features = pl.from_arrow(lake.read(TRANSACTION_FEATURES, days=[DAYS[3]]))
    relabelled = features.with_columns(
        pl.Series("isFraud", np.random.default_rng(0).permutation(features["isFraud"].to_numpy()))
    )
    lake.overwrite_days(TRANSACTION_FEATURES, relabelled.to_arrow(), DAYS[3], DAYS[3])
    assert lake.version(TRANSACTION_FEATURES) > spec.features_version

    verified = verify_training_set(lake, spec)
    assert verified.matches
    assert verified.rows == spec.rows and verified.content_hash == spec.content_hash
    # read at the current version, the same window is different data
    current = select_training_set(lake, window_days=4, holdout_days=1).spec
    assert current.content_hash != spec.content_hash


def test_too_few_days_are_refused_with_what_was_found(lake: DeltaLake) -> None:
    with pytest.raises(ValueError, match="found 1"):
        select_training_set(lake, window_days=3, holdout_days=1, end=DAYS[1])
