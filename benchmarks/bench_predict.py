"""Prediction speed and answers by how batches are sized, at a GPU memory cap, for the base and
fine-tuned models on the 4-bit path (bitsandbytes, adapter on top) or the dequantized one
(`predict.dequantize`: the same weights as plain 16-bit layers, adapter merged in).

Run after `dvc repro` (it reads outputs/, data/prepared/ and data/spider/):
    python benchmarks/bench_predict.py --cap-gb 5.5 --variant halving,planned --path dequantized
    python benchmarks/bench_predict.py --variant planned --path 4-bit,dequantized --limit 972
Each run loads the model as the predict stage does and generates with predict.* (candidates,
batch size, new tokens, answer prefix). A row: load and generation seconds, batches and how
many ran out of memory, the peak GPU memory, the ratio of each batch's measured bytes (beyond
the weights) to its estimate, the execution accuracy of the SQL chosen as the stage chooses it
(choosing takes choose_s), and how many chosen SQLs differ from the first variant's for the same
model and path. A table at the end; --json keeps the rows with every batch.

Variants:
- halving: batches start at predict.batch_size sequences and halve on running out of memory;
  transformers' static cache, as long as the longest prompt so far
- planned-shared-cache: batches sized by the memory free; transformers' static cache
- planned: batches sized by the memory free, each with a cache for its own prompts (the stage)
- planned-chunked: planned, and the prompts fed to the model --prefill-chunk tokens at a time
On a CPU, --cap-gb does nothing and, without --limit, only the first 8 questions run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if sys.platform == "linux":  # as the predict stage runs, set before torch starts CUDA
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch

from sqlora.core.params import Params
from sqlora.data.prompts import extract_sql
from sqlora.eval.accuracy import evaluate
from sqlora.model.devices import MEMORY_CAP_VARIABLE, cap_gpu_memory, default_device, free_gpu_memory
from sqlora.model.layers import fused_rms_norms
from sqlora.predict.choose import choose_sql
from sqlora.predict.fanout import load_for_prompts
from sqlora.predict.generation import generate_candidates

VARIANTS = {
    "halving": {"plan_memory": False, "cache_per_batch": False},
    "planned-shared-cache": {"cache_per_batch": False},
    "planned": {},
    "planned-chunked": {"prefill_chunk_tokens": "--prefill-chunk"},
}
CPU_QUESTIONS = 8


def names(text: str, known) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise SystemExit(f"error: {', '.join(unknown) or text!r}: choose from {', '.join(known)}")
    return chosen


def run(model_dir: Path, path: str, options: dict, questions: list[dict], args, params) -> tuple[dict, list[str]]:
    """One load and generation; the row, and the SQL chosen per question."""
    predict = params.predict
    device = default_device()
    free_gpu_memory()
    started = time.perf_counter()
    model, tokenizer, dtype = load_for_prompts(model_dir, args.base, params.quant, [q["prompt"] for q in questions[:4]],
                                               device=device, dequantize=path != "4-bit",
                                               trust_remote_code=params.model.trust_remote_code)
    loaded_at = time.perf_counter()
    generation = {"batch_size": args.batch_size or predict.batch_size, "max_new_tokens": predict.max_new_tokens,
                  "answer_prefix": predict.answer_prefix, "num_candidates": predict.num_candidates}
    reports = []
    with fused_rms_norms(model):
        # kernels loaded and cuBLAS set up before the clock starts, as for every variant alike
        generate_candidates(model, tokenizer, [q["prompt"] for q in questions[:2]],
                            **{**generation, "max_new_tokens": 2}, **options)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        warm_at = time.perf_counter()
        candidates = generate_candidates(model, tokenizer, [q["prompt"] for q in questions], on_batch=reports.append,
                                         **generation, **options)
        generated_at = time.perf_counter()
    del model
    free_gpu_memory()
    chosen = choose_sql(questions, candidates, args.db, extract=extract_sql, repair=predict.repair_columns)
    sqls = [choice.sql for choice in chosen]
    chosen_at = time.perf_counter()
    ran = [r for r in reports if not r.out_of_memory]
    ratios = [(r.peak_bytes - r.allocated_bytes) / r.estimated_bytes for r in ran if r.peak_bytes is not None]
    peaks = [r.peak_bytes for r in reports if r.peak_bytes is not None]
    row = {"load_s": round(loaded_at - started, 1), "generate_s": round(generated_at - warm_at, 2),
           "choose_s": round(chosen_at - generated_at, 1), "batches": len(ran),
           "out_of_memory": len(reports) - len(ran), "prompts_per_batch": "/".join(str(r.prompts) for r in ran),
           "peak_mb": round(max(peaks) / 2**20) if peaks else None,
           "measured_to_estimate": round(statistics.median(ratios), 2) if ratios else None,
           "compute_dtype": str(dtype).removeprefix("torch."),
           "batch_details": [{"prompts": r.prompts, "prompt_tokens": r.shape.prompt_tokens,
                              "cache_tokens": r.shape.cache_tokens, "estimated_mb": round(r.estimated_bytes / 2**20),
                              "peak_mb": None if r.peak_bytes is None else round(r.peak_bytes / 2**20),
                              "weights_mb": None if r.allocated_bytes is None else round(r.allocated_bytes / 2**20),
                              "out_of_memory": r.out_of_memory} for r in reports]}
    return row, sqls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--adapter", type=Path, default=Path("outputs/adapter"))
    parser.add_argument("--dev", type=Path, default=Path("data/prepared/dev.jsonl"))
    parser.add_argument("--gold", type=Path, default=Path("data/prepared/dev_gold.sql"))
    parser.add_argument("--db", type=Path, default=Path("data/spider/database"))
    parser.add_argument("--model", default="base,finetuned", help="base, finetuned or both (comma-separated)")
    parser.add_argument("--path", default="dequantized", help="4-bit, dequantized or both (comma-separated)")
    parser.add_argument("--variant", default="planned", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--cap-gb", type=float, help=f"GPU memory cap in GiB, as {MEMORY_CAP_VARIABLE} sets it")
    parser.add_argument("--prefill-chunk", type=int, default=256, help="prompt tokens per prefill step (planned-chunked)")
    parser.add_argument("--limit", type=int, default=0, help="first N questions (0 = all)")
    parser.add_argument("--batch-size", type=int, help="default: predict.batch_size")
    parser.add_argument("--json", type=Path, help="also write the rows here, with every batch")
    args = parser.parse_args()
    models = names(args.model, ("base", "finetuned"))
    paths = names(args.path, ("4-bit", "dequantized"))
    variants = names(args.variant, VARIANTS)

    if args.cap_gb is not None:
        os.environ[MEMORY_CAP_VARIABLE] = str(args.cap_gb)
    cap = cap_gpu_memory()
    params = Params.read()
    questions = [json.loads(line) for line in args.dev.open(encoding="utf-8") if line.strip()]
    gold = args.gold.read_text(encoding="utf-8").splitlines()
    limit = args.limit
    if not torch.cuda.is_available():
        print(f"note: no CUDA GPU: the cap does nothing here{'' if limit else f'; the first {CPU_QUESTIONS} questions only'}",
              flush=True)
        limit = limit or CPU_QUESTIONS
    if limit:
        questions, gold = questions[:limit], gold[:limit]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"{len(questions)} questions on {device}, cap {f'{cap} GiB' if cap else 'none'}, "
          f"{params.predict.num_candidates} candidates, batch_size {args.batch_size or params.predict.batch_size}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gold_file = Path(tmp) / "gold.sql"
        gold_file.write_text("\n".join(gold) + "\n", encoding="utf-8")
        for model in models:
            model_dir = args.base if model == "base" else args.adapter
            for path in paths:
                first_sqls = None
                for variant in variants:
                    options = {key: (args.prefill_chunk if value == "--prefill-chunk" else value)
                               for key, value in VARIANTS[variant].items()}
                    row, sqls = run(model_dir, path, options, questions, args, params)
                    pred_file = Path(tmp) / "pred.sql"
                    pred_file.write_text("".join(sql + "\n" for sql in sqls), encoding="utf-8")
                    score = evaluate(gold_file, pred_file, args.db).scores["all"]["exec"]
                    first_sqls = first_sqls or sqls
                    row = {"model": model, "path": path, "variant": variant, "questions": len(questions), **row,
                           "exec_all": round(score, 4),
                           "sql_changed": sum(a != b for a, b in zip(sqls, first_sqls))}
                    rows.append(row)
                    print({k: v for k, v in row.items() if k != "batch_details"}, flush=True)
    columns = [c for c in rows[0] if c not in ("batch_details", "prompts_per_batch")]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
