"""The production Dagster instance shape: run, event-log and schedule storage on a real
(throwaway) PostgreSQL server, the real ``ingest_job`` under the multiprocess executor (one
process per step, each opening the instance from its reference), and the landing sensor
evaluated on that instance. Every claim is also checked from the database side with SQL, so a
silent fallback to SQLite could not pass.
"""

import json
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.settings import Settings
from mlops_assets_tests.postgres import PostgresServer

DAYS = [date(2026, 1, 1), date(2026, 1, 2)]
LATE_DAY = date(2026, 1, 3)
CONFIG = GeneratorConfig(rows_per_day=1_500, seed=11, bad_row_share=0.01)
INGESTED = ["raw_transactions", "validated_transactions", "quarantined_transactions"]


def ingest_job() -> dg.JobDefinition:
    """The code location's real ``ingest_job``, built from the environment's settings (a
    module-level function, so that ``dg.reconstructable`` can rebuild it in each step
    process)."""
    from mlops_assets.definitions import build_definitions

    return build_definitions().resolve_job_def("ingest_job")


def postgres_overrides(url: str) -> dict[str, Any]:
    """dagster.yaml storage sections of dagster-postgres, each pointed at ``url``."""
    config = {"postgres_url": url}
    return {
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": config,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": config,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": config,
        },
    }


class Platform:
    """A project home with landed files and a Postgres-backed Dagster instance."""

    def __init__(self, home: Path, instance: dg.DagsterInstance, server: PostgresServer) -> None:
        self.home = home
        self.instance = instance
        self.server = server
        self.settings = Settings()
        self.landing = Path(self.settings.resolved_landing_uri)
        self.result: dg.JobExecutionResult | None = None

    @property
    def run(self) -> dg.JobExecutionResult:
        assert self.result is not None
        return self.result

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.server.query(statement, params, database="dagster")

    def materialized(self) -> set[tuple[str, str]]:
        """(asset key, partition) of every materialization in the event_logs table."""
        rows = self.sql(
            "SELECT asset_key, partition FROM event_logs "
            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        return {("/".join(json.loads(key)), partition) for key, partition in rows}


@pytest.fixture(scope="module")
def platform(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Two days landed locally; the instance on Postgres; the ingest job run for each day."""
    # the driver must be explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3,
    # which is not installed (dagster-postgres depends on psycopg2)
    postgres_url = postgres_server.create_database("dagster")
    assert postgres_url.startswith("postgresql+psycopg2://")
    home = tmp_path_factory.mktemp("pginstance")
    (home / "dagster").mkdir()
    monkeypatch = pytest.MonkeyPatch()
    # step processes inherit the environment: they build the same settings
    monkeypatch.setenv("MLOPS_HOME", str(home / "home"))
    monkeypatch.setenv("MLOPS_LANDING_SETTLE_SECONDS", "0")
    monkeypatch.setenv("MLOPS_EXECUTOR", "multiprocess")  # the default, stated
    try:
        with dg.instance_for_test(
            overrides=postgres_overrides(postgres_url), temp_dir=str(home / "dagster")
        ) as instance:
            platform = Platform(home, instance, postgres_server)
            for day in DAYS:
                write_day(day, CONFIG, platform.landing)
            # the two days in one partition-range run (the assets' single-run backfill policy):
            # each step process imports the code location (about 5 s), so one run, not two
            platform.result = dg.execute_job(
                dg.reconstructable(ingest_job),
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": DAYS[0].isoformat(),
                    "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
                },
            )
            yield platform
    finally:
        monkeypatch.undo()


@pytest.mark.slow
def test_the_instance_stores_everything_in_postgres(platform: Platform) -> None:
    storage = platform.instance.get_ref()
    assert storage.run_storage_data.class_name == "PostgresRunStorage"
    assert storage.event_storage_data.class_name == "PostgresEventLogStorage"
    assert storage.schedule_storage_data.class_name == "PostgresScheduleStorage"
    tables = {row[0] for row in platform.sql("SELECT tablename FROM pg_tables")}
    assert {"runs", "event_logs", "asset_keys", "jobs", "job_ticks"} <= tables


@pytest.mark.slow
def test_the_ingest_job_ran_each_step_in_its_own_process(platform: Platform) -> None:
    result = platform.run
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    starts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert {e.step_key for e in starts} == {
        "raw_transactions",
        "validated_transactions",
        "transaction_features",
    }
    step_pids = {e.pid for e in starts}
    assert len(step_pids) == len(starts)  # one process per step
    assert os.getpid() not in step_pids


@pytest.mark.slow
def test_runs_and_materializations_are_recorded_in_postgres(platform: Platform) -> None:
    runs = platform.sql("SELECT run_id, status FROM runs")
    assert runs == [(platform.run.run_id, "SUCCESS")]
    tags = dict(platform.sql("SELECT key, value FROM run_tags WHERE run_id = %s", (runs[0][0],)))
    assert tags["dagster/asset_partition_range_start"] == DAYS[0].isoformat()
    assert tags["dagster/asset_partition_range_end"] == DAYS[-1].isoformat()

    # every step process wrote its materializations, one per day, to the same database
    materialized = platform.materialized()
    expected = {(key, day.isoformat()) for key in INGESTED for day in DAYS}
    expected.add(("transaction_features", DAYS[1].isoformat()))
    assert expected <= materialized
    steps = platform.sql(
        "SELECT DISTINCT step_key FROM event_logs "
        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND run_id = %s",
        (platform.run.run_id,),
    )
    assert {row[0] for row in steps} == {
        "raw_transactions",
        "validated_transactions",
        "transaction_features",
    }

    # and the instance reads them back through its Postgres event log
    assert platform.instance.get_materialized_partitions(dg.AssetKey("raw_transactions")) == {
        d.isoformat() for d in DAYS
    }


@pytest.mark.slow
def test_the_landing_sensor_runs_on_the_postgres_instance(platform: Platform) -> None:
    from mlops_assets.definitions import build_definitions

    defs = build_definitions()
    sensor = next(s for s in defs.sensors if s.name == "landing_sensor")

    def tick(cursor: str | None) -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=platform.instance, cursor=cursor, resources=defs.resources, definitions=defs
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        return result

    # the ingested files are recognised from the materializations stored in Postgres
    first = tick(None)
    assert list(first.run_requests or []) == []

    # a new delivery is requested, for its day only
    write_day(LATE_DAY, CONFIG, platform.landing)
    second = tick(first.cursor)
    requests = list(second.run_requests or [])
    assert [r.partition_key for r in requests] == [LATE_DAY.isoformat()]
    assert requests[0].run_key is not None
    assert requests[0].run_key.startswith(f"{LATE_DAY.isoformat()}:")


def test_the_helm_charts_postgres_db_form_needs_the_psycopg2_scheme(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The Helm chart writes ``storage: postgres: postgres_db: {...}``; dagster-postgres builds
    a ``postgresql://`` URL from it, which SQLAlchemy 2.1 maps to psycopg 3 (not installed):
    the chart's ``postgresql.postgresqlScheme`` must be ``postgresql+psycopg2``."""
    postgres_server.create_database("dagster_helm")
    postgres_db = {
        "username": postgres_server.user,
        "password": postgres_server.password,
        "hostname": postgres_server.host,
        "port": postgres_server.port,
        "db_name": "dagster_helm",
        "params": {"sslmode": "disable"},
    }

    def instance_with(scheme: str) -> Any:
        overrides = {"storage": {"postgres": {"postgres_db": {**postgres_db, "scheme": scheme}}}}
        temp_dir = tmp_path / scheme.replace("+", "_")
        temp_dir.mkdir()
        return dg.instance_for_test(overrides=overrides, temp_dir=str(temp_dir))

    with pytest.raises(ModuleNotFoundError, match="psycopg"), instance_with("postgresql"):
        pass
    with instance_with("postgresql+psycopg2") as instance:
        assert instance.get_ref().storage_data is not None
        assert instance.get_runs() == []
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
        assert instance.get_run_by_id(run.run_id) is not None
    assert postgres_server.query("SELECT run_id FROM runs", database="dagster_helm") == [
        (run.run_id,)
    ]
