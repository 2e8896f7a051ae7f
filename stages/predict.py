"""predict: one SQL per dev question, in gold order, from the base model or base + adapter.

With predict.num_candidates > 1 the model offers that many answers (beam search) and the first
that runs without error on the question's database is kept (execution-guided decoding). With
predict.repair_columns, where none runs and returns rows, the names SQLite reports missing are
repaired: a column taken from the wrong table of a join is pointed at the one table that has it,
a misspelt table or column becomes the database's name it most resembles, and a column of a
table the query lacks joins that table in through its foreign key (predict/choose.py, repair_names)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
if sys.platform == "linux":
    # fewer, growable GPU memory segments: new batch shapes then cost no fresh allocations
    # (benchmarks/bench_kv_cache.py); set before torch starts CUDA
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import replace_dir, staging_area, write_json_atomic
from sqlora.core.params import Params
from sqlora.core.progress import say
from sqlora.data.prompts import extract_sql
from sqlora.model.devices import cap_gpu_memory, describe_device, prediction_devices
from sqlora.predict.choose import choose_sql
from sqlora.predict.fanout import predict_on_devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="base model folder or adapter folder")
    parser.add_argument("--base", type=Path, required=True, help="prepared base model folder")
    parser.add_argument("--dev", type=Path, required=True, help="dev.jsonl written by preprocess")
    parser.add_argument("--db", type=Path, required=True,
                        help="databases, to pick a candidate that runs and to repair names")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, help="the stage's time and peak memory, named after --out's folder")
    parser.add_argument("--details", type=Path, help="counts, times by step, and the dtype the model computed in")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = Params.read(args.params)
    quant, predict = params.quant, params.predict
    trust_remote_code = params.model.trust_remote_code
    if not args.model.is_dir():
        raise SqloraError(f"model folder {args.model} does not exist (run the stage that makes it)")
    cap_gpu_memory()
    say(describe_device())
    with args.dev.open(encoding="utf-8") as f:
        questions = [json.loads(line) for line in f if line.strip()]

    devices = prediction_devices(predict.num_gpus)
    before_load = time.perf_counter() - STARTED
    run = predict_on_devices(
        args.model, args.base, quant, [q["prompt"] for q in questions], devices,
        dequantize=predict.dequantize, trust_remote_code=trust_remote_code,
        batch_size=predict.batch_size, max_new_tokens=predict.max_new_tokens,
        answer_prefix=predict.answer_prefix, num_candidates=predict.num_candidates,
        desc=f"predict {args.out.name}")
    candidates = run.candidates
    chosen = choose_sql(questions, candidates, args.db, extract=extract_sql, repair=predict.repair_columns)

    sqls = [choice.sql for choice in chosen]
    records = []
    for q, texts, choice in zip(questions, candidates, chosen):
        record = {"index": q["index"], "db_id": q["db_id"], "question": q["question"],
                  "generation": texts[choice.index], "sql": choice.sql}
        if len(texts) > 1:
            record.update(candidate=choice.index, candidates=texts)
        if choice.repaired:
            record["repaired"] = True
        records.append(json.dumps(record, ensure_ascii=False) + "\n")
    with staging_area(args.out) as staging:  # the previous predictions stay until these are complete
        new = staging / args.out.name
        new.mkdir()
        (new / "pred.sql").write_text("".join(sql + "\n" for sql in sqls), encoding="utf-8")
        (new / "generations.jsonl").write_text("".join(records), encoding="utf-8")
        replace_dir(new, args.out)
    # metric names carry the model's name (base, finetuned): dvc exp show puts both stages' side by side
    name = args.out.name
    metrics = {f"{name}_predict_s": round(time.perf_counter() - STARTED, 2),
               f"{name}_predict_peak_mb": None if run.peak_memory_mb is None else round(run.peak_memory_mb, 1)}
    details = {"questions": len(questions), "devices": len(devices), "compute_dtype": run.compute_dtype,
               "ready_s": round(before_load + run.ready_s, 2),  # from the stage's start to its first batch
               "load_s": round(run.load_s, 2), "generate_s": round(run.generate_s, 2),
               "questions_per_s": round(len(questions) / max(run.generate_s, 1e-9), 2),
               "empty_predictions": sum(1 for s in sqls if not s),
               "not_first_candidate": sum(1 for choice in chosen if choice.index),
               "repaired": sum(1 for choice in chosen if choice.repaired)}
    if args.details:
        write_json_atomic(args.details, details)
    if args.metrics:
        write_json_atomic(args.metrics, metrics)
    say(f"{args.out}: " + "  ".join(f"{k}={v}" for k, v in {**metrics, **details}.items()))


if __name__ == "__main__":
    run_stage(main)
