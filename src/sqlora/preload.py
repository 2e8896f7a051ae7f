"""Work a predict stage starts in the background while Python imports torch and transformers.

Those imports hold the interpreter for seconds, mostly running module code, while the disk and
the GPU driver sit idle. Two daemon threads use that time, each in calls that release the GIL:
one asks the OS to read into its file cache the files the stage will read next (torch's and
the CUDA libraries, the model's weights), the other starts the CUDA driver and the GPU's
context, which torch then finds ready. Where either is not possible it does nothing, and the
stage runs as it would have. SQLORA_PRELOAD lists which run: "files,cuda" (the default), one of
them, or "none".
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

PRELOAD_VARIABLE = "SQLORA_PRELOAD"


def preload(model_dirs: Iterable[Path], *, num_gpus: int = 0) -> list[threading.Thread]:
    """Start the background threads; returns them (the caller need not wait for them).

    `num_gpus` as `predict.num_gpus` (0 = all visible): where the stage will hand its work to one
    process per GPU, this one starts the driver only and holds no context, nor its memory, on
    any of them.
    """
    chosen = {part.strip() for part in os.environ.get(PRELOAD_VARIABLE, "files,cuda").lower().split(",")}
    jobs = []
    if "files" in chosen:
        jobs.append((read_ahead, (files_to_read(model_dirs),)))
    if "cuda" in chosen:
        jobs.append((start_cuda, (num_gpus,)))
    threads = [threading.Thread(target=target, args=args, daemon=True) for target, args in jobs]
    for thread in threads:
        thread.start()
    return threads


def files_to_read(model_dirs: Iterable[Path]) -> list[Path]:
    """The model folders' weights and tokenizer, then the shared libraries of torch and of the
    pip-installed CUDA runtime (the `nvidia` packages), found without importing anything."""
    files = []
    for folder in model_dirs:
        for pattern in ("*.safetensors", "tokenizer.json"):
            files += sorted(Path(folder).glob(pattern))
    for package, pattern in (("torch", "lib/*.so*"), ("nvidia", "*/lib/*.so*"), ("nvidia", "*/*/lib/*.so*")):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            files += sorted(Path(location).glob(pattern))
    return files


def read_ahead(files: Iterable[Path]) -> None:
    """Ask the OS to read `files` into its cache (Linux; elsewhere nothing). The call returns
    once the reads are queued; the import that then opens those files finds them cached."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def start_cuda(num_gpus: int = 0) -> bool:
    """Start the CUDA driver (cuInit) and, where the stage will run on one GPU, that GPU's
    primary context, the one the CUDA runtime and so torch use. Returns whether the driver
    started."""
    try:
        driver = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
        if driver.cuInit(0) != 0:
            return False
        count = ctypes.c_int()
        if num_gpus == 1 or (driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value == 1):
            device, context = ctypes.c_int(), ctypes.c_void_p()
            if driver.cuDeviceGet(ctypes.byref(device), 0) == 0:
                driver.cuDevicePrimaryCtxRetain(ctypes.byref(context), device)
    except (OSError, AttributeError):
        return False
    return True
