"""benchmarks/bench_ready.py: the predict stage's ready_s, per version of the code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from script_modules import load_script

from sqlora.data.prompts import build_prompt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_ready():
    return load_script("benchmarks/bench_ready.py")


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="the file cache is dropped through posix_fadvise")
def test_dropping_the_file_cache_visits_every_file(bench_ready, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.so", "a/b/two.py", "three.safetensors"):
        (tmp_path / name).write_bytes(b"x" * 8192)
    assert bench_ready.drop_from_file_cache([tmp_path, tmp_path / "missing"]) == 3
    assert (tmp_path / "a" / "one.so").read_bytes() == b"x" * 8192  # dropped from the cache, not from disk


@pytest.mark.timeout(300)
def test_it_times_the_stage_of_each_version_given(tmp_path):
    from tiny_model import build_tiny_model

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["quant"]["bits"] = 16
    params["predict"].update(num_candidates=1, max_new_tokens=4, batch_size=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    build_tiny_model(tmp_path / "outputs" / "base_model")
    dev = tmp_path / "data" / "prepared" / "dev.jsonl"
    dev.parent.mkdir(parents=True)
    dev.write_text("".join(json.dumps({"index": i, "db_id": "concert", "question": "How many singers?",
                                       "prompt": build_prompt("singer(id number)", "How many singers?")}) + "\n"
                           for i in range(3)), encoding="utf-8")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_ready.py"), "--questions", "1",
                           "--rounds", "1", "--code", f"here={ROOT}", "--json", "runs.json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads((tmp_path / "runs.json").read_text(encoding="utf-8"))
    assert [run["code"] for run in runs] == ["here"] and runs[0]["cold"] is False
    assert 0 < runs[0]["load_s"] < runs[0]["ready_s"] < runs[0]["process_s"]
    assert "| here |" in done.stdout


def test_import_seconds_are_split_by_package(bench_ready):
    log = """import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:    200000 |     200000 |       torch._C
import time:     50000 |      50000 |         torch._dynamo.utils
import time:    300000 |     350000 |       torch._dynamo
import time:     40000 |      40000 |     torch.distributed.tensor
import time:     10000 |    600000 |   torch
import time:      7000 |       7000 | transformers.masking_utils
a line of the stage's own output
"""
    seconds = bench_ready.import_seconds_by_package(log)
    assert seconds == pytest.approx({"_io": 0.0001, "torch": 0.21, "torch._dynamo": 0.35,
                                     "torch.distributed": 0.04, "transformers": 0.007})


def test_packages_are_looked_up_in_the_lock_file(bench_ready, tmp_path):
    lock = tmp_path / "uv.lock"
    lock.write_text('version = 1\n[[package]]\nname = "Torch"\n[[package]]\nname = "huggingface-hub"\n',
                    encoding="utf-8")
    locked = bench_ready.locked_packages(lock)
    assert locked == {"torch", "huggingface-hub"}
    distributions = {"torch": ["torch"], "huggingface_hub": ["huggingface_hub"], "scipy": ["scipy"]}
    assert bench_ready.in_lock("torch._dynamo", locked, distributions) == "yes"
    assert bench_ready.in_lock("huggingface_hub", locked, distributions) == "yes"
    assert bench_ready.in_lock("scipy", locked, distributions) == "no"
    assert bench_ready.in_lock("json", locked, distributions) == "standard library"
    assert bench_ready.locked_packages(tmp_path / "missing.lock") == set()
