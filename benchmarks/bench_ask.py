"""How fast `sqlora ask` answers: the model is loaded once, then the first answer after the load
and the next ones are timed, each split into building the prompt, generating and running the
SQL. Runs on the CPU or a CUDA GPU.

    python benchmarks/bench_ask.py --db path/to/shop.sqlite                    # outputs/adapter
    python benchmarks/bench_ask.py --db path/to/shop.sqlite --model outputs/base_model --device cpu
    python benchmarks/bench_ask.py --db concert_singer.sqlite --questions "How many singers are there?" ...

Decoding is `sqlora ask`'s (params.yaml's predict section, else its defaults); --candidates
overrides predict.num_candidates. Without --questions, the questions are made from the
database's first tables ("How many <table> are there?"). Prints one row per answer: seconds of
wall time and of this process's CPU time, prompt and answer tokens, and what the SQL gave.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

STARTED = time.perf_counter()

from sqlora.ask import (  # noqa: E402
    choose_model,
    choose_prompt_format,
    load_model,
    read_settings,
    sample_prompt,
)
from sqlora.data.database_prompt import DatabasePrompts  # noqa: E402
from sqlora.data.sqlite_schema import natural_name, read_schema  # noqa: E402
from sqlora.predict.answer import answer_on_database  # noqa: E402
from sqlora.sql.sandbox import ReadOnlyDatabase  # noqa: E402


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="a SQLite database file")
    parser.add_argument("--model", help="as `sqlora ask --model` (default: outputs/adapter over outputs/base_model)")
    parser.add_argument("--base", type=Path, help="as `sqlora ask --base`")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU if there is one)")
    parser.add_argument("--questions", nargs="+", help="the questions, first to last")
    parser.add_argument("--next", type=int, default=4, help="answers timed after the first (default 4)")
    parser.add_argument("--candidates", type=int, help="override predict.num_candidates")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    import torch

    from sqlora.model.devices import describe_device

    settings = read_settings(args.params)
    if args.candidates:
        settings = dataclasses.replace(settings, predict=dataclasses.replace(settings.predict,
                                                                             num_candidates=args.candidates))
    schema = read_schema(args.db, args.db.stem)
    questions = args.questions or [f"How many {natural_name(table)} are there?"
                                   for table in schema["table_names_original"]]
    questions = (questions * (1 + args.next))[:1 + args.next]
    chosen = choose_model(args.model, args.base, settings)
    imported = time.perf_counter() - STARTED
    started = clock()
    model = load_model(chosen, settings, args.device, sample_prompt(args.db))
    load_s = time.perf_counter() - started[0]
    prompt_format, _ = choose_prompt_format(chosen, settings, model.parameters)
    prompts = DatabasePrompts(args.db, prompt_format)
    device = str(next(model.model.parameters()).device)
    print(f"{describe_device()}; torch threads {torch.get_num_threads()}")
    print(f"model: {chosen.describe()}; {model.parameters / 1e6:.0f}M parameters on {device}")
    print(f"decoding: {settings.predict.num_candidates} candidates, at most {settings.predict.max_new_tokens} "
          f"new tokens; prompt: {prompt_format.describe()}")
    print(f"imports before the load {imported:.2f} s; load {load_s:.2f} s (wall), "
          f"{time.process_time() - started[1]:.2f} s (CPU)")

    rows = []
    with ReadOnlyDatabase(args.db) as database:
        for number, question in enumerate(questions):
            start = clock()
            fitted = prompts.prompt(question, model.prompt_tokens, model.max_prompt_tokens())
            prompted = clock()
            generations = model.generations(fitted.messages)
            generated = clock()
            answer = answer_on_database(generations, database, repair=settings.predict.repair_columns,
                                        timeout=settings.timeout, max_rows=20)
            done = clock()  # the answers are text by now: nothing left running on a GPU
            new_tokens = max(len(model.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in generations)
            rows.append({
                "answer": "first" if number == 0 else f"next {number}",
                "question": question,
                "prompt_tokens": model.prompt_tokens(fitted.messages),
                "new_tokens": new_tokens,
                "prompt_s": round(prompted[0] - start[0], 3),
                "generate_s": round(generated[0] - prompted[0], 3),
                "sql_s": round(done[0] - generated[0], 3),
                "total_s": round(done[0] - start[0], 3),
                "total_cpu_s": round(done[1] - start[1], 3),
                "result": answer.error or f"{answer.row_count} rows",
            })
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps({"device": describe_device(), "load_s": round(load_s, 2), "answers": rows},
                                        indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
