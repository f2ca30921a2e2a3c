"""The candidates' ONNX gate: export a fitted model, compare it with the native one on the
holdout, and say so as MLflow tags and a blocking asset check (``onnx_matches_native``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.train.onnx_export import (
    EXPORTERS,
    ONNX_ARTIFACT,
    TOLERANCE,
    OnnxScorer,
    Parity,
    export_onnx,
    onnx_parity,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ONNX_CHECK = "onnx_matches_native"


@dataclass(frozen=True)
class OnnxOutcome:
    """What exporting one candidate to ONNX gave: the model and its parity, or the error."""

    family: str
    exporter: str
    model: bytes | None
    parity: Parity | None
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.parity is not None and self.parity.ok

    def tags(self, artifact: str | None) -> dict[str, str]:
        """The ``onnx.*`` tags of the model version (``artifact``: where it was logged)."""
        tags = {
            "onnx.parity": "passed" if self.passed else "failed",
            "onnx.exporter": self.exporter,
            "onnx.tolerance": repr(TOLERANCE),
        }
        if artifact:
            tags["onnx.artifact"] = artifact
        if self.parity is not None:
            tags["onnx.max_abs_diff"] = f"{self.parity.max_abs_diff:.3e}"
        if self.error:
            tags["onnx.error"] = self.error[:500]
        return tags

    def check_result(self) -> dg.AssetCheckResult:
        if self.parity is None:
            return dg.AssetCheckResult(
                check_name=ONNX_CHECK,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"The {self.family} model could not be exported to ONNX "
                f"({self.exporter}): {self.error}",
                metadata={"tolerance": TOLERANCE, "error": self.error or ""},
            )
        parity = self.parity
        verdict = "within" if parity.ok else "over"
        return dg.AssetCheckResult(
            check_name=ONNX_CHECK,
            passed=parity.ok,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"ONNX vs native fraud scores on {parity.rows} holdout rows: max abs "
            f"difference {parity.max_abs_diff:.3e}, {verdict} the tolerance {parity.tolerance:g}",
            metadata={**parity.as_metadata(), "exporter": self.exporter},
        )


def onnx_outcome(
    family: str,
    model: Any,
    holdout: pd.DataFrame,
    native_scores: np.ndarray,
    tolerance: float = TOLERANCE,
) -> OnnxOutcome:
    """Export ``model`` and score ``holdout`` with onnxruntime; an export or scoring failure is
    an outcome (the candidate still registers), never an exception."""
    exporter = EXPORTERS.get(family, "none")
    started = time.perf_counter()
    try:
        exported = export_onnx(family, model)
    except Exception as error:
        return OnnxOutcome(family, exporter, None, None, f"{type(error).__name__}: {error}")
    try:
        onnx_scores = OnnxScorer(family, exported)(holdout)
    except Exception as error:
        message = f"onnxruntime could not score the export: {type(error).__name__}: {error}"
        return OnnxOutcome(family, exporter, exported, None, message)
    parity = onnx_parity(native_scores, onnx_scores, tolerance)
    return OnnxOutcome(family, exporter, exported, parity, seconds=time.perf_counter() - started)


def log_onnx(outcome: OnnxOutcome) -> str | None:
    """Log the exported model to the active MLflow run; the artifact path (None: nothing)."""
    import tempfile
    from pathlib import Path

    import mlflow

    if outcome.model is None:
        return None
    directory, name = ONNX_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(outcome.model)
        mlflow.log_artifact(str(path), artifact_path=directory)
    return ONNX_ARTIFACT


def onnx_check_spec(asset_key: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        ONNX_CHECK,
        asset=asset_key,
        blocking=True,
        description="The ONNX copy of the model (MLflow artifact onnx/model.onnx, tag "
        f"onnx.artifact) scores the held-out rows within {TOLERANCE:g} of the native model; "
        "a failed export fails the check. The ONNX runtime of the service serves only versions "
        "that passed.",
    )
