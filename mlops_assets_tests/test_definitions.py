"""The code location loads, and every asset is described and carries kinds for the UI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import defs
from mlops_assets.environment import build_resources
from mlops_assets.settings import Settings
from mlops_assets_tests.pipeline import TRAIN

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPECTED_ASSETS = {
    "transaction_stream",
    "raw_transactions",
    "validated_transactions",
    "quarantined_transactions",
    "transaction_features",
    *TRAIN,
    "scored_transactions",
    "fraud_explanations",
    "drift_report",
    "transaction_labels",
    "model_performance",
    "served_predictions",
    "canary_release",
    "model_ab_report",
}
MODEL_ASSETS = [*TRAIN, "canary_release"]


def specs() -> list[dg.AssetSpec]:
    return list(defs.resolve_all_asset_specs())


def test_every_stage_is_an_asset() -> None:
    assert {s.key.to_user_string() for s in specs()} == EXPECTED_ASSETS


@pytest.mark.parametrize("key", sorted(EXPECTED_ASSETS))
def test_every_asset_has_a_description_and_kinds(key: str) -> None:
    spec = next(s for s in specs() if s.key.to_user_string() == key)
    assert spec.description and len(spec.description) > 40
    assert spec.kinds


def test_data_assets_are_daily_partitioned_and_models_are_not() -> None:
    by_key = {s.key.to_user_string(): s for s in specs()}
    for key in (
        "raw_transactions",
        "validated_transactions",
        "quarantined_transactions",
        "transaction_features",
        "scored_transactions",
        "fraud_explanations",
        "drift_report",
        "transaction_labels",
        "model_performance",
        "served_predictions",
    ):
        assert isinstance(by_key[key].partitions_def, dg.DailyPartitionsDefinition), key
    for key in MODEL_ASSETS:
        assert by_key[key].partitions_def is None, key


def test_training_steps_request_a_gpu_node_and_the_gate_blocks() -> None:
    by_key = {s.key.to_user_string(): s for s in specs()}
    graph = defs.resolve_asset_graph()
    ops = {
        # a tuning asset is a graph: its worker op (one step per share of the trials) trains
        **{
            f"{f}_tuning": graph.get(dg.AssetKey(f"{f}_tuning"))
            .assets_def.node_def.node_named(f"{f}_trials")
            .definition
            for f in ("xgboost", "mlp")
        },
        **{
            f"{f}_candidate": graph.get(dg.AssetKey(f"{f}_candidate")).assets_def.op
            for f in ("xgboost", "mlp")
        },
    }
    for key, op in ops.items():
        k8s = op.tags["dagster-k8s/config"]
        k8s = json.loads(k8s) if isinstance(k8s, str) else k8s  # tags are stored as JSON text
        container = k8s["container_config"]["resources"]
        assert container["limits"]["nvidia.com/gpu"] == "1", key
        assert k8s["pod_spec_config"]["node_selector"], key
        assert k8s["pod_spec_config"]["tolerations"][0]["key"] == "nvidia.com/gpu", key
    gate = next(
        spec
        for spec in graph.get(dg.AssetKey("challenger_model")).assets_def.check_specs
        if spec.name == "beats_champion"
    )
    assert gate.blocking
    assert by_key["scored_transactions"].deps[1].asset_key == dg.AssetKey("champion_model")


def test_the_topic_is_an_external_asset_upstream_of_bronze() -> None:
    graph = defs.resolve_asset_graph()
    stream = graph.get(dg.AssetKey("transaction_stream"))
    assert not stream.is_executable  # written by the bronze ingestion, observed by its sensor
    assert {"kafka", "avro"} <= set(stream.kinds)
    assert (
        dg.AssetKey("transaction_stream") in graph.get(dg.AssetKey("raw_transactions")).parent_keys
    )
    assert defs.resolve_sensor_def("transaction_stream_sensor").minimum_interval_seconds == 30


def test_contract_and_drift_checks_exist() -> None:
    names = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "reject_share_within_threshold",
        "reconciles_with_raw",
        "drift_share_within_threshold",
        "performance_within_threshold",
        "beats_champion",
    } <= names


def test_jobs_cover_the_graph() -> None:
    for job in ("ingest_job", "training_job", "scoring_job", "served_predictions_job"):
        assert defs.resolve_job_def(job) is not None


def test_served_predictions_are_compacted_the_next_night() -> None:
    schedule = defs.resolve_schedule_def("served_predictions_schedule")
    assert schedule.cron_schedule == "30 1 * * *"
    assert schedule.job_name == "served_predictions_job"


def test_settings_drive_every_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_LAKE_URI", "s3://bucket/lake")
    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    resources = build_resources(Settings())
    assert resources["landing"].uri == str(tmp_path / "landing")
    assert resources["lake"].root_uri == "s3://bucket/lake"
    assert resources["mlflow_tracking"].tracking_uri == "http://mlflow:5000"
    assert resources["mlflow_tracking"].artifact_root == str(tmp_path / "mlflow" / "artifacts")


def test_wrong_settings_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("MLOPS_MAX_REJECT_SHARE", "1.5")
    with pytest.raises(ValidationError, match="max_reject_share"):
        Settings()


def test_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    env = {**os.environ, "MLOPS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`MLOPS_{name.upper()}`" in readme, name


def test_loading_the_code_location_prints_nothing(tmp_path: Path) -> None:
    """Every ``dagster dev``, step process and CLI call loads the definitions: Dagster's beta
    and preview notices of the features used on purpose must not be printed each time."""
    done = subprocess.run(
        [sys.executable, "-c", "import mlops_assets.definitions"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "MLOPS_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "" and done.stderr == "", done.stderr[-3000:]
