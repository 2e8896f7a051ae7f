"""Which devices a stage uses: the GPU memory cap, the line that says what runs where, and how
predict.num_gpus picks GPUs."""

from __future__ import annotations

import pytest
import torch

from sqlora.core.errors import SqloraError
from sqlora.model import devices


@pytest.mark.parametrize("value", ["six", "0", "-2", "nan"])
def test_a_bad_memory_cap_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv(devices.MEMORY_CAP_VARIABLE, value)
    with pytest.raises(SqloraError, match=f"{devices.MEMORY_CAP_VARIABLE} = '{value}'"):
        devices.cap_gpu_memory()


def test_memory_cap_sets_each_gpus_fraction(monkeypatch):
    calls = []
    monkeypatch.setenv(devices.MEMORY_CAP_VARIABLE, "6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: type("P", (), {"total_memory": 24 * 2**30})())
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: calls.append((f, i)))
    assert devices.cap_gpu_memory() == 6.0
    assert calls == [(0.25, 0), (0.25, 1)]


def test_no_cap_without_the_variable(monkeypatch):
    monkeypatch.delenv(devices.MEMORY_CAP_VARIABLE, raising=False)
    assert devices.cap_gpu_memory() is None


def test_a_gpu_torch_cannot_use_is_named_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_gpu_name", lambda: "NVIDIA GeForce RTX 3060 Laptop GPU")
    monkeypatch.setattr(torch.version, "cuda", None)
    line = devices.describe_device()
    assert line.startswith("warning: an NVIDIA GPU is present (NVIDIA GeForce RTX 3060 Laptop GPU)")
    assert "CPU-only build" in line and "\n" not in line


def test_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_gpu_name", lambda: None)
    assert devices.describe_device().startswith("device: CPU (no CUDA GPU)")


def test_nvidia_smi_listing_is_read(monkeypatch):
    class Done:
        stdout = "GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-1234)\nGPU 1: other (UUID: x)\n"

    monkeypatch.setattr(devices.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(devices.subprocess, "run", lambda *a, **k: Done())
    assert devices.nvidia_gpu_name() == "NVIDIA GeForce RTX 3060"
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    assert devices.nvidia_gpu_name() is None


@pytest.mark.parametrize("num_gpus, visible, expected", [
    (0, 3, ["cuda:0", "cuda:1", "cuda:2"]),   # 0: all visible
    (2, 3, ["cuda:0", "cuda:1"]),
    (5, 2, ["cuda:0", "cuda:1"]),             # never more than are visible
    (1, 1, ["cuda:0"]),
])
def test_prediction_devices(monkeypatch, num_gpus, visible, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    assert devices.prediction_devices(num_gpus) == expected


def test_prediction_devices_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.prediction_devices(0) == ["cpu"] and devices.prediction_devices(2) == ["cpu"]


def test_attention_guard_does_nothing_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.guard_attention_kernels() is None
