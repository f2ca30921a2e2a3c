"""The model factory end to end, on a real Dagster instance, Delta lake, Optuna storage and MLflow
store: tuning with nested trial runs, candidates with lineage, the gate (also against a model
trained on deliberately degraded data), promotion, scoring by alias, rollback and the rebuild of
a version's training set after newer data was written."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from mlops_assets.cli import main as cli
from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.environment import build_resources
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.settings import Settings
from mlops_assets.tables import SCORED_TRANSACTIONS, TRANSACTION_FEATURES
from mlops_assets_tests.pipeline import (
    INGEST,
    TRAIN,
    checks,
    failure_text,
    materialize,
    metadata,
    training_config,
)

pytestmark = pytest.mark.slow

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(6)]
FIT_DAYS = DAYS[2:5]
HOLDOUT = DAYS[5]
NAME = "fraud_detector"
LINEAGE_KEYS = {
    "lineage.dagster_run_id",
    "lineage.dagster_run_url",
    "lineage.partition_range",
    "lineage.delta_version.transaction_features",
    "lineage.delta_version.validated_transactions",
    "lineage.contract_version",
    "lineage.contract_hash",
    "lineage.code_version",
    "lineage.optuna_study",
    "lineage.optuna_trial",
    "lineage.device",
    "lineage.training_rows",
    "lineage.training_hash",
}


@dataclass
class Factory:
    settings: Settings
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    runs: dict[str, dg.ExecuteInJobResult] = field(default_factory=dict)

    @property
    def client(self) -> MlflowClient:
        return self.resources["mlflow_tracking"].client()

    def champion(self) -> str:
        return str(self.client.get_model_version_by_alias(NAME, "champion").version)

    def train(self, name: str, resources: dict[str, Any] | None = None, **config: Any) -> None:
        self.runs[name] = materialize(
            TRAIN,
            resources or self.resources,
            self.instance,
            run_config=training_config(4, HOLDOUT, **config),
            raise_on_error=False,
        )

    def score(self, day: date) -> pl.DataFrame:
        result = materialize(["scored_transactions"], self.resources, self.instance, day)
        assert result.success
        return pl.from_arrow(self.resources["lake"].read(SCORED_TRANSACTIONS, days=[day]))


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    home = tmp_path_factory.mktemp("factory")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_HOME", str(home))  # the CLI commands read the same settings
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))  # and record on the same instance
    settings = Settings()
    config = GeneratorConfig(rows_per_day=3_000, seed=42, epoch=settings.paysim_epoch)
    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        state = Factory(settings, instance, build_resources(settings))
        for day in DAYS:
            write_day(day, config, settings.resolved_landing_uri)
            assert materialize(INGEST, state.resources, instance, day).success
        state.train("first")
        yield state
    mp.undo()


def test_the_first_model_is_gated_on_minimums_and_promoted(factory: Factory) -> None:
    run = factory.runs["first"]
    assert run.success, failure_text(run)
    gate = metadata(run, "challenger_model")
    champion = metadata(run, "champion_model")
    assert gate["gate_decision"] == "passed"
    assert gate["champion_version"] == -1
    assert checks(run)["beats_champion"].passed
    assert champion["model_version"] == gate["model_version"]
    assert factory.champion() == str(champion["model_version"])
    # the challenger is the better candidate on the holdout
    candidates = [metadata(run, f"{f}_candidate") for f in ("xgboost", "mlp")]
    best = max(candidates, key=lambda c: c["pr_auc"])
    assert gate["model_version"] == best["model_version"]
    assert best["pr_auc"] > 5 * best["holdout_fraud_rate"]


def test_every_candidate_is_a_version_with_full_lineage_linked_both_ways(factory: Factory) -> None:
    run = factory.runs["first"]
    training = metadata(run, "training_set")
    for family in ("xgboost", "mlp"):
        candidate = metadata(run, f"{family}_candidate")
        version = factory.client.get_model_version(NAME, str(candidate["model_version"]))
        tags = version.tags
        assert set(tags) >= LINEAGE_KEYS, LINEAGE_KEYS - set(tags)
        assert tags["model_family"] == family
        assert tags["lineage.dagster_run_id"] == run.run_id
        assert tags["lineage.dagster_run_url"].endswith(f"/runs/{run.run_id}")
        assert tags["lineage.partition_range"] == f"{FIT_DAYS[0]}..{HOLDOUT}"
        assert tags["lineage.training_hash"] == training["content_hash"]
        assert tags["lineage.device"] == "cpu"
        assert tags["lineage.optuna_study"] == f"{NAME}-{family}"
        assert float(tags["threshold"]) == pytest.approx(candidate["threshold"])
        # a demo-sized set is within the default memory budget: trained in memory
        assert candidate["training_data_path"] == tags["training_data_path"] == "in_memory"
        # Dagster -> MLflow
        assert candidate["mlflow_model_version"].endswith(f"/versions/{version.version}")
        mlflow_run = factory.client.get_run(candidate["mlflow_run_id"])
        assert mlflow_run.data.tags["dagster.run_id"] == run.run_id
        artifacts = {
            a.path for a in factory.client.list_artifacts(mlflow_run.info.run_id, "evaluation")
        }
        assert {"evaluation/pr_curve.png", "evaluation/confusion_matrix.png"} <= artifacts
        for metric in ("pr_auc", "roc_auc", "recall_at_precision", "f1", "threshold"):
            assert metric in mlflow_run.data.metrics


def test_every_trial_is_a_nested_run_under_its_tuning_run(factory: Factory) -> None:
    tuning = metadata(factory.runs["first"], "xgboost_tuning")
    parent = factory.client.get_run(tuning["mlflow_run_id"])
    children = factory.client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == tuning["trials_this_run"] == 2
    assert {c.data.tags["optuna.trial_number"] for c in children} == {"0", "1"}
    assert all("max_depth" in c.data.params for c in children)
    assert tuning["best_params"] and 0 < tuning["best_tuning_pr_auc"] <= 1


def test_scoring_uses_the_champion(factory: Factory) -> None:
    scores = factory.score(HOLDOUT)
    assert scores["model_version"].unique().to_list() == [int(factory.champion())]


def _degrade_fit_days(factory: Factory) -> None:
    """Shuffle the fraud labels of the fit days (the holdout stays true)."""
    lake = factory.resources["lake"]
    features = pl.from_arrow(lake.read(TRANSACTION_FEATURES, days=FIT_DAYS))
    shuffled = np.random.default_rng(0).permutation(features["isFraud"].to_numpy())
    degraded = features.with_columns(pl.Series("isFraud", shuffled, dtype=pl.Int32))
    lake.overwrite_days(TRANSACTION_FEATURES, degraded.to_arrow(), FIT_DAYS[0], FIT_DAYS[-1])


def test_a_model_trained_on_degraded_data_never_replaces_the_champion(factory: Factory) -> None:
    champion = factory.champion()
    _degrade_fit_days(factory)
    factory.train("degraded")
    run = factory.runs["degraded"]
    assert not run.success
    assert "beats_champion" in failure_text(run)
    gate = metadata(run, "challenger_model")
    assert gate["gate_decision"] == "blocked"
    assert gate["champion_version"] == int(champion)
    assert gate["gate_challenger_value"] < gate["gate_champion_value"]
    assert not checks(run)["beats_champion"].passed
    assert "champion_model" not in {
        e.asset_key.to_user_string() for e in run.get_asset_materialization_events()
    }
    assert factory.champion() == champion
    blocked = factory.client.get_model_version(NAME, str(gate["model_version"]))
    assert blocked.tags["gate.decision"] == "blocked"
    assert str(gate["model_version"]) == str(
        factory.client.get_model_version_by_alias(NAME, "challenger").version
    )
    # the study went on where the first run left it
    assert metadata(run, "xgboost_tuning")["trials_total"] == 4
    # scoring still uses the old champion
    assert factory.score(HOLDOUT)["model_version"].unique().to_list() == [int(champion)]


def test_a_version_that_never_passed_the_gate_cannot_be_promoted_or_rolled_back_to(
    factory: Factory,
) -> None:
    blocked = metadata(factory.runs["degraded"], "challenger_model")["model_version"]
    promoted = materialize(
        ["champion_model"], factory.resources, factory.instance, raise_on_error=False
    )
    assert not promoted.success
    assert f"version {blocked} cannot become champion: its gate decision is blocked" in (
        failure_text(promoted)
    )
    assert cli(["rollback", str(blocked)]) == 1


def test_the_champion_training_set_is_rebuilt_exactly_after_newer_data(
    factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    champion = factory.champion()
    tags = factory.client.get_model_version(NAME, champion).tags
    current = factory.resources["lake"].version(TRANSACTION_FEATURES)
    assert current > int(tags["lineage.delta_version.transaction_features"])  # degraded since
    assert cli(["rebuild-training-set", "--version", champion]) == 0
    out = capsys.readouterr().out
    assert "VERIFIED: identical" in out
    assert tags["lineage.training_hash"] in out
    # the degraded version's set is rebuilt from its own (later) table version
    degraded = str(metadata(factory.runs["degraded"], "challenger_model")["model_version"])
    assert cli(["rebuild-training-set", "--version", degraded]) == 0


def test_promotion_then_rollback_move_scores_and_leave_a_record(factory: Factory) -> None:
    first = factory.champion()
    # restore the true labels; the same tuned parameters then train the same models, which
    # tie with the champion: with a zero margin the tie is promoted
    for day in FIT_DAYS:
        assert materialize(
            ["transaction_features"], factory.resources, factory.instance, day
        ).success
    tie = {**factory.resources, "policy": PipelinePolicy(gate_margin=0.0)}
    factory.runs["retrained"] = materialize(
        [k for k in TRAIN if not k.endswith("_tuning")],
        tie,
        factory.instance,
        run_config={"ops": {"training_set": training_config(4, HOLDOUT)["ops"]["training_set"]}},
        raise_on_error=False,
    )
    run = factory.runs["retrained"]
    assert run.success, failure_text(run)
    second = factory.champion()
    assert second != first
    assert metadata(run, "champion_model")["previous_version"] == int(first)
    assert factory.score(HOLDOUT)["model_version"].unique().to_list() == [int(second)]

    assert cli(["rollback", first, "--reason", "test rollback"]) == 0
    assert factory.champion() == first
    record = factory.client.get_model_version(NAME, first).tags
    assert record["promotion_kind"] == "rollback"
    assert record["rollback.from_version"] == second
    assert record["rollback.reason"] == "test rollback"
    assert factory.client.get_model_version(NAME, second).tags["replaced_by"] == first
    assert factory.score(HOLDOUT)["model_version"].unique().to_list() == [int(first)]
