"""A 30-day backfill of the partitioned assets from the CLI (`--partition-range`): one run, one
Delta commit per table, every day's materialization recorded. The UI's backfill, clicked in a
real browser on `dagster dev` with its daemon, is test_browser_ui.py's."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from deltalake import DeltaTable

from mlops_assets.datagen import GeneratorConfig, write_days

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START = date(2026, 1, 1)
DAYS = 30
END = START + timedelta(days=DAYS - 1)
INGEST = [
    "raw_transactions",
    "validated_transactions",
    "quarantined_transactions",
    "transaction_features",
]


def project(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    write_days(START, DAYS, GeneratorConfig(rows_per_day=300, seed=2), home / "landing")
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env.update(
        MLOPS_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), MLOPS_AUTOMATION_ENABLED="false"
    )
    return env


def check_lake(env: dict[str, str]) -> None:
    features = DeltaTable(f"{env['MLOPS_HOME']}/lake/gold/transaction_features")
    assert features.version() == 0  # the whole range is one commit
    dates = set(features.to_pyarrow_table(columns=["txn_date"]).column("txn_date").to_pylist())
    assert dates == {START + timedelta(days=i) for i in range(DAYS)}


def materialized(env: dict[str, str], key: str) -> set[str]:
    ref = InstanceRef.from_dir(env["DAGSTER_HOME"])
    with dg.DagsterInstance.from_ref(ref) as instance:
        return instance.get_materialized_partitions(dg.AssetKey(key))


def test_cli_backfills_thirty_days_in_one_run(tmp_path: Path) -> None:
    env = project(tmp_path)
    result = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "mlops_assets.definitions",
            "--select",
            ",".join(INGEST),
            "--partition-range",
            f"{START}...{END}",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {(START + timedelta(days=i)).isoformat() for i in range(DAYS)}
    for key in INGEST:
        assert materialized(env, key) == expected, key
    check_lake(env)
