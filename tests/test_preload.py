"""What a predict stage starts in the background while it imports (sqlora.preload)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sqlora import preload as preload_module
from sqlora.preload import files_to_read, preload, read_ahead, start_cuda


def test_the_files_read_ahead_are_the_weights_tokenizer_and_torch_libraries(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"0" * 64)
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    files = files_to_read([tmp_path])
    assert files[:2] == [tmp_path / "model.safetensors", tmp_path / "tokenizer.json"]
    torch_dir = Path(importlib.util.find_spec("torch").submodule_search_locations[0])
    assert any(f.parent == torch_dir / "lib" and ".so" in f.name for f in files) or not (torch_dir / "lib").is_dir()
    assert tmp_path / "config.json" not in files


def test_reading_ahead_skips_what_cannot_be_opened(tmp_path):
    present = tmp_path / "model.safetensors"
    present.write_bytes(b"0" * 4096)
    read_ahead([tmp_path / "missing.safetensors", present, tmp_path])  # a folder, a missing file: no error


@pytest.mark.parametrize("chosen, expected", [("files,cuda", {"read_ahead", "start_cuda"}), ("cuda", {"start_cuda"}),
                                              (" Files ", {"read_ahead"}), ("none", set())])
def test_sqlora_preload_chooses_the_background_work(tmp_path, monkeypatch, chosen, expected):
    ran = []
    monkeypatch.setattr(preload_module, "read_ahead", lambda files: ran.append("read_ahead"))
    monkeypatch.setattr(preload_module, "start_cuda", lambda num_gpus: ran.append("start_cuda"))
    monkeypatch.setenv("SQLORA_PRELOAD", chosen)
    for thread in preload([tmp_path], num_gpus=1):
        thread.join(timeout=30)
    assert set(ran) == expected


def test_without_a_cuda_driver_nothing_starts_and_nothing_fails(monkeypatch):
    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(preload_module.ctypes, "CDLL", no_library)
    assert start_cuda(num_gpus=1) is False


class FakeDriver:
    """libcuda's entry points that start_cuda calls, recording the calls."""

    def __init__(self, devices: int):
        self.devices, self.calls = devices, []

    def cuInit(self, flags):
        self.calls.append("cuInit")
        return 0

    def cuDeviceGetCount(self, count):
        count._obj.value = self.devices
        return 0

    def cuDeviceGet(self, device, ordinal):
        self.calls.append(f"cuDeviceGet {ordinal}")
        return 0

    def cuDevicePrimaryCtxRetain(self, context, device):
        self.calls.append("cuDevicePrimaryCtxRetain")
        return 0


@pytest.mark.parametrize("devices, num_gpus, holds_context", [(1, 0, True), (2, 1, True), (2, 0, False), (4, 2, False)])
def test_a_gpu_context_is_started_only_where_the_stage_runs_on_one_gpu(monkeypatch, devices, num_gpus, holds_context):
    driver = FakeDriver(devices)
    monkeypatch.setattr(preload_module.ctypes, "CDLL", lambda name: driver)
    assert start_cuda(num_gpus) is True
    assert driver.calls[0] == "cuInit"
    assert ("cuDevicePrimaryCtxRetain" in driver.calls) is holds_context
