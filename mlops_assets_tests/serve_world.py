"""A trained world for the model-service tests, shared by the test modules of the session:
five generated days ingested, one quick training (champion = the best candidate), the holdout
day batch scored, and that day's transactions as request bodies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from mlflow import MlflowClient

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.environment import build_resources
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.serve.app import ServeConfig, create_app_from_resources
from mlops_assets.serve.online_features import REQUEST_FIELDS
from mlops_assets.settings import Settings
from mlops_assets.tables import SCORED_TRANSACTIONS, VALIDATED_TRANSACTIONS
from mlops_assets_tests.pipeline import INGEST, TRAIN, materialize, training_config

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(5)]
DAY = DAYS[-1]  # the holdout day, batch scored; the service's history is DAYS[-2:]
NAME = "fraud_detector"
MAX_BATCH = 500


@dataclass
class World:
    home: Path
    resources: dict[str, Any]
    instance: dg.DagsterInstance
    scored: pl.DataFrame  # batch scores of DAY by the champion
    requests: list[dict[str, Any]]  # DAY's validated transactions as request bodies

    @property
    def client(self) -> MlflowClient:
        return self.resources["mlflow_tracking"].client()

    def app(
        self, log_lake: DeltaLake | None = None, authenticator: Any = None, **config: Any
    ) -> Any:
        return create_app_from_resources(
            self.resources["lake"],
            self.resources["mlflow_tracking"],
            ServeConfig(model_name=NAME, max_batch_size=MAX_BATCH, **config),
            log_lake=log_lake,
            authenticator=authenticator,
        )

    def score_batch(self) -> pl.DataFrame:
        assert materialize(["scored_transactions"], self.resources, self.instance, DAY).success
        return pl.from_arrow(self.resources["lake"].read(SCORED_TRANSACTIONS, days=[DAY]))


def _requests(lake: Any) -> list[dict[str, Any]]:
    rows = pl.from_arrow(
        lake.read(VALIDATED_TRANSACTIONS, days=[DAY], columns=[*REQUEST_FIELDS, "transaction_id"])
    ).sort("timestamp")
    return [
        {**row, "timestamp": row["timestamp"].isoformat()} for row in rows.iter_rows(named=True)
    ]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("serve")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_HOME", str(home))
    settings = Settings()
    resources = build_resources(settings)
    config = GeneratorConfig(rows_per_day=3_000, seed=42, epoch=settings.paysim_epoch)
    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        for day in DAYS:
            write_day(day, config, settings.resolved_landing_uri)
            assert materialize(INGEST, resources, instance, day).success
        trained = materialize(
            TRAIN, resources, instance, run_config=training_config(4, DAY, trials=1)
        )
        assert trained.success
        state = World(home, resources, instance, pl.DataFrame(), _requests(resources["lake"]))
        state.scored = state.score_batch()
        # shared by the session: the home stays in the resources, not in the environment of
        # the tests that run after (they pass it explicitly, e.g. to `mlops-assets serve`)
        mp.undo()
        yield state
