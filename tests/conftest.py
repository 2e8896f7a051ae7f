"""Shared fixtures: a tiny Spider release (see tiny_spider.py), tiny random models (see
tiny_model.py) and running a stage script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from eval_fixtures import SPIDER_ZIP_VARIABLE
from tiny_spider import build_tiny_spider, zip_tiny_spider

ROOT = Path(__file__).resolve().parents[1]


def spider_zip_line() -> str:
    value = os.environ.get(SPIDER_ZIP_VARIABLE, "").strip()
    if value:
        return f"real Spider tests: run, {SPIDER_ZIP_VARIABLE}={value}"
    return f"real Spider tests: skipped, {SPIDER_ZIP_VARIABLE} is not set"


def pytest_report_header(config) -> str:
    return spider_zip_line()


def pytest_terminal_summary(terminalreporter) -> None:
    # the header is not shown under -q (this project's default): the summary always is
    if terminalreporter.verbosity < 0:
        terminalreporter.write_line(spider_zip_line())


@pytest.fixture
def tiny_spider(tmp_path: Path) -> Path:
    """A fresh tiny Spider folder (yours to modify)."""
    return build_tiny_spider(tmp_path / "tiny_spider")


@pytest.fixture
def tiny_spider_zip(tiny_spider: Path, tmp_path: Path) -> Path:
    """The tiny release zipped like the official one, inside a top folder spider_data/."""
    return zip_tiny_spider(tiny_spider, tmp_path / "spider_data.zip")


@pytest.fixture(scope="session")
def run_script():
    """run_script("stages/x.py", *args, cwd=...) -> CompletedProcess with text stdout/stderr."""
    def run(script: str, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ, SQLORA_PROGRESS="0", PYTHONPATH=str(ROOT / "src"))
        return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random llama and qwen2-style model folders, built once a module (the GGUF tokenizer is slow)."""
    from tiny_model import build_tiny_model, smollm2_tokenizer

    from sqlora.model.loading import load_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    llama = build_tiny_model(root / "llama", "llama", tokenizer=smollm2_tokenizer())
    qwen2 = build_tiny_model(root / "qwen2", "qwen2", tokenizer=load_tokenizer(llama))
    return {"llama": llama, "qwen2": qwen2}
