"""A run over a range of days (a single-run backfill, as the CLI's ``--partition-range`` and the
daemon launch it) records each day's checks against that day, as the UI's partition view shows
them, and reads and writes the range in batches of ``MLOPS_LAKE_BATCH_ROWS`` rows, with the
same tables as one batch would give."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus as Status,
)
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionResolvedStatus as Resolved,
)
from polars.testing import assert_frame_equal

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.environment import build_resources
from mlops_assets.partitions import daily_partitions, day_batches
from mlops_assets.settings import Settings
from mlops_assets.tables import (
    QUARANTINED_TRANSACTIONS,
    RAW_TRANSACTIONS,
    TRANSACTION_FEATURES,
    VALIDATED_TRANSACTIONS,
)
from mlops_assets_tests.pipeline import materialize, materialize_range

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]
VALIDATED = dg.AssetKey("validated_transactions")
CHECKS = [
    dg.AssetCheckKey(VALIDATED, n) for n in ("reconciles_with_raw", "reject_share_within_threshold")
]
STEPS = ["raw_transactions", "validated_transactions", "quarantined_transactions"]


def by_partition(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> dict[Any, Any]:
    infos = instance.event_log_storage.get_asset_check_partition_info([key])
    return {info.partition_key: info for info in infos}


def test_range_run_records_each_days_checks(settings: Settings, resources: dict) -> None:
    landing = settings.resolved_landing_uri
    for day in DAYS:
        write_day(day, GeneratorConfig(rows_per_day=400, seed=3), landing)
    with dg.instance_for_test() as instance:
        result = materialize_range(STEPS, resources, instance, DAYS[0], DAYS[-1])
        assert result.success
        days = {d.isoformat() for d in DAYS}
        evaluations = result.get_asset_check_evaluations()
        assert {(e.check_name, e.partition) for e in evaluations} == {
            (key.name, day) for key in CHECKS for day in days
        }
        for key in CHECKS:
            infos = by_partition(instance, key)
            assert set(infos) == days  # one record per day, none for the range as a whole
            for info in infos.values():
                assert info.latest_execution_status == Status.SUCCEEDED
                assert info.is_current  # aimed at the day's latest materialization
            state = instance.event_log_storage.get_asset_check_state([(key, daily_partitions)])
            assert state[key].subsets[Resolved.SUCCEEDED].size == len(DAYS)
        shares = {
            e.partition: e.metadata["reject_share"].value
            for e in evaluations
            if e.check_name == "reject_share_within_threshold"
        }
        assert set(shares.values()) == {0.0}


def test_a_blocked_day_fails_its_own_check_in_a_range(settings: Settings, resources: dict) -> None:
    landing = settings.resolved_landing_uri
    for day in DAYS:
        bad = 0.3 if day == DAYS[1] else 0.0
        write_day(day, GeneratorConfig(rows_per_day=400, seed=3, bad_row_share=bad), landing)
    with dg.instance_for_test() as instance:
        result = materialize_range(
            STEPS, resources, instance, DAYS[0], DAYS[-1], raise_on_error=False
        )
        assert not result.success  # the blocked day holds the run back
        share = {
            e.partition: e
            for e in result.get_asset_check_evaluations()
            if e.check_name == "reject_share_within_threshold"
        }
        assert {d: e.passed for d, e in share.items()} == {
            DAYS[0].isoformat(): True,
            DAYS[1].isoformat(): False,
            DAYS[2].isoformat(): True,
        }
        assert share[DAYS[1].isoformat()].metadata["reject_share"].value > 0.05
        assert share[DAYS[1].isoformat()].severity == dg.AssetCheckSeverity.ERROR
        assert share[DAYS[1].isoformat()].blocking
        records = by_partition(instance, CHECKS[1])
        assert records[DAYS[1].isoformat()].latest_execution_status == Status.FAILED


def test_a_single_day_run_records_its_day(settings: Settings, resources: dict) -> None:
    write_day(DAYS[0], GeneratorConfig(rows_per_day=300, seed=3), settings.resolved_landing_uri)
    with dg.instance_for_test() as instance:
        assert materialize(STEPS, resources, instance, DAYS[0]).success
        for key in CHECKS:
            infos = by_partition(instance, key)
            assert set(infos) == {DAYS[0].isoformat()}
            assert infos[DAYS[0].isoformat()].latest_execution_status == Status.SUCCEEDED
            assert infos[DAYS[0].isoformat()].is_current


def test_days_are_cut_into_batches_of_rows() -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(6)]
    rows = dict(zip(days, [400, 400, 400, 0, 2_000, 400], strict=True))
    assert day_batches(days, rows, 900) == [days[0:2], days[2:4], days[4:5], days[5:6]]
    assert day_batches(days, rows, 10_000) == [days]
    assert day_batches(days, dict.fromkeys(days, 0), 900) == [days]  # no rows: one batch


def build_range(home: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int | None) -> dict:
    """Five days landed and the data assets run over them in one range run; the lake."""
    monkeypatch.setenv("MLOPS_HOME", str(home))
    if batch_rows:
        monkeypatch.setenv("MLOPS_LAKE_BATCH_ROWS", str(batch_rows))
    else:
        monkeypatch.delenv("MLOPS_LAKE_BATCH_ROWS", raising=False)
    settings = Settings()
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(5)]
    for day in days:
        config = GeneratorConfig(rows_per_day=400, seed=5, bad_row_share=0.01)
        write_day(day, config, settings.resolved_landing_uri)
    resources = build_resources(settings)
    with dg.instance_for_test() as instance:
        result = materialize_range(
            [*STEPS, "transaction_features"], resources, instance, days[0], days[-1]
        )
        assert result.success
        for key in ("raw_transactions", "validated_transactions", "transaction_features"):
            partitions = instance.get_materialized_partitions(dg.AssetKey(key))
            assert partitions == {d.isoformat() for d in days}, key
    return resources["lake"]


def test_a_range_in_batches_writes_what_one_batch_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batched = build_range(tmp_path / "batched", monkeypatch, batch_rows=900)
    whole = build_range(tmp_path / "whole", monkeypatch, batch_rows=None)
    assert batched.batch_rows == 900
    for table in (RAW_TRANSACTIONS, VALIDATED_TRANSACTIONS, QUARANTINED_TRANSACTIONS):
        # days of about 400 rows, 900 per batch: 2 + 2 + 1 days, one commit each
        assert batched.version(table) == 2, table.path
        assert whole.version(table) == 0, table.path
    assert batched.version(TRANSACTION_FEATURES) == 2
    for table in (VALIDATED_TRANSACTIONS, QUARANTINED_TRANSACTIONS, TRANSACTION_FEATURES):
        # the same rows but for when and where (each home has its own landing zone)
        columns = [
            c for c in whole.column_names(table) if c not in ("_ingested_at", "_source_file")
        ]
        order = ["transaction_id"] if "transaction_id" in columns else ["txn_date", "_source_row"]
        left = pl.from_arrow(batched.read(table, columns=columns)).sort(order)
        right = pl.from_arrow(whole.read(table, columns=columns)).sort(order)
        assert left.height > 0, table.path
        # the look-back crosses batches unchanged (sums to the last bits: DuckDB adds in
        # whichever order its threads take)
        assert_frame_equal(left, right, rel_tol=1e-12, abs_tol=1e-9)
    raw = pl.from_arrow(batched.read(RAW_TRANSACTIONS, columns=["txn_date"]))
    assert raw.group_by("txn_date").len()["len"].to_list() == [400] * 5
