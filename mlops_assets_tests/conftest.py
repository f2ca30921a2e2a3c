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


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Embedded-default settings rooted in a fresh temporary project home."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    return Settings()


@pytest.fixture
def resources(settings: Settings) -> dict[str, Any]:
    return build_resources(settings)
