"""The ``served_predictions`` asset: a day of the service's micro-batches compacted, the rows
unchanged, other days untouched, and the day reported."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from mlops_assets.features.definition import FEATURE_COLUMNS
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.serve.log_assets import served_predictions
from mlops_assets.serve.prediction_log import LOG_SCHEMA
from mlops_assets.tables import SERVED_PREDICTIONS

DAY_1, DAY_2 = date(2026, 1, 4), date(2026, 1, 5)


def micro_batch(day: date, start: int, rows: int, version: int, shadow: bool) -> pa.Table:
    """One write of the service's log: ``rows`` predictions of ``day``."""
    rng = np.random.default_rng(start)
    scores = rng.uniform(0, 1, rows)
    served = datetime(2026, 1, 6, tzinfo=UTC)
    columns = {
        "transaction_id": [f"t{start + i}" for i in range(rows)],
        "txn_date": [day] * rows,
        "timestamp": [datetime(day.year, day.month, day.day, tzinfo=UTC)] * rows,
        "type": ["TRANSFER"] * rows,
        "nameOrig": ["C1"] * rows,
        "nameDest": ["C2"] * rows,
        **{name: rng.uniform(0, 100, rows) for name in FEATURE_COLUMNS},
        "fraud_score": scores,
        "is_fraud_predicted": scores >= 0.5,
        "threshold": [0.5] * rows,
        "model_name": ["fraud"] * rows,
        "model_alias": ["champion"] * rows,
        "model_version": [version] * rows,
        "endpoint": ["/predict"] * rows,
        "served_at": [served + timedelta(seconds=start)] * rows,
        "latency_ms": rng.uniform(1, 20, rows),
        "shadow_model_version": [version + 1 if shadow else None] * rows,
        "shadow_fraud_score": [0.9 if shadow else None] * rows,  # shadow flags everything
        "shadow_is_fraud_predicted": [True if shadow else None] * rows,
    }
    return pa.table(columns, schema=LOG_SCHEMA)


@pytest.fixture
def lake(tmp_path: Path) -> DeltaLake:
    """A log as two days of service writes left it: 40 micro-batches of day 1 (the first 20
    from version 3, then version 4 with a shadow), 10 of day 2."""
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    append = lake.appender(SERVED_PREDICTIONS)
    for i in range(40):
        append(micro_batch(DAY_1, i * 5, 5, 3 if i < 20 else 4, shadow=i >= 20))
    for i in range(10):
        append(micro_batch(DAY_2, 1000 + i * 5, 5, 4, shadow=False))
    return lake


def materialize(lake: DeltaLake, day: date, last: date | None = None) -> dg.ExecuteInProcessResult:
    """One run of the asset for ``day``, or for the range ``day``..``last`` as a backfill
    runs it."""
    tags = {}
    if last is not None:
        tags = {
            "dagster/asset_partition_range_start": day.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        }
    return dg.materialize(
        [served_predictions],
        partition_key=None if last is not None else day.isoformat(),
        tags=tags,
        resources={"lake": lake},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def sorted_rows(lake: DeltaLake, day: date) -> pa.Table:
    return lake.read(SERVED_PREDICTIONS, days=[day]).sort_by("transaction_id")


def test_a_day_is_compacted_with_its_rows_unchanged_and_reported(lake: DeltaLake) -> None:
    before = {day: sorted_rows(lake, day) for day in (DAY_1, DAY_2)}
    assert lake.day_files(SERVED_PREDICTIONS, DAY_1) == 40
    # the service's appends created the log with its short retention (a day for removed files)
    properties = DeltaTable(lake.table_uri(SERVED_PREDICTIONS)).metadata().configuration
    assert properties["delta.deletedFileRetentionDuration"] == "interval 1 days"

    result = materialize(lake, DAY_1)

    assert result.success
    assert lake.day_files(SERVED_PREDICTIONS, DAY_1) == 1
    assert lake.day_files(SERVED_PREDICTIONS, DAY_2) == 10  # the other day is untouched
    for day, rows in before.items():
        assert sorted_rows(lake, day).equals(rows), day
    metadata = result.asset_materializations_for_node("served_predictions")[0].metadata
    assert metadata["dagster/row_count"].value == 200
    assert metadata["files_before"].value == 40
    assert metadata["files_after"].value == 1
    assert metadata["predictions_by_model_version"].value == {"3": 100, "4": 100}
    assert metadata["shadow_scored_rows"].value == 100
    flagged = before[DAY_1].column("is_fraud_predicted").to_numpy(zero_copy_only=False)
    assert metadata["flagged_share"].value == pytest.approx(flagged.mean())
    # the shadow flags every row it scored: it disagrees wherever the champion did not flag
    shadowed = before[DAY_1].column("shadow_model_version").is_valid().to_numpy(False)
    assert shadowed.sum() == 100
    expected = 1 - flagged[shadowed].mean()
    assert metadata["shadow_disagreement_share"].value == pytest.approx(expected)


def test_materializing_again_rewrites_nothing(lake: DeltaLake) -> None:
    assert materialize(lake, DAY_1).success
    version = lake.version(SERVED_PREDICTIONS)
    again = materialize(lake, DAY_1)
    assert again.success
    assert lake.version(SERVED_PREDICTIONS) == version
    metadata = again.asset_materializations_for_node("served_predictions")[0].metadata
    assert (metadata["files_before"].value, metadata["files_after"].value) == (1, 1)


def test_a_range_compacts_each_day_in_one_run(lake: DeltaLake) -> None:
    result = materialize(lake, DAY_1, DAY_2)
    assert result.success
    assert lake.day_files(SERVED_PREDICTIONS, DAY_1) == 1
    assert lake.day_files(SERVED_PREDICTIONS, DAY_2) == 1
    metadata = result.asset_materializations_for_node("served_predictions")[0].metadata
    assert metadata["dagster/row_count"].value == 250
    assert (metadata["files_before"].value, metadata["files_after"].value) == (50, 2)


def test_compaction_keeps_what_the_service_appends_meanwhile(lake: DeltaLake) -> None:
    """The service does not stop for the nightly compaction: rows it appends to the same day
    during the run are neither lost nor doubled, and no write fails."""
    replica = lake.appender(SERVED_PREDICTIONS)  # a service replica writing its log
    stop, errors, appended = threading.Event(), [], [0]

    def keep_appending() -> None:
        while not stop.is_set():
            try:
                replica(micro_batch(DAY_1, 5000 + appended[0], 5, 4, shadow=False))
                appended[0] += 5
            except Exception as error:  # reported below, never swallowed
                errors.append(error)
            time.sleep(0.005)

    writer = threading.Thread(target=keep_appending)
    writer.start()
    try:
        time.sleep(0.2)
        results = [materialize(lake, DAY_1) for _ in range(3)]
    finally:
        stop.set()
        writer.join()
    assert all(result.success for result in results)
    assert errors == []
    assert appended[0] > 0
    ids = lake.read(SERVED_PREDICTIONS, days=[DAY_1], columns=["transaction_id"])
    ids = ids.column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids)) == 200 + appended[0]


def test_a_day_without_predictions_is_reported_empty(lake: DeltaLake) -> None:
    result = materialize(lake, date(2026, 1, 7))
    assert result.success
    metadata = result.asset_materializations_for_node("served_predictions")[0].metadata
    assert metadata["dagster/row_count"].value == 0


def test_no_log_at_all_says_which_service_setting_writes_it(tmp_path: Path) -> None:
    result = materialize(DeltaLake(root_uri=str(tmp_path / "empty")), DAY_1)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "gold/served_predictions does not exist" in message
    assert "MLOPS_SERVE_LOG_PREDICTIONS=true" in message
