"""benchmarks/bench_train.py: the rows `--also` adds, checked before any training runs."""

from pathlib import Path

import pytest
import yaml
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_train():
    return load_script("benchmarks/bench_train.py")


@pytest.fixture()
def document():
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_one_row_may_change_several_settings(bench_train, document):
    params = bench_train.with_setting(document, "train.dequantize=true train.float32_norms=false")
    assert params.train.dequantize is True and params.train.float32_norms is False
    assert document["train"]["dequantize"] == "auto"  # the defaults' row keeps its settings


def test_one_setting_is_read_as_yaml(bench_train, document):
    assert bench_train.with_setting(document, "lora.r=8").lora.r == 8


@pytest.mark.parametrize("change, says", [
    ("train.dequantize=maybe", "allowed values are true, false (or 'auto')"),
    ("train.nope=1", "expected SECTION.KEY=VALUE naming a key of params.yaml"),
    ("train.dequantize=true lora", "expected SECTION.KEY=VALUE"),
    ("", "expected SECTION.KEY=VALUE"),
])
def test_a_bad_setting_ends_in_one_line(bench_train, document, change, says):
    with pytest.raises(SystemExit) as stopped:
        bench_train.with_setting(document, change)
    assert str(stopped.value).startswith(f"--also {change}: ") and says in str(stopped.value)
