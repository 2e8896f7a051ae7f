"""Progress bars on long work, quiet when output is not a terminal (CI, dvc logs)."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def is_main_process() -> bool:
    """False in the extra processes of a data-parallel run (`accelerate launch`)."""
    return int(os.environ.get("RANK", 0)) == 0


def say(text: str) -> None:
    """One line of a stage's story, from the main process only, flushed at once (dvc's log
    interleaves stdout and stderr)."""
    if is_main_process():
        print(text, flush=True)


def bars_enabled() -> bool:
    if os.environ.get("SQLORA_PROGRESS") in ("0", "1"):
        return os.environ["SQLORA_PROGRESS"] == "1"
    return sys.stderr.isatty()


def progress(iterable=None, **kwargs):
    kwargs.setdefault("disable", not bars_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def quiet_library_bars() -> None:
    """Silence the progress bars of datasets, transformers and the hub when ours are off, and
    library warnings a user cannot act on."""
    import warnings

    # peft and trl still read transformers' old name for activation checkpointing
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if bars_enabled():
        return
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    # datasets reads HF_DATASETS_DISABLE_PROGRESS_BARS when it is imported; importing it here just
    # for this would cost the predict stage half a second (pandas, pyarrow)
    datasets = sys.modules.get("datasets")
    if datasets is not None:
        datasets.disable_progress_bars()
