"""Is the exported GGUF file the model predict runs? Greedy SQL from the merged model against the
same questions answered by each GGUF file, read back by transformers' GGUF loader and, with
--llama-cpp, run by llama.cpp (llama-cpp-python, which is no dependency of sqlora).

Exports base + adapter as each type (sqlora.model.gguf_export, as `stages/export.py --gguf` does),
decodes the first --limit dev questions greedily, one at a time, with predict's answer prefix and
end tokens (also with the merged model's 2-D weights rounded to float16, what an f16 file holds),
and prints per path: answers identical to the merged model's, execution accuracy, and
answer tokens per second (prompt included); then each question whose SQL differs, and whether each
side's SQL is right. llama.cpp is given the prompt's token ids from the transformers tokenizer (the
same input); how often its own tokenizer splits the prompt otherwise is counted beside.

    python benchmarks/bench_export.py --adapter outputs/adapter --base outputs/base_model \\
        --dev data/prepared/dev.jsonl --db data/spider/database --limit 50 --llama-cpp
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from sqlora.core.params import Params
from sqlora.data.prompts import extract_sql, prompt_text
from sqlora.eval.accuracy import evaluate
from sqlora.model.gguf_export import GGUF_FILE, check_exportable, export_gguf
from sqlora.model.loading import load_tokenizer, merged_model, tokenizer_dir
from sqlora.predict.generation import generate, sql_end_token_ids

ROUNDED = "transformers merged, 2-D weights rounded to float16"


def transformers_answers(model, tokenizer, prompts, predict) -> tuple[list[str], float]:
    started = time.perf_counter()
    texts = generate(model, tokenizer, prompts, batch_size=1, max_new_tokens=predict.max_new_tokens,
                     answer_prefix=predict.answer_prefix, desc="transformers")
    return texts, time.perf_counter() - started


def llama_cpp_answers(path: Path, tokenizer, prompts, predict, threads: int) -> tuple[list[str], float, int]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=4096, n_batch=512, n_threads=threads, verbose=False)
    stops = set(sql_end_token_ids(tokenizer))
    texts, seconds, retokenized = [], 0.0, 0
    for prompt in prompts:
        text = prompt_text(tokenizer, prompt) + predict.answer_prefix
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        retokenized += llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) != ids
        started = time.perf_counter()
        answer = []
        for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            if token in stops or len(answer) >= predict.max_new_tokens:
                break
            answer.append(token)
        seconds += time.perf_counter() - started
        texts.append(predict.answer_prefix + tokenizer.decode(answer, skip_special_tokens=True))
    return texts, seconds, retokenized


def answer_tokens(tokenizer, texts: list[str], prefix: str) -> int:
    """New tokens in the answers (re-tokenized, one end token each), the same count for every path."""
    return sum(len(tokenizer(t[len(prefix):], add_special_tokens=False)["input_ids"]) + 1 for t in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, default=Path("outputs/adapter"))
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--dev", type=Path, default=Path("data/prepared/dev.jsonl"))
    parser.add_argument("--gold", type=Path, help="default: dev_gold.sql beside --dev")
    parser.add_argument("--db", type=Path, default=Path("data/spider/database"))
    parser.add_argument("--limit", type=int, default=50, help="first N questions")
    parser.add_argument("--types", default="f16,q8_0")
    parser.add_argument("--llama-cpp", action="store_true", help="also run each file with llama-cpp-python")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads")
    parser.add_argument("--out", type=Path, help="keep the GGUF files here (default: a temporary folder)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", type=Path, help="also write the rows and differences here")
    args = parser.parse_args()

    params = Params.read(args.params)
    quant, predict = params.quant, params.predict
    questions = [json.loads(line) for line in args.dev.open(encoding="utf-8") if line.strip()][:args.limit]
    gold = (args.gold or args.dev.with_name("dev_gold.sql")).read_text(encoding="utf-8").splitlines()[:len(questions)]
    prompts = [q["prompt"] for q in questions]
    kinds = [check_exportable(args.base, name) for name in args.types.split(",")]

    model = merged_model(args.adapter, args.base, quant)
    tokenizer = load_tokenizer(tokenizer_dir(args.adapter, args.base))
    device = next(model.parameters()).device
    runs = {"transformers merged (predict)": transformers_answers(model, tokenizer, prompts, predict)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        files = {}
        for kind in kinds:
            started = time.perf_counter()
            files[kind.name] = export_gguf(model, tokenizer, args.base, args.adapter, folder / kind.name, kind)
            size = files[kind.name].stat().st_size / 1e6
            print(f"exported {kind.name} in {time.perf_counter() - started:.0f} s: {size:,.0f} MB", flush=True)
        if "f16" in files:  # what the f16 file should hold: the merged model, its 2-D weights rounded
            round_to_float16(model)
            runs[ROUNDED] = transformers_answers(model, tokenizer, prompts, predict)
        del model
        for name, path in files.items():
            from transformers import AutoModelForCausalLM

            back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=GGUF_FILE, dtype=model_dtype(quant))
            back = back.to(device).eval()
            runs[f"transformers GGUF {name}"] = transformers_answers(back, tokenizer, prompts, predict)
            del back
        notes = {}
        if args.llama_cpp:
            for name, path in files.items():
                texts, seconds, retokenized = llama_cpp_answers(path, tokenizer, prompts, predict, args.threads)
                runs[f"llama.cpp GGUF {name}"] = (texts, seconds)
                notes[f"llama.cpp GGUF {name}"] = f"{retokenized} prompts split otherwise by llama.cpp's tokenizer"
        rows, differences = score(runs, questions, gold, args.db, tokenizer, predict.answer_prefix, Path(tmp))
    print_table(rows, notes)
    for path, items in differences.items():
        print(f"\n{path}: {len(items)} of {len(questions)} SQL differ from the merged model's")
        for item in items:
            print(f"  #{item['index']} merged {'right' if item['merged_right'] else 'wrong'}: {item['merged']}\n"
                  f"  {' ' * len(str(item['index']))}  this   {'right' if item['right'] else 'wrong'}: {item['sql']}")
    if ROUNDED in runs and "transformers GGUF f16" in runs:
        rounded, read_back = ([extract_sql(t) for t in runs[key][0]] for key in (ROUNDED, "transformers GGUF f16"))
        notes["f16 against the rounded merged model"] = (
            f"{sum(a != b for a, b in zip(rounded, read_back))} of {len(questions)} SQL differ")
        print(f"\ntransformers GGUF f16 against {ROUNDED}: {notes['f16 against the rounded merged model']}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "differences": differences, "notes": notes}, indent=2) + "\n")


def round_to_float16(model) -> None:
    """Round every weight the f16 file stores as F16 (the 2-D ones) to float16 and back, in place."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(parameter.to(torch.float16).to(parameter.dtype))


def model_dtype(quant):
    from sqlora.model.precision import compute_dtype

    return compute_dtype(quant.bnb_4bit_compute_dtype)


def score(runs: dict, questions: list[dict], gold: list[str], db: Path, tokenizer, prefix: str, tmp: Path):
    gold_file = tmp / "gold.sql"
    gold_file.write_text("\n".join(gold) + "\n", encoding="utf-8")
    sqls, right = {}, {}
    rows = []
    for path, (texts, seconds) in runs.items():
        sqls[path] = [extract_sql(t) for t in texts]
        pred_file = tmp / "pred.sql"
        pred_file.write_text("".join(s + "\n" for s in sqls[path]), encoding="utf-8")
        result = evaluate(gold_file, pred_file, db, workers=1)
        right[path] = {r["index"]: bool(r["exec"]) for r in result.per_question}
        tokens = answer_tokens(tokenizer, texts, prefix)
        rows.append({"path": path, "questions": len(texts), "same_sql": sum(a == b for a, b in zip(sqls[path], sqls[
            next(iter(runs))])), "exec": round(result.scores["all"]["exec"], 4), "answer_tokens": tokens,
            "seconds": round(seconds, 1), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)})
    merged = next(iter(runs))
    differences = {path: [{"index": i, "merged": sqls[merged][i], "merged_right": right[merged].get(i),
                           "sql": sqls[path][i], "right": right[path].get(i)}
                          for i in range(len(questions)) if sqls[path][i] != sqls[merged][i]]
                   for path in runs if path != merged}
    return rows, differences


def print_table(rows: list[dict], notes: dict) -> None:
    columns = list(rows[0])
    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    for path, note in notes.items():
        print(f"{path}: {note}")


if __name__ == "__main__":
    main()
