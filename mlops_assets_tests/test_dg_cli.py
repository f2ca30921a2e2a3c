"""Dagster's current tooling over this code location: `dg check defs`, `dg list defs` and
`dg dev` load it through [tool.dg] in pyproject.toml (as `dagster dev -w workspace.yaml` does),
and every asset carries its stage's owner and a reference to the code that defines it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import OWNERS, defs
from mlops_assets_tests.browser import LOCATION, running_dagster_dev
from mlops_assets_tests.helpers import free_port, graphql
from mlops_assets_tests.test_definitions import EXPECTED_ASSETS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DG = Path(sys.executable).parent / "dg"


def _environment(tmp_path: Path) -> dict[str, str]:
    """A new user's environment: a fresh project home and Dagster instance, no MLOPS_ setting."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env.update(MLOPS_HOME=str(tmp_path / "home"), DAGSTER_HOME=str(dagster_home))
    return env


def _dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DG), *args],
        cwd=PROJECT_ROOT,
        env=_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_asset_has_an_owner_and_a_code_reference() -> None:
    for spec in defs.resolve_all_asset_specs():
        assert spec.owners == [OWNERS[spec.group_name]], spec.key
        if spec.key.to_user_string() == "transaction_stream":
            continue  # external: no code of ours materializes it
        references = spec.metadata["dagster/code_references"].code_references
        assert isinstance(references[0], dg.LocalFileCodeReference), spec.key
        assert Path(references[0].file_path).is_file(), references


@pytest.mark.slow
def test_dg_check_defs_passes(tmp_path: Path) -> None:
    result = _dg(tmp_path, "check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


@pytest.mark.slow
def test_dg_list_defs_lists_the_assets_checks_and_jobs(tmp_path: Path) -> None:
    result = _dg(tmp_path, "list", "defs", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(result.stdout)
    assets = {a["asset_key"]: a for a in listed["assets"]}
    assert set(assets) == EXPECTED_ASSETS
    assert assets["validated_transactions"]["group_name"] == "validate"
    assert assets["validated_transactions"]["owners"] == [{"team": "data-platform"}]
    assert "delta" in assets["validated_transactions"]["kinds"]
    checks = {c["key"] for c in listed["asset_checks"]}
    assert "validated_transactions:reject_share_within_threshold" in checks
    assert "challenger_model:beats_champion" in checks
    assert {"ingest_job", "training_job", "scoring_job"} <= {j["name"] for j in listed["jobs"]}


LOCATION_CONTENTS = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  location { name } assetNodes { assetKey { path } } jobs { name } schedules { name }
  sensors { name } } } } }"""


@pytest.mark.slow
def test_dg_dev_serves_every_asset_job_schedule_and_sensor(tmp_path: Path) -> None:
    """`dg dev` (the location from [tool.dg], no workspace file) as the UI reads it."""
    env = _environment(tmp_path)
    with running_dagster_dev(env, free_port(), tmp_path / "dg-dev.log", dg=True) as dev:
        nodes = graphql(dev.wait_loaded(), LOCATION_CONTENTS)["repositoriesOrError"]["nodes"]
    [location] = [node for node in nodes if node["location"]["name"] == LOCATION]
    assert {"/".join(a["assetKey"]["path"]) for a in location["assetNodes"]} == EXPECTED_ASSETS
    jobs = {job["name"] for job in location["jobs"]}
    assert {"ingest_job", "training_job", "scoring_job"} <= jobs, jobs
    assert {s.name for s in defs.schedules or []} == {s["name"] for s in location["schedules"]}
    assert {s.name for s in defs.sensors or []} == {s["name"] for s in location["sensors"]}
