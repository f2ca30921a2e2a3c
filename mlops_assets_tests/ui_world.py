"""A small materialized demo world on a real Dagster instance under a project home, for the
browser tests, built in-process with the project's own assets (like the demo) in two steps:

- ``ingest_world``: seven generated days landed, validated and featurized (the last one
  drifted), and no model yet: the launchpad test trains the first champion from the UI (one
  Optuna trial per family), which the gate promotes because there is no champion to beat;
- ``score_world``: the last two days scored by the champion with their drift reports and the
  late labels of one day judged; if no champion exists yet (the launchpad test did not run or
  failed), it first trains one in-process with the same configuration.

The UIs (`dagster dev`, `mlflow server`) open the same home while it is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.datagen.labels import write_labels
from mlops_assets.environment import build_resources
from mlops_assets.settings import Settings
from mlops_assets_tests.browser import prepare_dagster_home
from mlops_assets_tests.pipeline import INGEST, SCORE, TRAIN, materialize, training_config

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(7)]
TRAINING_END = DAYS[4]  # fitted on DAYS[1:4], held out DAYS[4]
TRAINING_WINDOW = 4
SCORED = DAYS[5:]
LABELLED = DAYS[5]
ROWS_PER_DAY = 1_500
#: settings of the world, in-process and in the UIs' environment: the first model is promoted
#: whatever its holdout figures on these few rows
SETTINGS = {"gate_min_pr_auc": "0", "gate_min_roc_auc": "0"}
GENERATOR = {"rows_per_day": ROWS_PER_DAY, "seed": 17, "bad_row_share": 0.01, "fraud_rate": 0.02}


@dataclass(frozen=True)
class UIWorld:
    home: Path
    dagster_home: Path
    ui_urls: dict[str, str]

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.dagster_home)))


@contextmanager
def _project(world: UIWorld) -> Iterator[tuple[Settings, dict[str, Any], dg.DagsterInstance]]:
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("MLOPS_HOME", str(world.home))
        for key, value in {**SETTINGS, **world.ui_urls}.items():
            mp.setenv(f"MLOPS_{key.upper()}", value)
        settings = Settings()
        with world.instance() as instance:
            yield settings, build_resources(settings), instance
    finally:
        mp.undo()


def _config(settings: Settings) -> GeneratorConfig:
    return GeneratorConfig(epoch=settings.paysim_epoch, drift_start=DAYS[-1], **GENERATOR)


def ingest_world(home: Path, **ui_urls: str) -> UIWorld:
    """Land and ingest the seven days under ``home``; ``ui_urls`` (``mlflow_ui_url``,
    ``dagster_ui_url``) are where the metadata's links point."""
    world = UIWorld(home, prepare_dagster_home(home), dict(ui_urls))
    with _project(world) as (settings, resources, instance):
        for day in DAYS:
            write_day(day, _config(settings), settings.resolved_landing_uri)
            assert materialize(INGEST, resources, instance, day).success, day
    return world


def champion_version(world: UIWorld) -> int | None:
    with _project(world) as (settings, resources, _):
        client = resources["mlflow_tracking"].client()
        try:
            version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
        except Exception:  # no registered model, or no alias yet
            return None
        return int(version.version)


def score_world(world: UIWorld) -> int:
    """Score the last days with the champion (training one first if there is none), report
    their drift and judge one labelled day; returns the champion's version."""
    if champion_version(world) is None:
        with _project(world) as (_, resources, instance):
            config = training_config(TRAINING_WINDOW, TRAINING_END, trials=1, mlp_trials=1)
            assert materialize(TRAIN, resources, instance, run_config=config).success
    with _project(world) as (settings, resources, instance):
        for day in SCORED:
            assert materialize(SCORE, resources, instance, day).success, day
        write_labels(LABELLED, _config(settings), settings.resolved_labels_uri)
        judged = materialize(
            ["transaction_labels", "model_performance"], resources, instance, LABELLED
        )
        assert judged.success
    version = champion_version(world)
    assert version is not None
    return version
