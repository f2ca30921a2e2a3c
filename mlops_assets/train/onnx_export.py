"""ONNX copies of the trained models, the parity rule that gates them, and an onnxruntime scorer.

Exporters, per family:

* XGBoost: ``onnxmltools.convert_xgboost`` on a copy of the booster whose features are renamed
  ``f0..fN`` (the converter only reads that naming), with one ``FloatTensorType`` input
  ``features`` ``[N, 24]``. XGBoost compares float32 values at its splits too, so the two agree
  to float rounding of the summed leaves (about 1e-7).
* MLP: Keras 3's ``model.export(path, format="onnx")`` (which runs tf2onnx) on the dense
  ``classifier`` sub-model, and the preprocessing written as a few ONNX ops from the model's own
  adapted weights: ``sign(x) * log(1 + |x|)``, the ``Normalization`` mean and variance, and the
  type's one-hot through ``ai.onnx.ml.CategoryMapper`` over the ``StringLookup`` vocabulary
  (unknown and missing types in the out-of-vocabulary slot, as in Keras). Both tf2onnx routes
  fail on the whole Keras 3 model with the pinned TensorFlow 2.21: the ``StringLookup`` hash
  table ("Could not determine table shared name") and ``Log1p`` (unsupported op) do not convert,
  and ``tf2onnx.convert.from_function`` over a rewritten function turns the captured weights into
  graph inputs. The parity check below is what proves the pieces equal to the native model.

Inputs of every exported graph: ``features`` (float32 ``[N, len(FEATURE_COLUMNS)]``) and, for
the MLP, ``type`` (string ``[N]``). Heavy imports (onnx converters, TensorFlow) happen inside
the export functions; scoring needs only onnxruntime.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.features.definition import FEATURE_COLUMNS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Where the ONNX copy is logged in the candidate's MLflow run.
ONNX_ARTIFACT = "onnx/model.onnx"
#: Largest absolute difference of fraud probabilities between ONNX and native on the holdout.
TOLERANCE = 1e-5
#: ``onnx.exporter`` tag values.
EXPORTERS = {
    "xgboost": "onnxmltools.convert_xgboost",
    "mlp": "keras.export(onnx, tf2onnx) + onnx preprocessing",
}
_OPSET = 15
_CATEGORY_COLUMN = "type"


@dataclass(frozen=True)
class Parity:
    """How close the ONNX copy's scores are to the native model's."""

    max_abs_diff: float
    ok: bool
    rows: int
    tolerance: float

    def as_metadata(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "rows": self.rows,
            "tolerance": self.tolerance,
        }


def onnx_parity(
    native_scores: np.ndarray, onnx_scores: np.ndarray, tolerance: float = TOLERANCE
) -> Parity:
    """The largest absolute score difference and whether it is within ``tolerance``; scores of
    different lengths, or any NaN, fail."""
    import numpy as np

    native = np.asarray(native_scores, dtype=np.float64).reshape(-1)
    exported = np.asarray(onnx_scores, dtype=np.float64).reshape(-1)
    if native.shape != exported.shape:
        return Parity(float("inf"), False, len(native), tolerance)
    if len(native) == 0:
        return Parity(0.0, True, 0, tolerance)
    diff = float(np.max(np.abs(native - exported)))
    if not np.isfinite(diff):
        return Parity(float("inf"), False, len(native), tolerance)
    return Parity(diff, diff <= tolerance, len(native), tolerance)


def export_onnx(family: str, model: Any) -> bytes:
    """The serialized ONNX model of a fitted model of ``family`` (``xgboost`` or ``mlp``)."""
    if family == "xgboost":
        return export_xgboost(model)
    if family == "mlp":
        return export_mlp(model)
    raise ValueError(f"No ONNX exporter for model family {family!r}")


def export_xgboost(model: Any) -> bytes:
    """An ``XGBClassifier`` (or its booster) as ONNX: ``features`` in, ``probabilities`` out."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = (model.get_booster() if hasattr(model, "get_booster") else model).copy()
    booster.feature_names = [f"f{i}" for i in range(len(FEATURE_COLUMNS))]
    booster.feature_types = None
    converted = onnxmltools.convert_xgboost(
        booster,
        initial_types=[("features", FloatTensorType([None, len(FEATURE_COLUMNS)]))],
        target_opset=_OPSET,
    )
    return converted.SerializeToString()


def export_mlp(model: Any) -> bytes:
    """The Keras MLP (``train/mlp.py``) as ONNX: ``features`` and ``type`` in, probability out."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    normalize = model.get_layer("normalize")
    lookup = model.get_layer("type_one_hot")
    classifier = model.get_layer("classifier")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classifier.onnx"
        classifier.export(str(path), format="onnx", verbose=False)
        dense = onnx.load(str(path))
    opsets = {o.domain: o.version for o in dense.opset_import}
    vocabulary = [str(v) for v in lookup.get_vocabulary()]
    oov = int(lookup.num_oov_indices)
    mean = np.asarray(normalize.mean, dtype=np.float32).reshape(1, -1)
    variance = np.asarray(normalize.variance, dtype=np.float32).reshape(1, -1)
    scale = np.maximum(np.sqrt(variance), np.float32(1e-7)).astype(np.float32)
    width = len(FEATURE_COLUMNS)
    joined = "mlops_joined"
    nodes = [
        helper.make_node("Abs", ["features"], ["abs"]),
        helper.make_node("Add", ["abs", "one"], ["abs_plus_one"]),
        helper.make_node("Log", ["abs_plus_one"], ["log_abs"]),
        helper.make_node("Sign", ["features"], ["sign"]),
        helper.make_node("Mul", ["sign", "log_abs"], ["logged"]),
        helper.make_node("Sub", ["logged", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["scaled"]),
        helper.make_node(
            "CategoryMapper",
            ["type"],
            ["type_index"],
            domain="ai.onnx.ml",
            cats_strings=vocabulary[oov:],
            cats_int64s=list(range(oov, len(vocabulary))),
            default_int64=0,
        ),
        helper.make_node("OneHot", ["type_index", "depth", "on_off"], ["type_one_hot"], axis=-1),
        helper.make_node("Concat", ["scaled", "type_one_hot"], [joined], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"),
        numpy_helper.from_array(mean, "mean"),
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(np.array(len(vocabulary), dtype=np.int64), "depth"),
        numpy_helper.from_array(np.array([0.0, 1.0], dtype=np.float32), "on_off"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlops_preprocessing",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width]),
            helper.make_tensor_value_info(_CATEGORY_COLUMN, TensorProto.STRING, [None]),
        ],
        [helper.make_tensor_value_info(joined, TensorProto.FLOAT, [None, None])],
        initializers,
    )
    preprocessing = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        ir_version=dense.ir_version,
    )
    whole = onnx.compose.merge_models(
        preprocessing,
        dense,
        io_map=[(joined, dense.graph.input[0].name)],
        prefix2="classifier_",
    )
    onnx.checker.check_model(whole)
    return whole.SerializeToString()


def onnx_inputs(family: str, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The exported graph's inputs for raw feature rows."""
    import numpy as np

    inputs = {"features": frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32)}
    if family == "mlp":
        inputs[_CATEGORY_COLUMN] = frame[_CATEGORY_COLUMN].to_numpy(dtype=object, na_value="")
    return inputs


class OnnxScorer:
    """Fraud probabilities (float64) of a feature frame from an ONNX model with onnxruntime:
    one session, ``threads`` intra-op threads (None: onnxruntime's default), run sequentially
    (for one row at a time the thread pool is overhead, not help)."""

    def __init__(self, family: str, model: bytes | str, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.family = family
        self.session = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        outputs = [o.name for o in self.session.get_outputs()]
        # XGBoost's graph answers (label, probabilities [N, 2]); the MLP's, the probability
        self._output = outputs[1] if family == "xgboost" else outputs[0]

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        if len(frame) == 0:
            return np.empty(0, dtype=np.float64)
        (out,) = self.session.run([self._output], onnx_inputs(self.family, frame))
        out = np.asarray(out, dtype=np.float64)
        return out[:, 1] if self.family == "xgboost" else out.reshape(-1)
