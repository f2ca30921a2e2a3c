"""Optuna and MLflow on a real (throwaway) PostgreSQL server, through the project's own code.

The server comes from ``mlops_assets_tests.postgres`` (one per session; each test gets its own
database). Every store is also checked from the database side with psycopg2, so a silent
fallback to a local SQLite file or ``./mlruns`` could not pass.

No ``from __future__ import annotations`` here: Dagster checks the ``context`` annotation of
an asset at definition time and rejects the string ``"dg.AssetExecutionContext"``.
"""

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import optuna
import pytest

from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.optuna_storage import OptunaStorage
from mlops_assets.train.tuning import open_study, redacted, run_study
from mlops_assets_tests.mlflow_server import MlflowServer, running_mlflow_server, tiny_model_asset
from mlops_assets_tests.postgres import PostgresServer

DAGSTER_UI = "http://dagster.example:3000"


def cheap_objective(trial: optuna.Trial) -> float:
    """A milliseconds-cheap objective to maximise (best at x=2, y=0)."""
    x = trial.suggest_float("x", -10.0, 10.0)
    y = trial.suggest_int("y", 0, 5)
    return -((x - 2.0) ** 2) - y


def no_recording(trial: optuna.Trial) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def stored_trials(server: PostgresServer, database: str, study_name: str) -> list[tuple]:
    """(number, state, value) of a study's trials, read straight from Optuna's tables."""
    return server.query(
        """
        SELECT t.number, t.state, v.value
        FROM trials t
        JOIN studies s ON s.study_id = t.study_id
        LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
        WHERE s.study_name = %s
        ORDER BY t.number
        """,
        (study_name,),
        database=database,
    )


# --- the throwaway server itself ----------------------------------------------------------------


def test_the_throwaway_server_is_private_and_fast(postgres_server: PostgresServer) -> None:
    import psycopg2

    settings = dict(
        postgres_server.query(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["fsync", "listen_addresses", "unix_socket_directories"],),
            superuser=True,  # unix_socket_directories is hidden from ordinary roles
        )
    )
    assert settings == {
        "fsync": "off",
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(postgres_server.socket_dir),
    }
    [(user, is_superuser)] = postgres_server.query(
        "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
    )
    assert (user, is_superuser) == (postgres_server.user, False)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            password="wrong",
            dbname=postgres_server.database,
        )
    url = postgres_server.create_database("fixture_check")
    assert url == (
        f"postgresql+psycopg2://{postgres_server.user}:{postgres_server.password}"
        f"@127.0.0.1:{postgres_server.port}/fixture_check"
    )
    [(owner,)] = postgres_server.query(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'fixture_check'"
    )
    assert owner == postgres_server.user
    assert postgres_server.startup_seconds < 30


# --- Optuna ---------------------------------------------------------------------------------------


def test_a_study_resumes_from_postgres(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("optuna_resume")
    lines: list[str] = []
    first_study = open_study("fraud-pg", url)
    first = run_study(first_study, cheap_objective, 2, None, no_recording, lines.append)
    assert first.trials_total == 2 and first.completed_this_run == 2
    assert any("trial 1 [2/2]" in line for line in lines)

    # a new storage object (a new engine and connection pool), as a new process would open it
    second_study = open_study("fraud-pg", url)
    assert second_study._storage is not first_study._storage
    assert len(second_study.trials) == 2  # the earlier trials came from Postgres
    second = run_study(second_study, cheap_objective, 2, None, no_recording)
    assert second.trials_total == 4
    assert [t.number for t in second.trials_this_run] == [2, 3]
    values = [t.value for t in second.history]
    assert second.best_value == max(v for v in values if v is not None)
    assert second.best_value >= first.best_value
    assert second.trials_this_run[0].params != first.trials_this_run[0].params  # new candidates

    rows = stored_trials(postgres_server, "optuna_resume", "fraud-pg")
    assert [(number, state) for number, state, _ in rows] == [(n, "COMPLETE") for n in range(4)]
    assert max(value for _, _, value in rows) == pytest.approx(second.best_value)
    [(direction,)] = postgres_server.query(
        "SELECT d.direction FROM study_directions d JOIN studies s USING (study_id) "
        "WHERE s.study_name = 'fraud-pg'",
        database="optuna_resume",
    )
    assert direction == "MAXIMIZE"


@dg.asset
def tuned_on_postgres(
    context: dg.AssetExecutionContext, optuna_storage: OptunaStorage
) -> dg.MaterializeResult:
    """Two more trials of a cheap study kept in the resource's storage."""
    study = optuna_storage.open_study("fraud-pg-resource", seed=7)
    outcome = run_study(study, cheap_objective, 2, None, no_recording, context.log.info)
    return dg.MaterializeResult(
        metadata={
            "trials_total": outcome.trials_total,
            "best_value": outcome.best_value,
            "optuna_storage": optuna_storage.display_url,
        }
    )


def test_the_optuna_storage_resource_on_postgres(postgres_server: PostgresServer) -> None:
    storage = OptunaStorage(url=postgres_server.create_database("optuna_resource"))
    instance = dg.DagsterInstance.ephemeral()
    metadata = []
    for _ in range(2):  # two materializations: the second continues the study
        result = dg.materialize(
            [tuned_on_postgres], resources={"optuna_storage": storage}, instance=instance
        )
        assert result.success
        metadata.append(result.asset_materializations_for_node("tuned_on_postgres")[0].metadata)

    assert [m["trials_total"].value for m in metadata] == [2, 4]
    assert metadata[1]["best_value"].value >= metadata[0]["best_value"].value
    shown = metadata[1]["optuna_storage"].value
    assert postgres_server.password not in shown
    assert (
        shown
        == redacted(storage.url)
        == (
            f"postgresql+psycopg2://{postgres_server.user}:***@127.0.0.1:{postgres_server.port}"
            "/optuna_resource"
        )
    )
    rows = stored_trials(postgres_server, "optuna_resource", "fraud-pg-resource")
    assert len(rows) == 4
    assert max(value for _, _, value in rows) == pytest.approx(metadata[1]["best_value"].value)


# --- MLflow: a real `mlflow server` with a Postgres backend store --------------------------------


@pytest.fixture(scope="module")
def mlflow_on_postgres(
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MlflowServer]:
    """``mlflow server`` whose tracking and registry store is a fresh Postgres database."""
    backend = postgres_server.create_database("mlflow")
    with running_mlflow_server(
        tmp_path_factory.mktemp("mlflow-on-postgres"), backend_store_uri=backend
    ) as server:
        yield server


registered_on_postgres = tiny_model_asset(
    "registered_on_postgres", "stored via a Postgres-backed server"
)


def test_mlflow_tracking_and_registry_on_postgres(
    mlflow_on_postgres: MlflowServer,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    import numpy as np

    started = time.monotonic()
    tracking = MlflowTracking(
        tracking_uri=mlflow_on_postgres.uri,
        experiment_name="fraud-on-postgres",
        artifact_root=str(tmp_path / "unused"),  # a local path: the server decides
        dagster_ui_url=DAGSTER_UI,
    )
    result = dg.materialize(
        [registered_on_postgres],
        resources={"mlflow_tracking": tracking},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert mlflow.active_run() is None
    metadata = result.asset_materializations_for_node("registered_on_postgres")[0].metadata
    run_id = metadata["mlflow_run_id"].value

    client = tracking.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"n_estimators": "5", "max_depth": "2"}
    assert run.data.metrics["train_accuracy"] > 0.8
    assert run.data.tags["dagster.run_url"] == f"{DAGSTER_UI}/runs/{result.run_id}"
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/hello.txt") == (
        "stored via a Postgres-backed server"
    )
    assert len(list(Path(mlflow_on_postgres.artifacts_destination).rglob("hello.txt"))) == 1

    name = "fraud_detector_pg"
    version = mlflow.register_model(metadata["model_uri"].value, name)
    client.set_registered_model_alias(name, "champion", version.version)
    by_alias = client.get_model_version_by_alias(name, "champion")
    assert (by_alias.version, by_alias.run_id) == (version.version, run_id)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    scores = model.predict(np.array([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]]))
    assert scores[0] > 0.5 > scores[1]

    # ...and all of it really is in Postgres
    def rows(sql: str, *params: object) -> list[tuple]:
        return postgres_server.query(sql, params, database="mlflow")

    assert rows(
        "SELECT r.status, e.name FROM runs r JOIN experiments e USING (experiment_id) "
        "WHERE r.run_uuid = %s",
        run_id,
    ) == [("FINISHED", "fraud-on-postgres")]
    assert sorted(rows("SELECT key, value FROM params WHERE run_uuid = %s", run_id)) == [
        ("max_depth", "2"),
        ("n_estimators", "5"),
    ]
    assert rows("SELECT key FROM metrics WHERE run_uuid = %s", run_id) == [("train_accuracy",)]
    assert rows("SELECT name, version, run_id FROM model_versions WHERE name = %s", name) == [
        (name, int(version.version), run_id)
    ]
    assert rows("SELECT alias, version FROM registered_model_aliases WHERE name = %s", name) == [
        ("champion", int(version.version))
    ]
    assert rows("SELECT count(*) FROM alembic_version") == [(1,)]  # migrated by the server
    print(
        f"\nPostgres start-up {postgres_server.startup_seconds:.1f}s "
        f"(initdb {postgres_server.initdb_seconds:.1f}s); mlflow server on Postgres start-up "
        f"(incl. migrations) {mlflow_on_postgres.startup_seconds:.1f}s; "
        f"test body {time.monotonic() - started:.1f}s"
    )
