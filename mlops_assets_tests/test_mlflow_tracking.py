"""The MLflow resource against real stores: an embedded SQLite store and a real ``mlflow server``.

Everything here is real: Dagster runs (in-process, and the multiprocess executor on a
persistent instance), MLflow's SQLite store, Optuna studies, and an ``mlflow server`` process.
"""

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow.entities import Run

from mlops_assets.deployment import preloading_executor
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets_tests.mlflow_server import (  # fixtures come from conftest
    MlflowServer,
    tiny_model_asset,
)

DAGSTER_UI = "http://dagster.example:3000"
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@pytest.fixture(scope="module")
def sqlite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded SQLite store for the in-process tests (each test has its own experiment)."""
    return tmp_path_factory.mktemp("mlflow-sqlite")


@pytest.fixture
def tracking(sqlite_dir: Path) -> Iterator[MlflowTracking]:
    """The resource on the module's SQLite store, with an experiment of its own."""
    yield MlflowTracking(
        tracking_uri=f"sqlite:///{sqlite_dir / 'mlflow.db'}",
        experiment_name=f"test-{uuid.uuid4().hex[:8]}",
        artifact_root=str(sqlite_dir / "artifacts"),
        dagster_ui_url=DAGSTER_UI,
    )
    assert mlflow.active_run() is None, "a test leaked an active MLflow run"


def runs_of(tracking: MlflowTracking, filter_string: str = "") -> list[Run]:
    """All runs of the resource's experiment matching the filter."""
    return tracking.client().search_runs(
        [tracking.experiment_id()], filter_string=filter_string, max_results=1000
    )


# --- one MLflow run per materialization, linked to the Dagster run --------------------------


@dg.asset(partitions_def=DAILY)
def scored_a(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking) -> None:
    with mlflow_tracking.start_run(context, run_name="scored_a"):
        mlflow.log_metric("rows", 1)


@dg.asset(partitions_def=DAILY, deps=[scored_a])
def scored_b(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking) -> None:
    with mlflow_tracking.start_run(context, run_name="scored_b"):
        mlflow.log_metric("rows", 2)


def test_one_run_per_materialization_linked_to_dagster(tracking: MlflowTracking) -> None:
    instance = dg.DagsterInstance.ephemeral()
    results = [
        dg.materialize(
            [scored_a, scored_b],
            resources={"mlflow_tracking": tracking},
            instance=instance,
            partition_key=day,
        )
        for day in ("2026-01-02", "2026-01-03")
    ]
    assert all(result.success for result in results)
    assert mlflow.active_run() is None

    runs = runs_of(tracking)
    assert len(runs) == 4  # 2 assets x 2 materializations, nothing shared or reused
    for result, day in zip(results, ("2026-01-02", "2026-01-03"), strict=True):
        mine = [r for r in runs if r.data.tags["dagster.run_id"] == result.run_id]
        assert sorted(r.data.tags["dagster.asset_key"] for r in mine) == ["scored_a", "scored_b"]
        for run in mine:
            tags = run.data.tags
            assert run.info.status == "FINISHED"
            assert tags["dagster.run_url"] == f"{DAGSTER_UI}/runs/{result.run_id}"
            assert tags["dagster.partition_key"] == day
            assert tags["dagster.job_name"] == result.job_def.name
            assert tags["mlflow.runName"] == tags["dagster.asset_key"]
            assert "mlflow.parentRunId" not in tags


@dg.asset
def failing_model(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking) -> None:
    with mlflow_tracking.start_run(context, run_name="failing_model"):
        mlflow.log_param("stage", "before-failure")
        mlflow.start_run(run_name="forgotten_child", nested=True)  # never ended by the body
        raise ValueError("training blew up")


@dg.asset
def next_model(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking) -> None:
    with mlflow_tracking.start_run(context, run_name="next_model"):
        mlflow.log_param("stage", "after-failure")


def test_failing_asset_ends_its_run_failed_and_leaks_nothing(tracking: MlflowTracking) -> None:
    instance = dg.DagsterInstance.ephemeral()
    failed = dg.materialize(
        [failing_model],
        resources={"mlflow_tracking": tracking},
        instance=instance,
        raise_on_error=False,
    )
    assert not failed.success
    assert mlflow.active_run() is None  # the in-process executor runs in this thread

    (run,) = runs_of(tracking, "tags.`dagster.asset_key` = 'failing_model'")
    assert run.info.status == "FAILED"
    assert run.info.end_time is not None
    (child,) = runs_of(tracking, f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert child.info.status == "KILLED"  # the body's leaked nested run is ended too

    ok = dg.materialize([next_model], resources={"mlflow_tracking": tracking}, instance=instance)
    assert ok.success
    (after,) = runs_of(tracking, "tags.`dagster.asset_key` = 'next_model'")
    assert after.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in after.data.tags  # not nested under the failed run
    assert after.data.params == {"stage": "after-failure"}


def test_a_leaked_run_or_mlflow_run_id_is_not_reused(
    tracking: MlflowTracking, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-mlflow shares one run through MLFLOW_RUN_ID; this resource never resumes it."""
    client = tracking.client()
    leaked = mlflow.start_run(experiment_id=tracking.experiment_id(), run_name="leaked")
    shared = client.create_run(tracking.experiment_id(), run_name="shared-by-env")
    monkeypatch.setenv("MLFLOW_RUN_ID", shared.info.run_id)  # plain start_run would resume it

    result = dg.materialize(
        [next_model],
        resources={"mlflow_tracking": tracking},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert mlflow.active_run() is None
    assert "MLFLOW_RUN_ID" not in os.environ
    (fresh,) = runs_of(tracking, "tags.`dagster.asset_key` = 'next_model'")
    assert fresh.info.run_id not in {leaked.info.run_id, shared.info.run_id}
    assert "mlflow.parentRunId" not in fresh.data.tags  # not nested under the leaked run
    assert client.get_run(leaked.info.run_id).info.status == "KILLED"
    assert client.get_run(shared.info.run_id).info.status == "RUNNING"  # not touched
    assert fresh.info.status == "FINISHED"


# --- Optuna trials as nested runs ------------------------------------------------------------


class TuningConfig(dg.Config):
    n_jobs: int = 1


@dg.asset
def tuned_model(
    context: dg.AssetExecutionContext, config: TuningConfig, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        with mlflow_tracking.start_trial_run(trial=trial, tags={"purpose": "test"}):
            x = trial.suggest_float("x", -1.0, 1.0)
            mlflow.log_metric("loss", x * x)
            if trial.number % 4 == 1:
                raise optuna.TrialPruned()
            if trial.number % 4 == 2:
                raise ValueError("diverged")
            return x * x

    with mlflow_tracking.start_run(context, run_name="tuned_model") as run:
        study = optuna.create_study(study_name=f"study-{context.run.run_id[:8]}")
        study.optimize(objective, n_trials=4, n_jobs=config.n_jobs, catch=(ValueError,))
        mlflow.log_metric("best_loss", study.best_value)
    return dg.MaterializeResult(metadata={"mlflow_run_id": run.info.run_id})


@pytest.mark.parametrize("n_jobs", [1, 2], ids=["sequential", "threads"])
def test_trials_are_nested_runs_of_the_materialization(
    tracking: MlflowTracking, n_jobs: int
) -> None:
    result = dg.materialize(
        [tuned_model],
        resources={"mlflow_tracking": tracking},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"tuned_model": {"config": {"n_jobs": n_jobs}}}},
    )
    assert result.success
    assert mlflow.active_run() is None
    parent_id = (
        result.asset_materializations_for_node("tuned_model")[0].metadata["mlflow_run_id"].value
    )
    parent = tracking.client().get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["dagster.run_id"] == result.run_id

    children = runs_of(tracking, f"tags.`mlflow.parentRunId` = '{parent_id}'")
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    assert sorted(by_number) == [0, 1, 2, 3]
    expected = {0: ("FINISHED", "COMPLETE"), 1: ("KILLED", "PRUNED"), 2: ("FAILED", "FAIL")}
    expected[3] = expected[0]
    for number, child in by_number.items():
        assert (child.info.status, child.data.tags["optuna.state"]) == expected[number]
        assert child.info.experiment_id == parent.info.experiment_id
        assert child.data.tags["mlflow.runName"] == f"trial-{number}"
        assert child.data.tags["optuna.study_name"] == f"study-{result.run_id[:8]}"
        assert child.data.tags["purpose"] == "test"
        assert "x" in child.data.params  # the trial's sampled parameters
        assert "loss" in child.data.metrics  # logged to the child from the trial's thread
        assert "dagster.run_id" not in child.data.tags  # one run per materialization
    linked = runs_of(tracking, f"tags.`dagster.run_id` = '{result.run_id}'")
    assert [r.info.run_id for r in linked] == [parent_id]


def test_trial_run_outside_a_materialization_run_is_an_error(tracking: MlflowTracking) -> None:
    with pytest.raises(RuntimeError, match="inside start_run"), tracking.start_trial_run("t"):
        pass
    assert mlflow.active_run() is None


# --- parallel steps on a fresh store (multiprocess executor) ---------------------------------

PARALLEL_ASSETS = ("parallel_a", "parallel_b", "parallel_c", "parallel_d")


class BarrierConfig(dg.Config):
    barrier_dir: str
    parties: int
    timeout_seconds: float = 120.0


def _wait_for_all(config: BarrierConfig, name: str) -> None:
    """A file barrier: every step process opens MLflow at (nearly) the same moment."""
    barrier = Path(config.barrier_dir)
    (barrier / name).touch()
    deadline = time.monotonic() + config.timeout_seconds
    while len(list(barrier.iterdir())) < config.parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(barrier.iterdir()))} steps reached the barrier")
        time.sleep(0.01)


def _parallel_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def _asset(
        context: dg.AssetExecutionContext, config: BarrierConfig, mlflow_tracking: MlflowTracking
    ) -> dg.MaterializeResult:
        import mlflow as mlflow_in_step  # imported before the barrier, not inside the race

        _wait_for_all(config, name)
        with mlflow_tracking.start_run(context, run_name=name) as run:
            mlflow_in_step.log_param("asset", name)
            mlflow_in_step.log_metric("pid", os.getpid())
        return dg.MaterializeResult(metadata={"mlflow_run_id": run.info.run_id})

    return _asset


def parallel_mlflow_job() -> dg.JobDefinition:
    """Assets that all open an MLflow run at once, one process per step."""
    defs = dg.Definitions(
        assets=[_parallel_asset(name) for name in PARALLEL_ASSETS],
        resources={"mlflow_tracking": MlflowTracking.configure_at_launch()},
        jobs=[dg.define_asset_job("parallel_mlflow", executor_def=preloading_executor())],
    )
    return defs.resolve_job_def("parallel_mlflow")


@pytest.mark.slow
def test_parallel_steps_on_a_fresh_sqlite_store(tmp_path: Path) -> None:
    store = tmp_path / "fresh" / "mlflow.db"  # neither the file nor its directory exists yet
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    resource_config = {
        "tracking_uri": f"sqlite:///{store}",
        "experiment_name": "parallel",
        "artifact_root": str(tmp_path / "fresh" / "artifacts"),
        "dagster_ui_url": DAGSTER_UI,
    }
    step_config = {"barrier_dir": str(barrier), "parties": len(PARALLEL_ASSETS)}
    run_config = {
        "execution": {"config": {"multiprocess": {"max_concurrent": len(PARALLEL_ASSETS)}}},
        "resources": {"mlflow_tracking": {"config": resource_config}},
        "ops": {name: {"config": step_config} for name in PARALLEL_ASSETS},
    }
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.execute_job(
            dg.reconstructable(parallel_mlflow_job), instance=instance, run_config=run_config
        )
        failures = [
            event.event_specific_data.error.to_string()
            for event in result.all_events
            if event.is_step_failure
        ]
        assert result.success, "\n\n".join(failures)
        run_id = result.run_id

    tracking = MlflowTracking(**resource_config)
    client = tracking.client()
    experiments = [e for e in client.search_experiments() if e.name == "parallel"]
    assert len(experiments) == 1
    runs = runs_of(tracking)
    assert sorted(r.data.tags["dagster.asset_key"] for r in runs) == sorted(PARALLEL_ASSETS)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["dagster.run_id"] for r in runs} == {run_id}
    assert len({r.data.metrics["pid"] for r in runs}) == len(PARALLEL_ASSETS)  # one per process


# --- a real `mlflow server` over http --------------------------------------------------------


served_model = tiny_model_asset("served_model", "hello from the resource")


def test_against_a_real_mlflow_server(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    import numpy as np

    tracking = MlflowTracking(
        tracking_uri=mlflow_server.uri,
        experiment_name="served",
        artifact_root=str(tmp_path / "client-side-artifacts"),  # a local path: not used
        dagster_ui_url=DAGSTER_UI,
    )
    result = dg.materialize(
        [served_model],
        resources={"mlflow_tracking": tracking},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert mlflow.active_run() is None
    metadata = result.asset_materializations_for_node("served_model")[0].metadata
    run_id = metadata["mlflow_run_id"].value

    client = tracking.client()
    experiment = client.get_experiment(tracking.experiment_id())
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"n_estimators": "5", "max_depth": "2"}
    assert run.data.metrics["train_accuracy"] > 0.8
    assert run.data.tags["dagster.run_url"] == f"{DAGSTER_UI}/runs/{result.run_id}"
    assert [a.path for a in client.list_artifacts(run_id, "notes")] == ["notes/hello.txt"]
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/hello.txt") == (
        "hello from the resource"
    )
    stored = list(Path(mlflow_server.artifacts_destination).rglob("hello.txt"))
    assert len(stored) == 1  # uploaded through the server into its artifact destination
    assert not (tmp_path / "client-side-artifacts").exists()

    version = mlflow.register_model(metadata["model_uri"].value, "served_fraud_detector")
    client.set_registered_model_alias("served_fraud_detector", "champion", version.version)
    by_alias = client.get_model_version_by_alias("served_fraud_detector", "champion")
    assert by_alias.version == version.version
    assert by_alias.run_id == run_id
    model = mlflow.pyfunc.load_model("models:/served_fraud_detector@champion")
    scores = model.predict(np.array([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]]))
    assert scores[0] > 0.5 > scores[1]
    assert tracking.model_version_url("served_fraud_detector", version.version).startswith(
        tracking.ui_url
    )
