"""Distributed tuning (issue 16): one Optuna study worked by several Dagster steps at once.

``xgboost_tuning`` is a graph asset: a step plans the shares, ``workers`` steps each run theirs
of the same study, a last step picks the best. Here the steps run under the multiprocess
executor the code location uses (one process each, forked from a server that has imported the
code location; one pod each under Kubernetes) against a real throwaway Postgres
(the production storage) and against the embedded SQLite default. Everything is read back
from the study's storage, MLflow and the instance: trials numbered once, run in several
processes, one nested MLflow run each, the best being the study's best. A worker that fails
mid-share (on SQLite) is re-executed from failure and runs only the rest of its share.

The step processes import this module (``dg.reconstructable``): it imports what the steps
need, not the whole code location. No ``from __future__ import annotations``: Dagster reads
the annotations of the assets.
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import optuna
import pytest

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.deployment import preloading_executor
from mlops_assets.environment import build_resources
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.settings import Settings
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS
from mlops_assets.train.assets import training_set
from mlops_assets.train.families import XGBoostFamily
from mlops_assets.train.tuning import split_trials
from mlops_assets.train.tuning_asset import SESSION_ATTR, WORKER_ATTR, build_tuning_asset
from mlops_assets_tests.helpers import feature_days, validated_day
from mlops_assets_tests.postgres import PostgresServer

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(4)]
CONFIG = GeneratorConfig(rows_per_day=2_000, seed=5)
WINDOW = {"window_days": 3, "holdout_days": 1, "end_date": DAYS[-1].isoformat()}
STUDY = "fraud_detector-xgboost"
#: a file; the first trial of worker 1 that finds it removes it and fails (a worker going down)
FAIL_ONCE = "MLOPS_TEST_TUNING_FAIL_ONCE"


@dataclass(frozen=True)
class OnceFailingXGBoost(XGBoostFamily):
    """XGBoost that fails one trial of worker 1 when the test asks for it (``FAIL_ONCE``)."""

    def fit(self, train, params, validation=None, trial=None):
        flag = os.environ.get(FAIL_ONCE)
        if flag and trial is not None and trial.user_attrs.get(WORKER_ATTR) == 1:
            try:
                os.remove(flag)
            except FileNotFoundError:
                pass
            else:
                raise RuntimeError("injected failure of worker 1")
        return super().fit(train, params, validation=validation, trial=trial)


# one thread per trial: the workers are the parallelism (and the machine may have 2 cores)
FAMILY = OnceFailingXGBoost(threads=1)


def tuning_definitions() -> dg.Definitions:
    """``training_set`` and ``xgboost_tuning`` with the environment's resources."""
    return dg.Definitions(
        assets=[training_set, build_tuning_asset(FAMILY)],
        resources=build_resources(Settings()),
        jobs=[
            dg.define_asset_job(
                "tuning", selection=["xgboost_tuning"], executor_def=preloading_executor()
            )
        ],
    )


def tuning_job() -> dg.JobDefinition:
    """The tuning job, rebuilt in every step process (``dg.reconstructable``) from the
    environment the test set, which the step processes inherit."""
    return tuning_definitions().resolve_job_def("tuning")


def tuning_config(**config: Any) -> dict[str, Any]:
    return {
        "ops": {"xgboost_tuning": {"config": config}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }


@pytest.fixture(scope="module")
def features() -> tuple[dict[date, Any], Any]:
    """The validated days and their features (generated once for the module)."""
    validated = {day: validated_day(day, CONFIG).to_arrow() for day in DAYS}
    return validated, feature_days(DAYS, CONFIG).to_arrow()


@dataclass
class World:
    """A project home whose lake holds the features, a Dagster instance with ``training_set``
    materialized, and an Optuna storage URL."""

    instance: dg.DagsterInstance
    optuna_url: str
    settings: Settings

    def run(self, **config: Any) -> dg.JobExecutionResult:
        """The tuning job, one process per step (at most ``workers`` + 1 at once)."""
        run_config = tuning_config(**config)
        run_config["execution"] = {
            "config": {"multiprocess": {"max_concurrent": config.get("workers", 1) + 1}}
        }
        return dg.execute_job(
            dg.reconstructable(tuning_job), instance=self.instance, run_config=run_config
        )

    def materialize(self, **config: Any) -> dg.ExecuteInProcessResult:
        """The tuning asset in this process (``dg.materialize``: the worker steps in turn)."""
        return dg.materialize(
            [training_set, build_tuning_asset(FAMILY)],
            selection=["xgboost_tuning"],
            resources=build_resources(self.settings),
            instance=self.instance,
            run_config=tuning_config(**config),
        )

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=STUDY, storage=self.optuna_url)

    def mlflow(self) -> Any:
        from mlflow import MlflowClient

        uri = self.settings.resolved_mlflow_tracking_uri
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def make_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, features) -> Iterator[Any]:
    """Builds the world, on Postgres when given its URL (else the embedded SQLite default)."""
    with contextlib.ExitStack() as stack:

        def make(optuna_url: str | None = None) -> World:
            monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
            monkeypatch.delenv("MLOPS_OPTUNA_STORAGE_URI", raising=False)
            if optuna_url:
                monkeypatch.setenv("MLOPS_OPTUNA_STORAGE_URI", optuna_url)
            settings = Settings()
            # stated for the SQLite default too: the job built by this process is cached
            # (dg.reconstructable) and its resources read the URL from the environment
            monkeypatch.setenv("MLOPS_OPTUNA_STORAGE_URI", settings.resolved_optuna_storage_uri)
            lake: DeltaLake = build_resources(settings)["lake"]
            validated, featured = features
            for day, table in validated.items():
                lake.overwrite_day(VALIDATED_TRANSACTIONS, table, day)
            lake.overwrite_days(TRANSACTION_FEATURES, featured, DAYS[1], DAYS[-1])
            (tmp_path / "dagster").mkdir()
            instance = stack.enter_context(dg.instance_for_test(temp_dir=str(tmp_path / "dagster")))
            result = dg.materialize(
                [training_set],
                resources=build_resources(settings),
                instance=instance,
                run_config={"ops": {"training_set": {"config": WINDOW}}},
            )
            assert result.success
            return World(instance, settings.resolved_optuna_storage_uri, settings)

        yield make


def checked(world: World, result: Any) -> tuple[dict[str, Any], list[Any]]:
    """The run's tuning metadata, checked against the study and MLflow; the run's trials."""
    from mlops_assets_tests.pipeline import failure_text, metadata

    assert result.success, failure_text(result)
    tuned = metadata(result, "xgboost_tuning")
    study = world.study()
    session = tuned["mlflow_run_id"]
    mine = [t for t in study.trials if t.user_attrs.get(SESSION_ATTR) == session]
    numbers = [t.number for t in mine]
    assert len(numbers) == len(set(numbers)) == tuned["trials_this_run"]
    # the chosen best is the study's best
    assert tuned["best_trial"] == study.best_trial.number
    assert tuned["best_params"] == study.best_params
    assert tuned["best_tuning_pr_auc"] == pytest.approx(study.best_value)
    assert tuned["trials_total"] == len(study.trials)
    # each trial is one nested MLflow run of the materialization's run, which finished
    client = world.mlflow()
    parent = client.get_run(session)
    assert parent.info.status == "FINISHED"
    assert parent.data.params and all(k.startswith("best.") for k in parent.data.params)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{session}'"
    )
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == sorted(numbers)
    states = {t.number: t.state.name for t in mine}
    for child in children:
        assert (
            child.data.tags["optuna.state"] == states[int(child.data.tags["optuna.trial_number"])]
        )
    return tuned, mine


def check_shares(
    result, tuned: dict[str, Any], mine: list[Any], n_trials: int, workers: int, processes=True
):
    """Exactly n_trials, split as planned, each worker step in a process of its own (unless
    the run was in one process)."""
    planned = split_trials(n_trials, workers)
    assert len(mine) == n_trials and tuned["workers"] == len(planned)
    by_worker = {r["worker"]: r for r in tuned["trials_by_worker"]}
    assert sorted(by_worker) == list(range(len(planned)))
    for worker, share in enumerate(planned):
        trials = [t for t in mine if t.user_attrs[WORKER_ATTR] == worker]
        assert len(trials) == share
        assert sorted(t.number for t in trials) == by_worker[worker]["trials"]
        assert {t.user_attrs["pid"] for t in trials} == {by_worker[worker]["pid"]}
    assert len({r["pid"] for r in by_worker.values()}) == (len(planned) if processes else 1)
    steps = {e.step_key for e in result.all_events if e.is_step_success}
    for worker in range(len(planned)):
        assert f"xgboost_tuning.xgboost_trials[worker_{worker}]" in steps


@pytest.mark.slow
def test_workers_share_one_study_on_postgres(make_world, postgres_server: PostgresServer):
    """3 worker processes run 6 trials of one study; then 1 worker continues it."""
    world = make_world(postgres_server.create_database("distributed_tuning"))
    result = world.run(n_trials=6, workers=3)
    tuned, mine = checked(world, result)
    check_shares(result, tuned, mine, n_trials=6, workers=3)
    assert tuned["trials_total"] == 6
    assert tuned["optuna_storage"].startswith("postgresql+psycopg2://")

    # one worker (the default: no `workers` in the config) continues the same study, here in
    # one process (the demo's way; the multiprocess path is the test below and the SQLite one)
    again = world.materialize(n_trials=2)
    tuned, mine = checked(world, again)
    check_shares(again, tuned, mine, n_trials=2, workers=1)
    assert tuned["trials_total"] == 8
    assert {t.number for t in mine} == {6, 7}


@pytest.mark.slow
def test_a_failed_worker_is_resumed_without_losing_or_repeating_trials(
    make_world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The laptop: the embedded SQLite Optuna and MLflow stores, two worker processes and an
    uneven split (2 + 1); worker 1 fails its trial, the run is re-executed from failure."""
    world = make_world()
    assert world.optuna_url.startswith("sqlite:///")
    flag = tmp_path / "fail-once"
    flag.touch()
    monkeypatch.setenv(FAIL_ONCE, str(flag))
    from mlops_assets_tests.pipeline import failure_text

    failed = world.run(n_trials=3, workers=2)
    assert not failed.success
    assert "injected failure of worker 1" in failure_text(failed)
    assert not flag.exists()
    [failed_trial] = [t for t in world.study().trials if t.state.name == "FAIL"]
    assert failed_trial.user_attrs[WORKER_ATTR] == 1
    session = failed_trial.user_attrs[SESSION_ATTR]
    assert world.mlflow().get_run(session).info.status == "FAILED"
    # worker 0 ran its two trials in a process of its own meanwhile
    first = [t for t in world.study().trials if t.user_attrs.get(WORKER_ATTR) == 0]
    assert len(first) == 2 and {t.state.name for t in first} <= {"COMPLETE", "PRUNED"}

    resumed = dg.execute_job(
        dg.reconstructable(tuning_job),
        instance=world.instance,
        run_config={
            **tuning_config(n_trials=3, workers=2),
            "execution": {"config": {"multiprocess": {"max_concurrent": 3}}},
        },
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, world.instance),
    )
    tuned, mine = checked(world, resumed)
    assert tuned["mlflow_run_id"] == session  # the same plan, session and MLflow run
    assert tuned["trials_this_run"] == 4  # 3 finished and the failed one
    finished = [t for t in mine if t.state.name in ("COMPLETE", "PRUNED")]
    assert [sum(t.user_attrs[WORKER_ATTR] == w for t in finished) for w in (0, 1)] == [2, 1]
    assert len({t.user_attrs["pid"] for t in finished}) == 2  # two worker processes
    # worker 0 was not run again: its finished share came from the first run
    steps = {e.step_key for e in resumed.all_events if e.is_step_success}
    assert "xgboost_tuning.xgboost_trials[worker_0]" not in steps
    assert "xgboost_tuning.xgboost_trials[worker_1]" in steps


def test_in_process_and_more_workers_than_trials(make_world):
    """In one process (``dg.materialize``) the worker steps run one after the other; asking
    for more workers than trials plans one per trial."""
    world = make_world()
    result = world.materialize(n_trials=2, workers=5)
    tuned, mine = checked(world, result)
    check_shares(result, tuned, mine, n_trials=2, workers=5, processes=False)
    assert tuned["workers"] == 2 and tuned["trials_this_run"] == tuned["trials_total"] == 2
    assert {"best_params", "best_trial", "study", "mlflow_run", "optimization_history"} <= set(
        tuned
    )
    assert tuned["study"] == STUDY


def test_trials_are_split_exactly() -> None:
    assert split_trials(8, 1) == [8]
    assert split_trials(8, 3) == [3, 3, 2]
    assert split_trials(2, 5) == [1, 1]
    for n_trials in range(1, 20):
        for workers in range(1, 8):
            shares = split_trials(n_trials, workers)
            assert sum(shares) == n_trials and min(shares) >= 1
            assert max(shares) - min(shares) <= 1
    with pytest.raises(ValueError):
        split_trials(0, 2)
