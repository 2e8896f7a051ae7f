"""Prediction speed and accuracy: the 4-bit path (bitsandbytes, adapter on top) against the
dequantized path (`predict.dequantize`: the same weights as plain 16-bit layers, adapter merged
in), for the base and fine-tuned models, greedy (one candidate per question).

Run after `dvc repro` (it reads outputs/, data/prepared/ and data/spider/):
    python benchmarks/bench_predict.py --limit 972
Prints one row per model and path: load and generation seconds, and strict execution accuracy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sqlora.core.params import Params
from sqlora.data.prompts import extract_sql
from sqlora.eval.accuracy import evaluate
from sqlora.model.loading import load_for_inference
from sqlora.predict.generation import generate


def load(model: str, path: str, args, quant: dict):
    model_dir = args.base if model == "base" else args.adapter
    return load_for_inference(model_dir, args.base, quant, dequantize=path != "4-bit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--adapter", type=Path, default=Path("outputs/adapter"))
    parser.add_argument("--dev", type=Path, default=Path("data/prepared/dev.jsonl"))
    parser.add_argument("--gold", type=Path, default=Path("data/prepared/dev_gold.sql"))
    parser.add_argument("--db", type=Path, default=Path("data/spider/database"))
    parser.add_argument("--limit", type=int, default=0, help="first N questions (0 = all)")
    parser.add_argument("--batch-size", type=int, help="default: predict.batch_size")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    params = Params.read()
    quant, predict = params.quant, params.predict
    questions = [json.loads(line) for line in args.dev.open(encoding="utf-8")]
    gold = args.gold.read_text(encoding="utf-8").splitlines()
    if args.limit:
        questions, gold = questions[:args.limit], gold[:args.limit]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gold_file = Path(tmp) / "gold.sql"
        gold_file.write_text("\n".join(gold) + "\n", encoding="utf-8")
        for model in ("base", "finetuned"):
            for path in ("4-bit", "dequantized 16-bit"):
                started = time.perf_counter()
                loaded, tokenizer = load(model, path, args, quant)
                loaded_at = time.perf_counter()
                texts = generate(loaded, tokenizer, [q["prompt"] for q in questions],
                                 batch_size=args.batch_size or predict.batch_size, max_new_tokens=predict.max_new_tokens,
                                 answer_prefix=predict.answer_prefix)
                finished = time.perf_counter()
                pred_file = Path(tmp) / "pred.sql"
                pred_file.write_text("".join(extract_sql(t) + "\n" for t in texts), encoding="utf-8")
                score = evaluate(gold_file, pred_file, args.db).scores["all"]["exec"]
                rows.append({"model": model, "path": path, "questions": len(questions),
                             "load_s": round(loaded_at - started, 1), "generate_s": round(finished - loaded_at, 1),
                             "exec_all": round(score, 4)})
                del loaded
                print(rows[-1], flush=True)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
