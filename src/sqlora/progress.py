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
