"""Training sets over the memory budget: XGBoost trained from an external-memory iterator over the
pinned Delta partitions, checked against the in-memory fit on the same real tables."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import average_precision_score

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.environment import build_resources
from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.settings import Settings
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS
from mlops_assets.train.candidate_fit import TrainingSetChanged, fit_candidate
from mlops_assets.train.dataset import TrainingSet, TrainingSetSpec, select_training_set
from mlops_assets.train.external_memory import (
    FIT_ROW_BYTES,
    MIN_BATCH_ROWS,
    count_rows,
    feature_batches,
    plan_training_data,
    rechunk,
    stream_training_set,
)
from mlops_assets.train.families import FAMILIES, ExternalMemoryFamily, MlpFamily
from mlops_assets.train.xgboost_external import fit_xgboost_external
from mlops_assets_tests.helpers import feature_days, validated_day
from mlops_assets_tests.pipeline import failure_text, materialize, metadata

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(7)]
CONFIG = GeneratorConfig(rows_per_day=3_000, seed=11)
#: quick trees: the comparison is about the data path, not the model
PARAMS = {"n_estimators": 60, "max_depth": 5, "learning_rate": 0.15}
#: below the fit rows' estimated size (a few MB) and small enough for batches of 1,024 rows
SMALL_BUDGET_MB = 0.25
WINDOW = {"window_days": 6, "holdout_days": 1}


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extmem") / "lake"
    lake = DeltaLake(root_uri=str(root))
    for day in DAYS:
        lake.overwrite_day(VALIDATED_TRANSACTIONS, validated_day(day, CONFIG).to_arrow(), day)
    lake.overwrite_days(
        TRANSACTION_FEATURES, feature_days(DAYS, CONFIG).to_arrow(), DAYS[1], DAYS[-1]
    )
    return root


@pytest.fixture(scope="module")
def lake(lake_root: Path) -> DeltaLake:
    return DeltaLake(root_uri=str(lake_root))


@pytest.fixture(scope="module")
def selected(lake: DeltaLake) -> TrainingSet:
    return select_training_set(lake, **WINDOW)


def test_the_plan_trains_small_sets_in_memory_and_large_ones_in_batches() -> None:
    small = plan_training_data(fit_rows=100_000, budget_mb=2048)  # the demo's size
    assert small.path == "in_memory" and not small.over_budget
    large = plan_training_data(fit_rows=50_000_000, budget_mb=1024)
    assert large.path == "external_memory" and large.external
    assert large.estimated_mb == pytest.approx(50_000_000 * 200 * 10 / 2**20)
    # one batch's float64 matrix takes a quarter of the budget
    assert large.batch_rows * FIT_ROW_BYTES == pytest.approx(1024 * 2**20 / 4, rel=1e-3)
    assert "external-memory iterator" in large.describe("xgboost")
    # a family without an external-memory fit stays in memory, and says it is over budget
    mlp = plan_training_data(fit_rows=50_000_000, budget_mb=1024, external_supported=False)
    assert mlp.path == "in_memory" and mlp.over_budget
    assert "in memory only" in mlp.describe("mlp")
    assert plan_training_data(fit_rows=10, budget_mb=0).external  # 0: always in batches
    assert plan_training_data(fit_rows=10, budget_mb=0).batch_rows == MIN_BATCH_ROWS
    with pytest.raises(ValueError, match="0 MB or more"):
        plan_training_data(fit_rows=10, budget_mb=-1)


def test_rechunk_gives_batches_of_exactly_the_size_asked() -> None:
    sizes = [0, 5, 700, 1, 300, 2_000, 17]
    start = np.cumsum([0, *sizes])
    batches = [
        pa.record_batch({"v": pa.array(np.arange(first, first + n))})
        for first, n in zip(start[:-1], sizes, strict=True)
    ]
    chunks = list(rechunk(batches, 512))
    assert [c.num_rows for c in chunks] == [512] * 5 + [3023 - 5 * 512]
    values = np.concatenate([c.column("v").to_numpy() for c in chunks])
    assert values.tolist() == list(range(sum(sizes)))
    assert list(rechunk([], 512)) == []


def test_the_streamed_set_is_the_in_memory_set(lake: DeltaLake, selected: TrainingSet) -> None:
    spec = selected.spec
    streamed = stream_training_set(lake, spec, batch_rows=1_500, sample_rows=400)
    # verified batch by batch: the same count and content hash as the whole frame
    assert streamed.matches
    assert streamed.rows == spec.rows and streamed.content_hash == spec.content_hash
    assert streamed.batches > 1 and streamed.max_batch_rows == 1_500
    for name in ("tuning", "holdout"):
        whole = getattr(selected, name).reset_index(drop=True)
        assert getattr(streamed, name).equals(whole), name
    assert streamed.train_rows == len(selected.train)
    assert count_rows(lake, spec.train_days, spec.features_version) == len(selected.train)
    sample = streamed.train_sample
    assert 0 < len(sample) <= 400 and set(sample["txn_date"]) <= set(spec.train_days)
    assert set(sample["transaction_id"]) <= set(selected.train["transaction_id"])
    # another spec's record does not match
    changed = TrainingSetSpec(**{**spec.as_metadata(), "content_hash": "0" * 64})
    assert not stream_training_set(lake, changed, 1_500, 400).matches


def test_a_set_over_the_budget_trains_through_the_iterator_as_well_as_in_memory(
    lake: DeltaLake, selected: TrainingSet
) -> None:
    xgboost = FAMILIES["xgboost"]
    spec = selected.spec
    whole = fit_candidate(lake, spec, xgboost, PARAMS, budget_mb=2048, reference_rows=500)
    batched = fit_candidate(lake, spec, xgboost, PARAMS, SMALL_BUDGET_MB, reference_rows=500)
    assert whole.plan.path == "in_memory" and whole.batches is None
    assert batched.plan.path == "external_memory"
    fit_rows = len(selected.train)
    assert batched.plan.fit_rows == whole.plan.fit_rows == batched.train_rows == fit_rows
    stats = batched.batches
    assert stats is not None
    # every pass read the train days in several batches, none of them the whole set
    assert stats.rows == fit_rows and stats.positives == int(selected.train[LABEL_COLUMN].sum())
    assert stats.passes >= 2 and stats.batches >= stats.passes * (fit_rows // MIN_BATCH_ROWS)
    assert stats.max_batch_rows == batched.plan.batch_rows == MIN_BATCH_ROWS < fit_rows
    # the same holdout, the same kind of model, close in quality
    assert batched.holdout.equals(whole.holdout.reset_index(drop=True))
    assert batched.model.get_booster().feature_names == list(FEATURE_COLUMNS)
    assert batched.model.n_classes_ == 2
    labels = whole.holdout[LABEL_COLUMN].to_numpy()
    assert 0 < labels.sum() < len(labels)
    scores = {
        "in": xgboost.scores(whole.model, whole.holdout),
        "ext": xgboost.scores(batched.model, batched.holdout),
    }
    assert len(scores["ext"]) == len(labels) and np.isfinite(scores["ext"]).all()
    pr_auc = {name: average_precision_score(labels, s) for name, s in scores.items()}
    assert pr_auc["ext"] > 5 * labels.mean()
    assert pr_auc["ext"] == pytest.approx(pr_auc["in"], abs=0.05), pr_auc
    assert len(batched.reference) == 500 and len(batched.example) == 5
    # only XGBoost trains from batches; the MLP stays in memory (fit_candidate plans so)
    assert isinstance(xgboost, ExternalMemoryFamily)
    assert not isinstance(MlpFamily(), ExternalMemoryFamily)


def test_a_changed_set_is_refused_before_training(lake: DeltaLake, selected: TrainingSet) -> None:
    changed = TrainingSetSpec(**{**selected.spec.as_metadata(), "rows": selected.spec.rows + 1})
    for budget in (2048, SMALL_BUDGET_MB):
        with pytest.raises(TrainingSetChanged, match="no longer matches"):
            fit_candidate(lake, changed, FAMILIES["xgboost"], PARAMS, budget, 100)


def test_a_single_class_is_refused_on_the_external_path(lake: DeltaLake) -> None:
    spec = select_training_set(lake, **WINDOW).spec

    def legit_only() -> Any:
        for frame in feature_batches(lake, spec.train_days, spec.features_version, 2_000):
            yield frame[frame[LABEL_COLUMN] == 0]

    with pytest.raises(ValueError, match="only one class"):
        fit_xgboost_external(legit_only, PARAMS)


def test_the_candidate_asset_records_the_path_it_took(
    lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_LAKE_URI", str(lake_root))
    monkeypatch.setenv("MLOPS_TRAINING_MEMORY_BUDGET_MB", str(SMALL_BUDGET_MB))
    resources = build_resources(Settings())
    assert resources["policy"].training_memory_budget_mb == SMALL_BUDGET_MB
    run_config = {
        "ops": {
            "training_set": {"config": {**WINDOW, "end_date": DAYS[-1].isoformat()}},
            "xgboost_tuning": {"config": {"n_trials": 1}},
        }
    }
    with dg.instance_for_test() as instance:
        run = materialize(
            ["training_set", "xgboost_tuning", "xgboost_candidate"],
            resources,
            instance,
            run_config=run_config,
            raise_on_error=False,
        )
        assert run.success, failure_text(run)
        candidate = metadata(run, "xgboost_candidate")
        logs = [
            e.user_message
            for e in instance.all_logs(run.run_id)
            if e.step_key == "xgboost_candidate" and "external-memory iterator" in e.user_message
        ]
    assert candidate["training_data_path"] == "external_memory"
    figures = candidate["training_data"]
    assert figures["path"] == "external_memory" and figures["budget_mb"] == SMALL_BUDGET_MB
    assert figures["iterator"]["batches"] > figures["iterator"]["passes"]
    assert figures["iterator"]["max_batch_rows"] < figures["fit_rows"]
    assert logs, "the step log says which path was taken"
    assert candidate["onnx_parity"] == "passed"
    client = resources["mlflow_tracking"].client()
    assert client.get_run(candidate["mlflow_run_id"]).data.tags["training_data_path"] == (
        "external_memory"
    )
    version = client.get_model_version("fraud_detector", str(candidate["model_version"]))
    assert version.tags["training_data_path"] == "external_memory"
