"""Prediction spread over the GPUs (one process each) or run on one device, in question order."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..model.devices import cap_gpu_memory
from ..model.precision import dtype_name


class Prediction(NamedTuple):
    candidates: list[list[str]]      # per prompt, in order
    load_s: float                    # model load, the slowest device's
    generate_s: float                # generation, the slowest device's
    peak_memory_mb: float | None     # the most GPU memory torch allocated on one device; None on CPU
    ready_s: float                   # load, then tokenizing: to the first batch, the slowest device's
    compute_dtype: str = ""          # what the model computed in (float32 where float16 overflowed)


def predict_on_devices(model_dir: Path, base_dir: Path, quant, prompts: list[list[dict]],
                       devices: list[str], *, dequantize: bool = False, trust_remote_code: bool = False,
                       **generation) -> Prediction:
    """Candidates for all prompts (see `generate_candidates`), in order, with one process per
    device when there are several."""
    load = {"dequantize": dequantize, "trust_remote_code": trust_remote_code}
    if len(devices) == 1:
        return _predict_shard(model_dir, base_dir, quant, prompts, devices[0], load, generation)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shards = [list(range(start, len(prompts), len(devices))) for start in range(len(devices))]
    with ProcessPoolExecutor(len(devices), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_predict_shard, model_dir, base_dir, quant, [prompts[i] for i in shard],
                               device, load, {**generation, "desc": f"{generation.get('desc', '')} {device}"})
                   for shard, device in zip(shards, devices)]
        results = [future.result() for future in futures]
    candidates: list[list[str]] = [[] for _ in prompts]
    for shard, result in zip(shards, results):
        for i, texts in zip(shard, result.candidates):
            candidates[i] = texts
    peaks = [r.peak_memory_mb for r in results if r.peak_memory_mb is not None]
    return Prediction(candidates, max(r.load_s for r in results), max(r.generate_s for r in results),
                      max(peaks) if peaks else None, max(r.ready_s for r in results), results[0].compute_dtype)


def _predict_shard(model_dir, base_dir, quant, prompts, device, load, generation) -> Prediction:
    import time

    import torch

    from ..model.layers import fused_rms_norms
    from .generation import generate_candidates

    cap_gpu_memory()  # a process of its own under spawn
    started = time.perf_counter()
    model, tokenizer, dtype = load_for_prompts(Path(model_dir), Path(base_dir), quant, prompts[:4], device=device,
                                               **load)
    loaded = first_batch = time.perf_counter()

    def mark_first_batch():
        nonlocal first_batch
        first_batch = time.perf_counter()

    on_gpu = str(device).startswith("cuda")
    peaks = [torch.cuda.max_memory_allocated(device)] if on_gpu else []  # loading's, then each batch's

    with fused_rms_norms(model):
        candidates = generate_candidates(model, tokenizer, prompts, on_first_batch=mark_first_batch,
                                         on_batch=lambda report: peaks.append(report.peak_bytes), **generation)
    peak = max(p for p in peaks if p is not None) / 2**20 if on_gpu else None
    return Prediction(candidates, loaded - started, time.perf_counter() - loaded, peak, first_batch - started,
                      dtype_name(dtype))


def load_for_prompts(model_dir: Path, base_dir: Path, quant, prompts: list[list[dict]], *, device=None, **load):
    """`load_for_inference`, in float32 where float16 overflows on these prompts (saying so once).
    Returns the model, its tokenizer and the dtype it computes in."""
    import dataclasses

    from ..core.progress import say
    from ..data.prompts import prompt_text
    from ..model.devices import free_gpu_memory
    from ..model.loading import load_for_inference
    from ..model.precision import compute_dtype, float16_overflow

    model, tokenizer = load_for_inference(model_dir, base_dir, quant, device=device, **load)
    overflow = float16_overflow(model, tokenizer, [prompt_text(tokenizer, p) for p in prompts])
    if overflow:
        say(f"note: {overflow}; computing in float32 instead (more memory, slower)")
        del model
        free_gpu_memory()
        quant = dataclasses.replace(quant, bnb_4bit_compute_dtype="float32")
        model, tokenizer = load_for_inference(model_dir, base_dir, quant, device=device, **load)
    return model, tokenizer, compute_dtype(quant.bnb_4bit_compute_dtype)
