"""Files dropped in the landing zone flow through the graph with no human action: the landing
sensor requests raw days, the automation conditions refresh everything downstream. Evaluated
against a real Dagster instance, tables checked with delta-rs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.definitions import build_definitions
from mlops_assets.settings import Settings
from mlops_assets.tables import (
    SCORED_TRANSACTIONS,
    TRANSACTION_FEATURES,
    VALIDATED_TRANSACTIONS,
)
from mlops_assets_tests.pipeline import TRAIN, materialize, training_config

pytestmark = pytest.mark.slow

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(5)]
ORDER = [
    "raw_transactions",
    "validated_transactions",
    "transaction_features",
    "scored_transactions",
    "drift_report",
]
CONFIG = GeneratorConfig(rows_per_day=2_500, seed=9, bad_row_share=0.01)


class Platform:
    def __init__(self, home: Path, instance: dg.DagsterInstance, monkeypatch: Any) -> None:
        monkeypatch.setenv("MLOPS_HOME", str(home))
        monkeypatch.setenv("MLOPS_LANDING_SETTLE_SECONDS", "0")
        self.settings = Settings()
        self.defs = build_definitions()
        self.resources = self.defs.resources
        self.instance = instance
        self.landing = Path(self.settings.resolved_landing_uri)
        self.sensor_cursor: str | None = None
        self.automation_cursor = None
        self.lake = self.resources["lake"]

    def tick_sensor(self) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.sensor_cursor,
            resources=self.resources,
            definitions=self.defs,
        )
        sensor = next(s for s in self.defs.sensors if s.name == "landing_sensor")
        result = sensor(context)
        self.sensor_cursor = result.cursor
        return list(result.run_requests or [])

    def run_sensor_requests(self, requests: list[dg.RunRequest]) -> None:
        for request in requests:
            materialize(
                ["raw_transactions"],
                self.resources,
                self.instance,
                date.fromisoformat(request.partition_key),
            )

    def settle_automation(self, max_ticks: int = 8) -> dict[str, set[str]]:
        """Evaluate the automation conditions and run what they request until nothing is."""
        ran: dict[str, set[str]] = {}
        for _ in range(max_ticks):
            result = dg.evaluate_automation_conditions(
                defs=self.defs, instance=self.instance, cursor=self.automation_cursor
            )
            self.automation_cursor = result.cursor
            if result.total_requested == 0:
                return ran
            # like the automation sensor: one run per partition with every asset requested for
            # it, so that a failure upstream in the run skips what is downstream of it
            by_partition: dict[str, list[str]] = {}
            for key in ORDER:
                for partition in result.get_requested_partitions(dg.AssetKey(key)):
                    by_partition.setdefault(partition, []).append(key)
            for partition, keys in sorted(by_partition.items()):
                selection = list(keys)
                if "validated_transactions" in keys:
                    selection.append("quarantined_transactions")
                run = materialize(
                    selection,
                    self.resources,
                    self.instance,
                    date.fromisoformat(partition),
                    raise_on_error=False,
                )
                done = {
                    e.asset_key.to_user_string() for e in run.get_asset_materialization_events()
                }
                for key in keys:
                    if key in done or key == "validated_transactions":
                        ran.setdefault(key, set()).add(partition)
        raise AssertionError(f"automation did not settle in {max_ticks} ticks: {ran}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("platform")
    (home / "dagster").mkdir()
    monkeypatch = pytest.MonkeyPatch()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield Platform(home, instance, monkeypatch)
    monkeypatch.undo()


def iso(days: list[date]) -> set[str]:
    return {d.isoformat() for d in days}


def test_dropped_files_flow_to_features_without_a_human(platform: Platform) -> None:
    assert platform.settle_automation() == {}  # the daemon's first tick: nothing to do yet
    for day in DAYS:
        write_day(day, CONFIG, platform.landing)
    requests = platform.tick_sensor()
    assert {r.partition_key for r in requests} == iso(DAYS)
    assert platform.tick_sensor() == []  # nothing new
    platform.run_sensor_requests(requests)
    ran = platform.settle_automation()
    assert ran["validated_transactions"] == iso(DAYS)
    assert ran["transaction_features"] == iso(DAYS)
    assert "scored_transactions" not in ran  # no model yet: scoring waits
    assert platform.lake.days(TRANSACTION_FEATURES) == DAYS


def test_a_new_model_lets_scoring_and_drift_catch_up(platform: Platform) -> None:
    materialize(
        TRAIN, platform.resources, platform.instance, run_config=training_config(4, DAYS[3])
    )
    ran = platform.settle_automation()
    assert ran["scored_transactions"] == iso(DAYS)
    assert ran["drift_report"] == iso(DAYS)
    assert platform.lake.days(SCORED_TRANSACTIONS) == DAYS
    # registering another version does not re-score the past on its own
    materialize(
        TRAIN, platform.resources, platform.instance, run_config=training_config(4, DAYS[3])
    )
    assert platform.settle_automation() == {}


def test_a_corrected_file_refreshes_its_day_and_the_next_days_history(platform: Platform) -> None:
    day = DAYS[2]
    before = platform.lake.read(VALIDATED_TRANSACTIONS, days=[day]).num_rows
    write_day(day, GeneratorConfig(rows_per_day=2_000, seed=10), platform.landing)
    requests = platform.tick_sensor()
    assert [r.partition_key for r in requests] == [day.isoformat()]
    platform.run_sensor_requests(requests)
    ran = platform.settle_automation()
    assert ran["validated_transactions"] == {day.isoformat()}
    # the next day's 24-hour history reads this day, so its features refresh too
    assert ran["transaction_features"] == iso([day, day + timedelta(days=1)])
    assert ran["scored_transactions"] == iso([day, day + timedelta(days=1)])
    assert platform.lake.read(VALIDATED_TRANSACTIONS, days=[day]).num_rows != before
    assert platform.lake.read(TRANSACTION_FEATURES, days=[day]).num_rows == 2_000


def test_an_identical_redelivery_changes_nothing(platform: Platform) -> None:
    path = platform.landing / f"transactions_{DAYS[1]}.csv"
    path.write_bytes(path.read_bytes())
    assert platform.tick_sensor() == []
    assert platform.settle_automation() == {}


def test_a_day_past_the_reject_threshold_does_not_flow_into_features(platform: Platform) -> None:
    day = DAYS[-1] + timedelta(days=1)
    write_day(
        day, GeneratorConfig(rows_per_day=2_000, seed=11, bad_row_share=0.3), platform.landing
    )
    platform.run_sensor_requests(platform.tick_sensor())
    ran = platform.settle_automation()
    assert ran["validated_transactions"] == {day.isoformat()}
    assert day.isoformat() not in ran.get("transaction_features", set())
    assert day not in platform.lake.days(TRANSACTION_FEATURES)
    # a corrected delivery passes the contract and releases the day
    write_day(day, GeneratorConfig(rows_per_day=2_000, seed=11), platform.landing)
    platform.run_sensor_requests(platform.tick_sensor())
    ran = platform.settle_automation()
    assert day.isoformat() in ran["transaction_features"]
    assert day in platform.lake.days(TRANSACTION_FEATURES)
