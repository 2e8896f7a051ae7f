"""Training throughput: the plain TRL QLoRA recipe against this project's defaults, side by side.

Run after `dvc repro prepare-model preprocess` (it reads outputs/base_model and
data/prepared/train.jsonl):   python benchmarks/bench_train.py --steps 60
Prints one row per recipe: the dtype it computed in, the memory its frozen base weights take,
tokens/s (non-padding tokens), seconds per step and peak GPU memory. SQLORA_GPU_MEMORY_GB caps
the GPU memory as in the training stage.
Each `--also SECTION.KEY=VALUE` adds a row: the defaults with that setting changed, e.g.
`--also train.dequantize=false` (train on the 4-bit layers as bitsandbytes runs them); several
settings in one row are separated by spaces: `--also "train.dequantize=true train.float32_norms=false"`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import tempfile
from pathlib import Path

import yaml

from sqlora.core.errors import ParamError
from sqlora.core.params import LoraParams, Params, QuantParams, TrainParams
from sqlora.data.prompts import prompt_text
from sqlora.model.devices import cap_gpu_memory, describe_device
from sqlora.model.loading import load_for_training, load_tokenizer, lora_config
from sqlora.model.precision import compute_dtype
from sqlora.train.loop import RunFiles, train_lora
from sqlora.train.schedule import parameter_count, resolved_schedule

PLAIN = {"batch_size": 16, "gradient_checkpointing": True, "group_by_length": False,
         "learning_rate": 2e-4, "gradient_accumulation_steps": 1, "dequantize": False, "float32_norms": True}
PLAIN_LORA = LoraParams(r=16, alpha=32, dropout=0.05, target_modules="all-linear")


def run(name: str, train: TrainParams, lora: LoraParams, quant: QuantParams, rows: list[dict], base: Path,
        fused_norms: bool = True) -> dict:
    import torch

    tokenizer = load_tokenizer(base)
    texts = [prompt_text(tokenizer, row["prompt"]) + row["completion"][0]["content"] for row in rows[:4]]
    model, quant = load_for_training(base, quant, tokenizer, texts)  # float32 where float16 overflows
    with tempfile.TemporaryDirectory() as tmp:
        train = resolved_schedule(train, parameter_count(model))
        files = RunFiles(Path(tmp) / "ckpt", Path(tmp) / "loss.csv", name)
        result = train_lora(model, tokenizer, rows, train, lora_config(lora), files,
                            compute_dtype(quant.bnb_4bit_compute_dtype), fused_norms=fused_norms)
    stats = result.stats
    del result, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"recipe": name, "dtype": stats["compute_dtype"], "weights_mb": stats["base_weights_mb"],
            "batch": train.batch_size, "micro_batch": stats["micro_batch_size"],
            "grad_ckpt": stats["gradient_checkpointing"], "dequantized": stats["dequantized"],
            "grouped": train.group_by_length, "steps": stats["steps"],
            "tokens_per_s": stats["tokens_per_s"], "s_per_step": round(stats["runtime_s"] / stats["steps"], 3),
            "peak_mem_mb": stats["peak_memory_mb"], "final_loss": stats["final_loss"]}


def for_benchmark(train: TrainParams, steps: int) -> TrainParams:
    return dataclasses.replace(train, max_steps=steps, save_steps=10**9, logging_steps=10)


def with_setting(document: dict, change: str) -> Params:
    """The parameters of `document` with each space-separated `section.key=value` of `change`
    changed (values read as YAML)."""
    changed = {k: dict(v) if isinstance(v, dict) else v for k, v in document.items()}
    for setting in change.split() or [change]:
        key, sep, value = setting.partition("=")
        section, _, name = key.partition(".")
        if not sep or not name or section not in document or name not in document[section]:
            raise SystemExit(f"--also {change}: expected SECTION.KEY=VALUE naming a key of params.yaml")
        changed[section][name] = yaml.safe_load(value)
    params = Params(changed)
    try:
        params.train, params.lora, params.quant  # noqa: B018 - each section checked here, once
    except ParamError as error:
        raise SystemExit(f"--also {change}: {error}") from None
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--train", type=Path, default=Path("data/prepared/train.jsonl"))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--also", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="add a row: the defaults with these settings of params.yaml changed (repeatable)")
    args = parser.parse_args()

    cap_gpu_memory()  # SQLORA_GPU_MEMORY_GB, as the training stage applies it
    print(describe_device())
    params = Params.read()
    quant = params.quant
    ours = for_benchmark(params.train, args.steps)
    plain = dataclasses.replace(ours, **PLAIN)
    # checked before any recipe runs, so that a mistyped setting does not wait minutes to fail
    also = [(change, with_setting(params.document, change)) for change in args.also]
    with args.train.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    # Both recipes see the same examples: each takes as many as its steps consume.
    results = [
        run("plain TRL (batch 16, grad ckpt)", plain, PLAIN_LORA, quant,
            rows[: args.steps * plain.batch_size], args.base, fused_norms=False),
        run("sqlora defaults", ours, params.lora, quant, rows[: args.steps * ours.batch_size], args.base),
    ]
    for change, changed in also:
        train = for_benchmark(changed.train, args.steps)
        results.append(run(f"sqlora defaults, {change}", train, changed.lora, changed.quant,
                           rows[: args.steps * train.batch_size], args.base))
    columns = list(results[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in results:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    speedup = results[1]["tokens_per_s"] / max(results[0]["tokens_per_s"], 1e-9)
    print(f"\nspeed-up in tokens/s: {speedup:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": results, "speedup": speedup}, indent=2) + "\n")


if __name__ == "__main__":
    main()
