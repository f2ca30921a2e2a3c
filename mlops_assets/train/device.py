"""Which device a training run uses: the GPU when one is there, else the CPU.

Set ``MLOPS_TRAINING_DEVICE`` to choose: ``auto`` (the default) takes a GPU when the library can
use one and one is visible, ``cpu`` forces the CPU, and ``cuda`` demands a GPU and fails with a
``RuntimeError`` when there is none (an explicit request never falls back silently).

The checks are cheap when there is no GPU: no ``nvidia-smi`` on the ``PATH`` answers in
microseconds, and its answer is cached. TensorFlow is imported only by :func:`tensorflow_device`,
so importing this module stays fast.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

DEVICE_ENV = "MLOPS_TRAINING_DEVICE"
DeviceRequest = Literal["auto", "cpu", "cuda"]
_REQUESTS: tuple[DeviceRequest, ...] = ("auto", "cpu", "cuda")
_NVIDIA_SMI_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class TrainingDevice:
    """The device a model was trained on, for the MLflow tag ``lineage.device``."""

    kind: Literal["cpu", "gpu"]
    name: str
    """``cpu``, or the GPU's name (``NVIDIA A10G``, ``/physical_device:GPU:0``...)."""
    detail: str = ""
    """How the library was told to use it (``xgboost device=cuda``...)."""

    def tag(self) -> str:
        """The value of ``lineage.device``: ``cpu``, or ``gpu (NVIDIA A10G)``."""
        if self.kind == "cpu":
            return "cpu"
        return f"gpu ({self.name})"


def requested_device() -> DeviceRequest:
    """The device asked for in ``MLOPS_TRAINING_DEVICE`` (``auto`` when unset or empty)."""
    value = os.environ.get(DEVICE_ENV, "").strip().lower() or "auto"
    if value not in _REQUESTS:
        raise ValueError(
            f"{DEVICE_ENV}={value!r} is not a training device; use one of {', '.join(_REQUESTS)}"
        )
    return value  # type: ignore[return-value]


def visible_gpus() -> tuple[str, ...]:
    """Names of the NVIDIA GPUs this process may use (empty without a driver or a GPU)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return ()
    return _nvidia_smi_gpus()


@functools.cache
def _nvidia_smi_gpus() -> tuple[str, ...]:
    """GPU names listed by ``nvidia-smi -L`` (``GPU 0: NVIDIA A10G (UUID: ...)``), cached."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return ()
    try:
        listing = subprocess.run(
            [executable, "-L"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if listing.returncode != 0:
        return ()
    return tuple(
        line.split(":", 1)[1].split("(UUID", 1)[0].strip()
        for line in listing.stdout.splitlines()
        if line.startswith("GPU ") and ":" in line
    )


def xgboost_has_cuda() -> bool:
    """Whether the installed XGBoost was built with CUDA support."""
    import xgboost

    return bool(xgboost.build_info().get("USE_CUDA", False))


def xgboost_training_device() -> TrainingDevice:
    """The device XGBoost trains on, following ``MLOPS_TRAINING_DEVICE``."""
    request = requested_device()
    if request == "cpu":
        return TrainingDevice(kind="cpu", name="cpu", detail=f"xgboost device=cpu ({DEVICE_ENV})")
    gpus = visible_gpus() if xgboost_has_cuda() else ()
    if gpus:
        return TrainingDevice(kind="gpu", name=gpus[0], detail="xgboost device=cuda")
    if request == "cuda":
        raise RuntimeError(_no_gpu_message("XGBoost", _xgboost_missing()))
    return TrainingDevice(kind="cpu", name="cpu", detail="xgboost device=cpu (no usable GPU)")


def xgboost_device() -> str:
    """The value for XGBoost's ``device`` parameter: ``cuda`` or ``cpu``."""
    return "cuda" if xgboost_training_device().kind == "gpu" else "cpu"


def tensorflow_training_device() -> TrainingDevice:
    """The device TensorFlow trains on, following ``MLOPS_TRAINING_DEVICE``.

    Imports TensorFlow (seconds), so call it from training code only.
    """
    request = requested_device()
    if request == "cpu":
        return TrainingDevice(kind="cpu", name="cpu", detail=f"tensorflow /CPU:0 ({DEVICE_ENV})")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = str(details.get("device_name", gpus[0].name))
        return TrainingDevice(kind="gpu", name=name, detail=f"tensorflow {len(gpus)} GPU(s)")
    if request == "cuda":
        reason = (
            "TensorFlow sees no GPU "
            f"(tensorflow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()})"
        )
        raise RuntimeError(_no_gpu_message("TensorFlow", reason))
    return TrainingDevice(kind="cpu", name="cpu", detail="tensorflow /CPU:0 (no GPU)")


def tensorflow_device() -> str:
    """``gpu`` when TensorFlow trains on a GPU, else ``cpu``."""
    return tensorflow_training_device().kind


def _xgboost_missing() -> str:
    """Why XGBoost cannot train on a GPU here."""
    if not xgboost_has_cuda():
        return "the installed XGBoost was built without CUDA"
    return (
        "no NVIDIA GPU is visible (no nvidia-smi on the PATH, no GPU listed by it, "
        "or CUDA_VISIBLE_DEVICES hides them)"
    )


def _no_gpu_message(library: str, reason: str) -> str:
    return (
        f"{DEVICE_ENV}=cuda asks for a GPU but {library} cannot use one: {reason}. "
        f"Run on a machine with a GPU, or set {DEVICE_ENV}=auto or cpu"
    )
