"""ONNX: real fitted models of both families export and score within 1e-5 of the native ones,
the parity gate fails a copy that is off, the trained candidates carry the ONNX tags and the
passed check, the service on the ONNX runtime answers what the native one answers, a version
without an ONNX copy is refused clearly (the old one keeps serving), and the setting validates."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
import numpy as np
import onnx
import pandas as pd
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException
from onnx import numpy_helper
from pydantic import ValidationError

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.registry.champion import find_alias, load_scorer
from mlops_assets.serve.model_holder import ModelHolder
from mlops_assets.settings import Settings
from mlops_assets.train.checks import ONNX_CHECK, onnx_outcome
from mlops_assets.train.families import MlpFamily, XGBoostFamily
from mlops_assets.train.onnx_export import OnnxScorer, export_onnx, onnx_parity
from mlops_assets_tests.helpers import feature_days
from mlops_assets_tests.serve_world import NAME, World

D = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    frame = feature_days(D, GeneratorConfig(rows_per_day=1_500, seed=4)).to_pandas()
    frame.loc[frame.index[0], "type"] = None  # a missing and an unseen type: the OOV slot
    frame.loc[frame.index[1], "type"] = "CRYPTO"
    return frame


@pytest.fixture(scope="module")
def fitted(frame: pd.DataFrame) -> dict[str, object]:
    return {
        "xgboost": XGBoostFamily(threads=1).fit(frame, {"n_estimators": 60, "max_depth": 5}),
        "mlp": MlpFamily().fit(frame, {"batch_size": 512, "epochs": 1}),
    }


FAMILIES = {"xgboost": XGBoostFamily(threads=1), "mlp": MlpFamily()}


@pytest.mark.parametrize("family", ["xgboost", "mlp"])
def test_onnx_scores_match_native_within_the_tolerance(
    family: str, frame: pd.DataFrame, fitted: dict[str, object]
) -> None:
    model = fitted[family]
    native = FAMILIES[family].scores(model, frame)
    scorer = OnnxScorer(family, export_onnx(family, model), threads=1)
    parity = onnx_parity(native, scorer(frame))
    assert parity.ok and parity.rows == len(frame), parity
    assert parity.max_abs_diff <= 1e-5
    assert scorer(frame.head(0)).shape == (0,)
    one = scorer(frame.head(1))
    assert one.shape == (1,) and one.dtype == np.float64


def test_parity_fails_past_the_tolerance() -> None:
    ok = onnx_parity(np.array([0.1, 0.2]), np.array([0.1, 0.2 + 5e-6]))
    assert ok.ok and ok.max_abs_diff == pytest.approx(5e-6)
    off = onnx_parity(np.array([0.1, 0.2]), np.array([0.1, 0.2 + 2e-5]))
    assert not off.ok and off.max_abs_diff == pytest.approx(2e-5)
    assert not onnx_parity(np.array([0.1]), np.array([np.nan])).ok
    assert not onnx_parity(np.array([0.1, 0.2]), np.array([0.1])).ok


def _perturbed(exported: bytes) -> bytes:
    """The ONNX copy with the classifier's output bias nudged: scores move by about 1e-3."""
    model = onnx.load_from_string(exported)
    initializers = [i for i in model.graph.initializer if i.name.startswith("classifier_")]
    bias = next(i for i in reversed(initializers) if len(i.dims) == 1 and i.dims[0] == 1)
    nudged = numpy_helper.to_array(bias) + np.float32(0.05)
    bias.CopyFrom(numpy_helper.from_array(nudged.astype(np.float32), bias.name))
    return model.SerializeToString()


def test_the_check_fails_a_copy_that_is_off(frame: pd.DataFrame, fitted: dict[str, object]) -> None:
    model = fitted["mlp"]
    native = MlpFamily().scores(model, frame)
    passed = onnx_outcome("mlp", model, frame, native)
    assert passed.passed and passed.check_result().passed
    assert passed.tags("onnx/model.onnx")["onnx.parity"] == "passed"
    off = OnnxScorer("mlp", _perturbed(passed.model))(frame)
    parity = onnx_parity(native, off)
    assert not parity.ok and parity.max_abs_diff > 1e-5
    # an export that fails: a failed check with the reason, tags that say so, no exception
    broken = onnx_outcome("mlp", object(), frame, native)
    result = broken.check_result()
    assert not result.passed and result.check_name == ONNX_CHECK
    assert "could not be exported" in (result.description or "")
    tags = broken.tags(None)
    assert tags["onnx.parity"] == "failed" and "onnx.artifact" not in tags


def test_setting_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().serve_runtime == "native"
    monkeypatch.setenv("MLOPS_SERVE_RUNTIME", "onnx")
    assert Settings().serve_runtime == "onnx"
    monkeypatch.setenv("MLOPS_SERVE_RUNTIME", "tensorrt")
    with pytest.raises(ValidationError, match="serve_runtime"):
        Settings()


# ---------------------------------------------------------------- the trained world, served


def test_candidates_carry_the_onnx_copy_and_the_passed_check(world: World) -> None:
    versions = world.client.search_model_versions(f"name='{NAME}'")
    families = {}
    for version in versions:
        tags = version.tags
        if "onnx.parity" in tags:
            families[tags["model_family"]] = tags
    assert set(families) == {"xgboost", "mlp"}
    for tags in families.values():
        assert tags["onnx.parity"] == "passed"
        assert tags["onnx.artifact"] == "onnx/model.onnx"
        assert float(tags["onnx.max_abs_diff"]) <= 1e-5
        assert tags["onnx.exporter"]
    for family in families:
        key = dg.AssetCheckKey(dg.AssetKey(f"{family}_candidate"), ONNX_CHECK)
        record = world.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])
        assert record[key].status == AssetCheckExecutionRecordStatus.SUCCEEDED, family
        event = world.instance.get_latest_materialization_event(dg.AssetKey(f"{family}_candidate"))
        metadata = event.asset_materialization.metadata
        assert metadata["onnx_parity"].value == "passed"
        assert set(metadata["global_importances"].value) >= {"amount", "orig_balance_error"}


def test_the_onnx_runtime_serves_the_native_scores(world: World) -> None:
    chunk = world.requests[:200]
    answers = {}
    for runtime in ("native", "onnx"):
        with TestClient(world.app(runtime=runtime)) as client:
            info = client.get("/model-info").json()
            assert info["runtime"] == runtime
            batch = client.post("/predict/batch", json={"transactions": chunk}).json()
            singles = [client.post("/predict", json=r).json() for r in chunk[:20]]
            answers[runtime] = (batch, singles, info["version"])
    native, onnx_ = answers["native"], answers["onnx"]
    assert native[2] == onnx_[2]
    left = np.array([p["fraud_score"] for p in native[0]["predictions"]])
    right = np.array([p["fraud_score"] for p in onnx_[0]["predictions"]])
    assert np.abs(left - right).max() <= 1e-5
    assert [p["fraud_score"] for p in native[1]] == pytest.approx(
        [p["fraud_score"] for p in onnx_[1]], abs=1e-5
    )
    # explanations come from the native model behind the ONNX scorer
    with TestClient(world.app(runtime="onnx")) as client:
        body = client.post("/predict?explain=true", json=chunk[0]).json()
        assert len(body["explanation"]) == 5


@pytest.fixture
def without_onnx(world: World) -> Iterator[str]:
    """A version of the champion's model registered without any ONNX tag, behind alias
    ``no_onnx``; removed afterwards."""
    client = world.client
    champion = client.get_model_version_by_alias(NAME, "champion")
    tags = {k: v for k, v in champion.tags.items() if not k.startswith("onnx.")}
    version = client.create_model_version(
        NAME, source=champion.source, run_id=champion.run_id, tags=tags
    )
    yield str(version.version)
    with contextlib.suppress(MlflowException):
        client.delete_registered_model_alias(NAME, "no_onnx")
    client.delete_model_version(NAME, str(version.version))


def test_a_version_without_onnx_is_refused_and_the_old_one_keeps_serving(
    world: World, without_onnx: str
) -> None:
    client = world.client
    model = find_alias(client, NAME, "champion")
    assert model is not None
    client.set_registered_model_alias(NAME, "no_onnx", model.version)
    holder = ModelHolder(
        world.resources["mlflow_tracking"].client,
        NAME,
        "no_onnx",
        functools.partial(load_scorer, runtime="onnx"),
    )
    assert holder.reload().ok and holder.current is not None
    assert holder.current.scorer.runtime == "onnx"
    client.set_registered_model_alias(NAME, "no_onnx", without_onnx)
    outcome = holder.reload()
    assert not outcome.ok and outcome.version == model.version
    assert "has no ONNX artifact" in (outcome.error or "")
    assert "MLOPS_SERVE_RUNTIME=native" in (outcome.error or "")
    assert holder.current.version == model.version
    unknown = find_alias(client, NAME, "no_onnx")
    assert unknown is not None
    with pytest.raises(ValueError, match="Unknown scoring runtime"):
        load_scorer(unknown, runtime="tensorrt")
