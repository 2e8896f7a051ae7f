"""Where the seconds of `predict` go: generation time of the dev questions by decoding setting,
on the real prompts, with the model the predict stage loads (dequantized, adapter merged).

Run after `dvc repro` (or after the stages up to training):
    python benchmarks/bench_generate.py --model outputs/adapter --out /tmp/gen
    python benchmarks/bench_generate.py --settings greedy,beam4 --questions 512
Prints one row per setting: seconds, decode steps, ms per step and new tokens. Each setting's
candidates land in OUT/<setting>.jsonl, for `rescore_candidates.py` (accuracy, on CPU).
`greedy` and `beam4` end answers on a stop string (512 prompts a batch); `beam2-semicolon-eos` is
the stage's default (2 candidates, 1024 sequences a batch), and `greedy-semicolon-eos` its greedy
path. `*-fused-norm` runs the same beams with the RMSNorm layers as torch's fused `rms_norm`
(`sqlora.model.layers.fused_rms_norms`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch

from sqlora.core.params import Params
from sqlora.data.prompts import chat_end_token_ids, extract_sql, prompt_text
from sqlora.model.layers import fused_rms_norms
from sqlora.model.loading import load_for_inference
from sqlora.predict.generation import sql_end_token_ids

STOP_STRINGS = [";"]  # how the predict stage found the end of the SQL before sql_end_token_ids
BEAMS = {"num_beams": 4, "num_return_sequences": 4, "early_stopping": True}
BEAMS2 = {"num_beams": 2, "num_return_sequences": 2, "early_stopping": True}
SAMPLES = {"do_sample": True, "temperature": 0.7, "num_return_sequences": 4}
STATIC = {"cache_implementation": "static", "disable_compile": True}
SETTINGS = {  # name: (prompts per batch, generate options); "stop": the end of the SQL by stop string or end tokens
    "greedy": (512, {**STATIC, "stop": "strings"}),
    "greedy-semicolon-eos": (512, {**STATIC, "stop": "tokens"}),
    "greedy-dynamic": (512, {"stop": "strings"}),
    "greedy-batch972": (972, {**STATIC, "stop": "strings"}),
    "greedy-batch128": (128, {**STATIC, "stop": "strings"}),
    "beam4": (512, {**STATIC, **BEAMS, "stop": "strings"}),
    "beam4-batch128": (128, {**STATIC, **BEAMS, "stop": "strings"}),
    "beam4-semicolon-eos": (512, {**STATIC, **BEAMS, "stop": "tokens"}),
    "beam2-semicolon-eos": (512, {**STATIC, **BEAMS2, "stop": "tokens"}),
    "beam2-no-wait": (512, {**BEAMS2, "stop": "tokens", "cache": "no-wait"}),
    "beam4-no-wait": (512, {**BEAMS, "stop": "tokens", "cache": "no-wait"}),
    "beam2-fused-norm": (512, {**STATIC, **BEAMS2, "stop": "tokens", "norm": "fused"}),
    "beam4-fused-norm": (512, {**STATIC, **BEAMS, "stop": "tokens", "norm": "fused"}),
    "sample4": (512, {**STATIC, **SAMPLES, "stop": "tokens"}),
    "continuous-greedy": (0, {"stop": "tokens"}),
    "continuous-sample4": (0, {**SAMPLES, "stop": "tokens"}),
}


def no_wait_beam_cache(model, max_cache_len: int) -> dict:
    """`generate`'s keyword for a static KV cache whose beam reordering never reads a GPU value.

    transformers' static layers ask whether they hold tokens (a GPU tensor) before each reorder:
    one wait of the CPU per layer per decode step. Here a layer holds tokens once initialized.
    Measured no faster in the predict stage, which keeps the plain one.
    """
    import inspect

    from transformers import StaticCache

    class NoWaitBeamCache(StaticCache):
        def reorder_cache(self, beam_idx):
            for layer in self.layers:
                if layer.is_initialized:
                    layer.keys = layer.keys.index_select(0, beam_idx.to(layer.keys.device))
                    layer.values = layer.values.index_select(0, beam_idx.to(layer.values.device))

    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {keyword: NoWaitBeamCache(config=model.config, max_cache_len=max_cache_len)}


def run_generate(model, tokenizer, texts, batch_size, options):
    stop, cache = options.pop("stop"), options.pop("cache", None)
    eos = sql_end_token_ids(tokenizer) if stop == "tokens" else chat_end_token_ids(tokenizer)
    extra = {"stop_strings": STOP_STRINGS, "tokenizer": tokenizer} if stop == "strings" else {}
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    outputs, steps, new_tokens = [None] * len(texts), 0, 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
        if cache == "no-wait":
            extra = {**extra, "disable_compile": True,
                     **no_wait_beam_cache(model, encoded["input_ids"].shape[1] + args.max_new_tokens)}
        with torch.inference_mode():
            generated = model.generate(**encoded, max_new_tokens=args.max_new_tokens, eos_token_id=eos,
                                       pad_token_id=tokenizer.pad_token_id, use_cache=True,
                                       **({"do_sample": False} | options), **extra)
        new = generated[:, encoded["input_ids"].shape[1]:]
        steps += new.shape[1]
        new_tokens += int((new != tokenizer.pad_token_id).sum())
        n = options.get("num_return_sequences", 1)
        decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
        for k, i in enumerate(batch):
            outputs[i] = decoded[k * n:(k + 1) * n]
    return outputs, steps, new_tokens


def run_continuous(model, tokenizer, texts, options):
    from transformers import GenerationConfig

    options.pop("stop")
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, eos_token_id=sql_end_token_ids(tokenizer),
                              pad_token_id=tokenizer.pad_token_id, **({"do_sample": False} | options))
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    results = model.generate_batch(ids, generation_config=config)
    by_prompt: dict[int, list[str]] = {}
    new_tokens = 0
    for request_id, result in results.items():
        prompt = int(request_id.split("__")[0].removeprefix("req_"))
        new_tokens += len(result.generated_tokens)
        by_prompt.setdefault(prompt, []).append(tokenizer.decode(result.generated_tokens, skip_special_tokens=True))
    return [by_prompt.get(i, [""]) for i in range(len(texts))], 0, new_tokens


def profile_steps(model, tokenizer, texts, setting):
    """The top operators of 32 steps of a setting on 128 prompts: is a decode step bound by kernel
    launches (CPU time well above GPU time), and which operators take the GPU's time?"""
    from torch.profiler import ProfilerActivity, profile

    encoded = tokenizer(texts[:128], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    options = {"do_sample": False, **STATIC} | {k: v for k, v in SETTINGS[setting][1].items()
                                                 if k not in ("stop", "cache", "norm")}
    if SETTINGS[setting][1].get("cache") == "no-wait":
        del options["cache_implementation"]
        options |= no_wait_beam_cache(model, encoded["input_ids"].shape[1] + 32)
    norms = fused_rms_norms(model) if SETTINGS[setting][1].get("norm") == "fused" else contextlib.nullcontext()
    with norms, profile(activities=activities) as prof, torch.inference_mode():
        model.generate(**encoded, max_new_tokens=32, min_new_tokens=32, eos_token_id=chat_end_token_ids(tokenizer),
                       pad_token_id=tokenizer.pad_token_id, **options)
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25), flush=True)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15), flush=True)


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", type=Path, default=Path("outputs/adapter"))
parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
parser.add_argument("--dev", type=Path, default=Path("data/prepared/dev.jsonl"))
parser.add_argument("--questions", type=int, default=0, help="first N questions (0 = all)")
parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, from: " + ", ".join(SETTINGS))
parser.add_argument("--max-new-tokens", type=int, default=160)
parser.add_argument("--profile", nargs="?", const="greedy", choices=[n for n in SETTINGS if "continuous" not in n],
                    help="also print the profiler's top operators for this setting (default: greedy)")
parser.add_argument("--out", type=Path, help="write each setting's candidates here")
args = parser.parse_args()

questions = [json.loads(line) for line in args.dev.open(encoding="utf-8") if line.strip()]
questions = questions[:args.questions or None]
params = Params.read()
predict = params.predict
model, tokenizer = load_for_inference(args.model, args.base, params.quant, dequantize=True)
tokenizer.padding_side = "left"
texts = [prompt_text(tokenizer, q["prompt"]) + predict.answer_prefix for q in questions]
run_generate(model, tokenizer, texts[:8], 8, {**STATIC, "stop": "strings"})  # warm-up
if args.profile:
    profile_steps(model, tokenizer, texts, args.profile)
if args.out:
    args.out.mkdir(parents=True, exist_ok=True)
print(f"{len(texts)} questions, {args.model}, {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
print("| setting | batch | seconds | decode steps | ms/step | new tokens |\n|---|---|---|---|---|---|", flush=True)
for name in args.settings.split(","):
    batch_size, options = SETTINGS[name]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    options = dict(options)
    norms = fused_rms_norms(model) if options.pop("norm", None) == "fused" else contextlib.nullcontext()
    started = time.perf_counter()
    try:
        with norms:
            if name.startswith("continuous"):
                outputs, steps, new_tokens = run_continuous(model, tokenizer, texts, options)
            else:
                outputs, steps, new_tokens = run_generate(model, tokenizer, texts, batch_size, options)
    except Exception as error:  # a setting the installed libraries lack is reported, not fatal
        print(f"| {name} | {batch_size} | failed: {type(error).__name__}: {str(error)[:200]} |||", flush=True)
        continue
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    per_step = f"{1000 * seconds / steps:.1f}" if steps else ""
    print(f"| {name} | {batch_size or 'auto'} | {seconds:.1f} | {steps or ''} | {per_step} | {new_tokens} |", flush=True)
    if args.out:
        with (args.out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for q, candidates in zip(questions, outputs):
                candidates = [predict.answer_prefix + c for c in candidates]
                f.write(json.dumps({"index": q["index"], "db_id": q["db_id"], "question": q["question"],
                                    "sql": extract_sql(candidates[0]), "candidates": candidates}, ensure_ascii=False) + "\n")
