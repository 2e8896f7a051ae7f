"""Batched generation (greedy or beam search) that stops at the end of the SQL."""

from __future__ import annotations

from pathlib import Path

from .modeling import chat_end_token_ids, load_dequantized_model, load_quantized_model, load_tokenizer
from .errors import ParamError
from .params import boolean, number
from .progress import progress

ADAPTER_CONFIG = "adapter_config.json"


def check_predict_params(predict: dict) -> dict:
    number(predict, "batch_size", "predict", minimum=1, integer=True)
    number(predict, "max_new_tokens", "predict", minimum=1, integer=True)
    boolean(predict, "dequantize", "predict")
    number(predict, "num_candidates", "predict", minimum=1, integer=True)
    number(predict, "num_gpus", "predict", minimum=0, integer=True)
    if not isinstance(predict.get("answer_prefix"), str):
        raise ParamError(f"predict.answer_prefix = {predict.get('answer_prefix')!r}: must be a string "
                         "(\"\" for none, or the start of every answer such as SELECT)")
    return predict


def is_adapter(model_dir: Path) -> bool:
    return (Path(model_dir) / ADAPTER_CONFIG).is_file()


def load_for_inference(model_dir: Path, base_dir: Path, quant: dict, *, dequantize: bool = False,
                       trust_remote_code: bool = False, device: str | None = None):
    """The base model, or base + LoRA adapter, quantized per `quant.*`.

    `dequantize` runs on the quantized weights turned back into plain 16-bit layers, with the
    adapter merged in (see `load_dequantized_model`): the same model without bitsandbytes' kernels
    or PEFT's extra matmuls at every step, so generation is faster.
    """
    from peft import PeftModel

    model_dir, base_dir = Path(model_dir), Path(base_dir)
    load = {"trust_remote_code": trust_remote_code, "device": device}
    if not is_adapter(model_dir):
        model = (load_dequantized_model if dequantize else load_quantized_model)(model_dir, quant, **load)
        tokenizer = load_tokenizer(model_dir, trust_remote_code)
    elif dequantize:
        model = merged_model(model_dir, base_dir, quant, **load)
        tokenizer = load_tokenizer(tokenizer_dir(model_dir, base_dir), trust_remote_code)
    else:
        base = load_quantized_model(base_dir, quant, **load)
        model = PeftModel.from_pretrained(base, str(model_dir))
        tokenizer = load_tokenizer(tokenizer_dir(model_dir, base_dir), trust_remote_code)
    model.eval()
    model.config.use_cache = True  # training with gradient checkpointing may have saved it off
    return model, tokenizer


def tokenizer_dir(adapter_dir: Path, base_dir: Path) -> Path:
    """The adapter's own tokenizer (saved by training), else the base model's."""
    return adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else base_dir


def merged_model(adapter_dir: Path, base_dir: Path, quant: dict, *, trust_remote_code: bool = False,
                 device: str | None = None):
    """Base + adapter as one plain transformers model (no PEFT, no bitsandbytes)."""
    from peft import PeftModel

    base = load_dequantized_model(base_dir, quant, trust_remote_code=trust_remote_code, device=device)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def generate(model, tokenizer, prompts: list[list[dict]], *, batch_size: int, max_new_tokens: int,
             answer_prefix: str = "", desc: str = "generating") -> list[str]:
    """One greedy completion per chat prompt, in input order (see `generate_candidates`)."""
    return [c[0] for c in generate_candidates(model, tokenizer, prompts, batch_size=batch_size,
                                              max_new_tokens=max_new_tokens, answer_prefix=answer_prefix,
                                              desc=desc)]


def generate_candidates(model, tokenizer, prompts: list[list[dict]], *, batch_size: int, max_new_tokens: int,
                        answer_prefix: str = "", num_candidates: int = 1,
                        desc: str = "generating") -> list[list[str]]:
    """Completions per chat prompt, in input order: the greedy one, or with `num_candidates` > 1
    the best `num_candidates` of a beam search, best first.

    `batch_size` counts sequences, so a batch holds `batch_size // num_candidates` prompts, of
    similar length, longest first. `answer_prefix` starts the assistant's answer (e.g. "SELECT"),
    so that a chatty base model writes SQL instead of prose; the returned texts include it. A
    batch that runs out of GPU memory is split in two and retried, and later batches keep the
    smaller size.
    """
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) + answer_prefix
             for p in prompts]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # longest first: memory errors show early
    tokenizer.padding_side = "left"
    options = {"max_new_tokens": max_new_tokens, "eos_token_id": sql_end_token_ids(tokenizer),
               "num_candidates": num_candidates}
    outputs: list[list[str]] = [[] for _ in texts]
    bar = progress(total=len(texts), desc=desc, unit="q")
    batch_size = max(1, batch_size // num_candidates)
    start = 0
    while start < len(order):
        batch = order[start:start + batch_size]
        try:
            generated = _generate_batch(model, tokenizer, [texts[i] for i in batch], **options)
        except out_of_memory_errors():
            if batch_size == 1:
                raise
            generated = None
        if generated is None:  # out of memory: retry with half, once the failed batch's tensors are gone
            batch_size = max(1, len(batch) // 2)
            _free_gpu_memory()
            bar.write(f"{desc}: out of GPU memory with {len(batch) * num_candidates} sequences at once; "
                      f"going on with {batch_size * num_candidates}")
            continue
        for i, candidates in zip(batch, generated):
            outputs[i] = [answer_prefix + text for text in candidates]
        bar.update(len(batch))
        start += len(batch)
    bar.close()
    return outputs


def _generate_batch(model, tokenizer, texts: list[str], *, max_new_tokens: int, eos_token_id: list[int],
                    num_candidates: int) -> list[list[str]]:
    import torch

    device = next(model.parameters()).device
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    search = {"num_beams": num_candidates, "num_return_sequences": num_candidates,
              "early_stopping": True} if num_candidates > 1 else {}
    with torch.inference_mode():
        generated = model.generate(
            **encoded, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
            eos_token_id=eos_token_id, pad_token_id=tokenizer.pad_token_id,
            temperature=None, top_p=None, top_k=None,
            # A cache allocated once per batch: the default one grows at every step, and on a GPU
            # each new prompt length then costs seconds of allocator work (benchmarks/bench_kv_cache.py).
            # Compiling it would cost more than it saves on one pass over the dev set.
            cache_implementation="static", disable_compile=True, **search,
        )
    decoded = tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    return [decoded[i:i + num_candidates] for i in range(0, len(decoded), num_candidates)]


def sql_end_token_ids(tokenizer) -> list[int]:
    """Token ids that end an answer: the chat's end tokens, and every token holding ';' (the SQL
    ends inside it; `extract_sql` cuts there). Matching the stop string ';' instead made generation
    9-10% slower (benchmarks/bench_generate.py: `greedy` against `greedy-semicolon-eos`, H200)."""
    semicolons = {i for token, i in tokenizer.get_vocab().items() if ";" in token}
    return sorted(set(chat_end_token_ids(tokenizer)) | semicolons)


def out_of_memory_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (torch.cuda.OutOfMemoryError, MemoryError)


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def degenerate_reason(generations: list[str]) -> str | None:
    """Why a set of generations shows a broken model (all empty, or one token repeated), else None."""
    stripped = [g.strip() for g in generations]
    if stripped and all(not g for g in stripped):
        return "every generation was empty"
    for g in stripped:
        words = g.split()
        if len(words) >= 8 and len(set(words)) == 1:
            return f"a generation repeats one token: {g[:60]!r}"
    return None


def prediction_devices(num_gpus: int) -> list[str]:
    """The GPUs to spread questions over (`num_gpus` 0 = all visible), or the CPU."""
    import torch

    if not torch.cuda.is_available():
        return ["cpu"]
    count = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(count if num_gpus == 0 else min(num_gpus, count))]


def predict_on_devices(model_dir: Path, base_dir: Path, quant: dict, prompts: list[list[dict]],
                       devices: list[str], *, dequantize: bool = False, trust_remote_code: bool = False,
                       **generation) -> tuple[list[list[str]], float, float]:
    """Candidates for all prompts (see `generate_candidates`), in order, with one process per
    device when there are several.

    Returns the candidates, the model-load seconds and the generation seconds (the slowest device's).
    """
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
    for shard, (shard_candidates, _, _) in zip(shards, results):
        for i, texts in zip(shard, shard_candidates):
            candidates[i] = texts
    return candidates, max(r[1] for r in results), max(r[2] for r in results)


def _predict_shard(model_dir, base_dir, quant, prompts, device, load, generation):
    import time

    started = time.perf_counter()
    model, tokenizer = load_for_inference(Path(model_dir), Path(base_dir), quant, device=device, **load)
    loaded = time.perf_counter()
    candidates = generate_candidates(model, tokenizer, prompts, **generation)
    return candidates, loaded - started, time.perf_counter() - loaded
