"""The code location imports light: no data or ML library is loaded by ``import
mlops_assets.definitions`` alone.

Every sensor tick, every step process of the multiprocess executor and every k8s step pod imports
the code location first; the heavy libraries are imported inside the functions that use them.
Not a timed test (timings are noisy): it asserts which modules a fresh interpreter has loaded.
When it fails, ``python -X importtime -c 'import mlops_assets.definitions' 2>&1 | grep -B5 NAME``
shows which of the project's modules pulled NAME in at its top level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: top-level packages the code location must not import (directly or through another package)
HEAVY = (
    "sklearn",
    "scipy",
    "evidently",
    "xgboost",
    "tensorflow",
    "keras",
    "torch",
    "pyspark",
    "optuna",
    "optuna_integration",
    "mlflow",
    "onnx",
    "onnxruntime",
    "onnxmltools",
    "pandera",
    "pandas",
    "numpy",
    "polars",
    "pyarrow",
    "duckdb",
    "deltalake",
    "matplotlib",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "fastavro",
    "confluent_kafka",
    "boto3",
    "sqlalchemy",
    "dagster_pyspark",
)

_PROBE = "import json, sys; import mlops_assets.definitions; print(json.dumps(sorted(sys.modules)))"


def loaded_by_definitions(home: Path) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing the code location."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=PROJECT_ROOT,
        env={**os.environ, "MLOPS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    return {name.split(".")[0] for name in modules}


def test_the_code_location_imports_no_heavy_library(tmp_path: Path) -> None:
    loaded = loaded_by_definitions(tmp_path / "home")
    assert "mlops_assets" in loaded and "dagster" in loaded
    heavy = sorted(loaded.intersection(HEAVY))
    assert not heavy, (
        f"import mlops_assets.definitions loaded {heavy}: import them inside the functions "
        "that use them (and annotate with `if TYPE_CHECKING:` imports)"
    )
