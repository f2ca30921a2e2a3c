"""The training device: the CPU here (no accelerator), the MLOPS_TRAINING_DEVICE override, and
the GPU choice with a stand-in ``nvidia-smi``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_assets.train import device
from mlops_assets.train.device import (
    DEVICE_ENV,
    TrainingDevice,
    requested_device,
    tensorflow_device,
    tensorflow_training_device,
    visible_gpus,
    xgboost_device,
    xgboost_training_device,
)

NO_GPU_HERE = not visible_gpus()


@pytest.fixture(autouse=True)
def fresh_detection(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No override, no CUDA_VISIBLE_DEVICES, and GPU detection not cached across tests."""
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    device._nvidia_smi_gpus.cache_clear()
    yield
    device._nvidia_smi_gpus.cache_clear()


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Put an executable ``nvidia-smi`` running ``script`` first on the PATH."""
    executable = tmp_path / "nvidia-smi"
    executable.write_text(f"#!/bin/sh\n{script}\n")
    executable.chmod(executable.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def one_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with one NVIDIA GPU and a CUDA build of XGBoost."""
    fake_nvidia_smi(
        tmp_path, monkeypatch, "echo 'GPU 0: NVIDIA A10G (UUID: GPU-0a1b2c3d-0000-1111-2222)'"
    )
    monkeypatch.setattr(device, "xgboost_has_cuda", lambda: True)


def test_request_defaults_to_auto_and_is_case_insensitive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert requested_device() == "auto"
    monkeypatch.setenv(DEVICE_ENV, "")
    assert requested_device() == "auto"
    monkeypatch.setenv(DEVICE_ENV, " CPU ")
    assert requested_device() == "cpu"


def test_an_unknown_request_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match=r"MLOPS_TRAINING_DEVICE='tpu'.*auto, cpu, cuda"):
        xgboost_device()


@pytest.mark.skipif(not NO_GPU_HERE, reason="this machine has a GPU")
def test_without_a_gpu_training_runs_on_the_cpu() -> None:
    assert xgboost_device() == "cpu"
    assert tensorflow_device() == "cpu"
    assert xgboost_training_device().tag() == "cpu"
    assert tensorflow_training_device() == TrainingDevice(
        kind="cpu", name="cpu", detail="tensorflow /CPU:0 (no GPU)"
    )


@pytest.mark.skipif(not NO_GPU_HERE, reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(RuntimeError, match="MLOPS_TRAINING_DEVICE=cuda asks for a GPU but XGBoost"):
        xgboost_device()
    with pytest.raises(RuntimeError, match="TensorFlow sees no GPU"):
        tensorflow_device()


def test_cpu_request_forces_the_cpu_even_with_a_gpu(
    one_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert xgboost_device() == "cpu"
    assert tensorflow_device() == "cpu"
    assert "MLOPS_TRAINING_DEVICE" in xgboost_training_device().detail


def test_a_visible_gpu_is_used_by_xgboost(one_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert visible_gpus() == ("NVIDIA A10G",)
    assert xgboost_device() == "cuda"
    assert xgboost_training_device().tag() == "gpu (NVIDIA A10G)"
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    assert xgboost_device() == "cuda"


def test_cuda_visible_devices_can_hide_the_gpu(
    one_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == ()
    assert xgboost_device() == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(RuntimeError, match="no NVIDIA GPU is visible"):
        xgboost_device()


def test_a_cpu_only_xgboost_build_cannot_use_the_gpu(
    one_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "xgboost_has_cuda", lambda: False)
    assert xgboost_device() == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(RuntimeError, match="built without CUDA"):
        xgboost_device()


def test_a_failing_nvidia_smi_means_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(
        tmp_path,
        monkeypatch,
        "echo 'NVIDIA-SMI has failed because it could not communicate with the driver'; exit 9",
    )
    assert visible_gpus() == ()
