"""Batched greedy generation that stops at the end of the SQL."""

from __future__ import annotations

from pathlib import Path

from .modeling import chat_end_token_ids, load_dequantized_model, load_quantized_model, load_tokenizer
from .errors import ParamError
from .params import boolean, number
from .progress import progress

ADAPTER_CONFIG = "adapter_config.json"
STOP_STRINGS = [";"]


def check_predict_params(predict: dict) -> dict:
    number(predict, "batch_size", "predict", minimum=1, integer=True)
    number(predict, "max_new_tokens", "predict", minimum=1, integer=True)
    boolean(predict, "merge_adapter", "predict")
    number(predict, "num_gpus", "predict", minimum=0, integer=True)
    if not isinstance(predict.get("answer_prefix"), str):
        raise ParamError(f"predict.answer_prefix = {predict.get('answer_prefix')!r}: must be a string "
                         "(\"\" for none, or the start of every answer such as SELECT)")
    return predict


def is_adapter(model_dir: Path) -> bool:
    return (Path(model_dir) / ADAPTER_CONFIG).is_file()


def load_for_inference(model_dir: Path, base_dir: Path, quant: dict, *, merge_adapter: bool = False,
                       trust_remote_code: bool = False, device: str | None = None):
    """The base model, or base + LoRA adapter; `merge_adapter` merges the adapter into the
    dequantized base (see `load_dequantized_model`) for faster inference without bitsandbytes."""
    from peft import PeftModel

    model_dir, base_dir = Path(model_dir), Path(base_dir)
    if not is_adapter(model_dir):
        model = load_quantized_model(model_dir, quant, trust_remote_code=trust_remote_code, device=device)
        tokenizer = load_tokenizer(model_dir, trust_remote_code)
    elif merge_adapter:
        model = merged_model(model_dir, base_dir, quant, trust_remote_code=trust_remote_code, device=device)
        tokenizer = load_tokenizer(tokenizer_dir(model_dir, base_dir), trust_remote_code)
    else:
        base = load_quantized_model(base_dir, quant, trust_remote_code=trust_remote_code, device=device)
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
    """One greedy completion per chat prompt, in input order; batches hold prompts of similar length.

    `answer_prefix` starts the assistant's answer (e.g. "SELECT"), so that a chatty base model
    writes SQL instead of prose; the returned texts include it.
    """
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) + answer_prefix
             for p in prompts]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # longest first: memory errors show early
    tokenizer.padding_side = "left"
    end_ids = chat_end_token_ids(tokenizer)
    outputs: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    bar = progress(total=len(texts), desc=desc, unit="q")
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
        with torch.inference_mode():
            generated = model.generate(
                **encoded, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
                eos_token_id=end_ids, pad_token_id=tokenizer.pad_token_id,
                stop_strings=STOP_STRINGS, tokenizer=tokenizer,
                temperature=None, top_p=None, top_k=None,
            )
        new_tokens = generated[:, encoded["input_ids"].shape[1]:]
        for i, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            outputs[i] = answer_prefix + text
        bar.update(len(batch))
    bar.close()
    return outputs


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
                       devices: list[str], *, merge_adapter: bool = False, trust_remote_code: bool = False,
                       **generation) -> tuple[list[str], float, float]:
    """Generations for all prompts, in order, with one process per device when there are several.

    Returns the texts, the model-load seconds and the generation seconds (the slowest device's).
    """
    load = {"merge_adapter": merge_adapter, "trust_remote_code": trust_remote_code}
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
    texts = [""] * len(prompts)
    for shard, (shard_texts, _, _) in zip(shards, results):
        for i, text in zip(shard, shard_texts):
            texts[i] = text
    return texts, max(r[1] for r in results), max(r[2] for r in results)


def _predict_shard(model_dir, base_dir, quant, prompts, device, load, generation):
    import time

    started = time.perf_counter()
    model, tokenizer = load_for_inference(Path(model_dir), Path(base_dir), quant, device=device, **load)
    loaded = time.perf_counter()
    texts = generate(model, tokenizer, prompts, **generation)
    return texts, loaded - started, time.perf_counter() - loaded
