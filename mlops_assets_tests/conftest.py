"""Shared fixtures: an isolated project home per test and the resources built from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlops_assets.environment import build_resources
from mlops_assets.settings import Settings

pytest_plugins = [
    "mlops_assets_tests.mlflow_server",
    "mlops_assets_tests.postgres",
    "mlops_assets_tests.webhook",
    "mlops_assets_tests.s3_server",
    "mlops_assets_tests.kafka_broker",
    "mlops_assets_tests.serve_world",
    "mlops_assets_tests.browser",  # failing browser tests leave a screenshot
]


#: The test files that take longest (wall time of setup + calls, slowest first; measured from
#: scripts/test's report, `.pytest-artifacts/junit.xml`, see scripts/suite_report.py). Collected
#: first, and given to the two workers in this order (`--dist loadfile --no-loadscope-reorder`
#: in scripts/test): the long files start at once and the short ones fill the gaps at the end,
#: instead of a long file starting last and running alone (longest processing time first).
SLOWEST_FILES = (
    "test_browser_ui.py",
    "test_spark_s3.py",
    "test_distributed_tuning.py",
    "test_demo.py",
    "test_pipeline.py",
    "test_automation.py",
    "test_monitoring_loop.py",
    "test_serve_monitoring.py",
    "test_spark.py",
    "test_stream_pipeline.py",
    "test_executor.py",
    "test_backfill.py",
    "test_mlflow_tracking.py",
    "test_stream_ingest.py",
    "test_postgres_instance.py",
    "test_auth.py",
    "test_serve.py",
    "test_model_factory.py",
    "test_postgres_stores.py",
    "test_dg_cli.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first (``SLOWEST_FILES``), then the rest in their usual order; the
    tests of a file stay together and in order (the sort is stable)."""
    rank = {name: position for position, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Embedded-default settings rooted in a fresh temporary project home."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    return Settings()


@pytest.fixture
def resources(settings: Settings) -> dict[str, Any]:
    return build_resources(settings)
