"""Progress bars on long work, quiet when output is not a terminal (CI, dvc logs)."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def bars_enabled() -> bool:
    if os.environ.get("SQLORA_PROGRESS") in ("0", "1"):
        return os.environ["SQLORA_PROGRESS"] == "1"
    return sys.stderr.isatty()


def progress(iterable=None, **kwargs):
    kwargs.setdefault("disable", not bars_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def quiet_library_bars() -> None:
    """Silence the progress bars of datasets, transformers and the hub when ours are off."""
    if bars_enabled():
        return
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        import datasets
    except ImportError:
        return
    datasets.disable_progress_bars()
