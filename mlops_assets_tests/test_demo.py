"""The README's main command, end to end: the demo CLI on a fresh project home."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_demo_builds_everything_and_says_where_to_look(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env["MLOPS_HOME"] = str(tmp_path / "home")
    command = [
        sys.executable,
        "-m",
        "mlops_assets.cli",
        "demo",
        "--days",
        "6",
        "--rows-per-day",
        "2500",
        "--start",
        "2026-01-01",
        "--drift-days",
        "1",
        # the fewest trials that still tune (the demo's own defaults: 6 and 2); the trials'
        # work is test_tuning's and test_model_factory's
        "--xgboost-trials",
        "3",
        "--mlp-trials",
        "1",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "[6/6] 2026-01-06 ingest" in output
    assert "Drift flagged on: 2026-01-06" in output
    assert "Where to look:" in output
    assert "labels of 2026-01-04 arrive" in output
    assert "retraining sensor: champion v" in output and "no persistent drift" in output
    assert "mlops-assets ui" in output and "mlops-assets mlflow-ui" in output
    # the last day arrived on a local Kafka broker: ingested exactly once, decided by the
    # streaming scorer as batch scored it, then through the pipeline like the file days
    assert "[6/6] 2026-01-06 arrives on Kafka instead of as a file" in output
    assert "stream sensor: requests raw_transactions for 2026-01-06" in output
    gap = re.search(
        r"stream vs batch: ([\d,]+) transactions, largest score difference (\S+)", output
    )
    assert gap is not None, output
    assert int(gap.group(1).replace(",", "")) > 2_000 and float(gap.group(2)) < 1e-6
    assert "Streamed day:     2026-01-06" in output
    # a clean console: the demo's progress only; the libraries' output is in the demo log
    console = output + result.stderr
    assert "WARNING:mlops_assets.kafka" not in console
    for chatter in ("E0000", "STEP_FAILURE", "RUN_FAILURE", "Traceback", "WARNING", "Warning:"):
        assert chatter not in console, console
    assert result.stderr == "", result.stderr
    log = tmp_path / "home" / "demo.log"
    assert output.startswith(
        f"Library output (TensorFlow, MLflow, the runs' warnings) goes to {log}"
    )
    assert (
        log.is_file()
        and f"The libraries' output (TensorFlow, MLflow, the runs' warnings): {log}" in output
    )
    assert not (tmp_path / "home" / "landing" / "transactions_2026-01-06.csv").exists()
    report = tmp_path / "home" / "lake" / "reports" / "drift_report" / "2026-01-06.html"
    assert f"file://{report}" in output
    assert report.is_file()

    # the runs are in the project-local Dagster instance that `dagster dev` opens
    dagster_home = tmp_path / "home" / "dagster"
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        runs = instance.get_runs()
        # 6 ingests, the first training, 6 scorings, and the labels of days 3 and 4 arriving
        # (two days late) while days 5 and 6 are processed; one drifted day: no retraining
        assert len(runs) == 6 + 1 + 6 + 2
        assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert {run.job_name for run in runs} == {
            "ingest_job",
            "training_job",
            "scoring_job",
            "monitoring_job",
        }
        judged = instance.get_materialized_partitions(dg.AssetKey("model_performance"))
        assert judged == {"2026-01-03", "2026-01-04"}
        scored = instance.get_materialized_partitions(dg.AssetKey("scored_transactions"))
        assert len(scored) == 6

        # opening the UI afterwards: the landing sensor sees the demo's files as ingested
        os.environ["MLOPS_HOME"] = env["MLOPS_HOME"]
        try:
            from mlops_assets.definitions import build_definitions

            defs = build_definitions()
            sensor = next(s for s in defs.sensors if s.name == "landing_sensor")
            context = dg.build_sensor_context(instance=instance, resources=defs.resources)
            assert list(sensor(context).run_requests or []) == []
        finally:
            del os.environ["MLOPS_HOME"]


def test_demo_rejects_days_before_the_partitions_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env["MLOPS_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "demo", "--start", "2025-06-01"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "before MLOPS_PARTITIONS_START=2026-01-01" in result.stderr
