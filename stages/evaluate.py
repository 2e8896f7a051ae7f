"""evaluate: execution accuracy by Spider hardness, strict and with plug-value, for the base
model, the fine-tuned one and their difference."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


from sqlora.errors import SqloraError, run_stage
from sqlora.evaluate import evaluate, format_table
from sqlora.params import Params

LEVELS = ("easy", "medium", "hard", "extra", "all")
MODES = {"exec": False, "plug": True}  # metric name -> plug_value


def named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gold", type=Path, default=Path("data/prepared/dev_gold.sql"))
    parser.add_argument("--db", type=Path, default=Path("data/spider/database"))
    parser.add_argument("--pred", type=named_path, action="append", required=True,
                        help="NAME=pred.sql, once per model (e.g. base=..., finetuned=...)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--plot", type=Path, default=Path("metrics/accuracy_by_hardness.csv"))
    parser.add_argument("--out", type=Path, default=Path("outputs/eval"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = Params.read(args.params).eval
    timeout, keep_distinct, workers = params.timeout, params.keep_distinct, params.workers or None
    for name, path in args.pred:
        if not path.is_file():
            raise SqloraError(f"predictions for {name} not found: {path}")

    counts: dict[str, int] = {}
    metrics: dict[str, float] = {}
    per_question: dict[int, dict] = {}
    for name, path in args.pred:
        for mode, plug_value in MODES.items():
            result = evaluate(args.gold, path, args.db, plug_value=plug_value, keep_distinct=keep_distinct,
                              timeout=timeout, workers=workers)
            print(f"\n{name} ({'plug-value' if plug_value else 'strict'} execution accuracy)")
            print(format_table(result))
            for level in LEVELS:
                metrics[f"{name}_{mode}_{level}"] = round(result.scores[level]["exec"], 4)
                counts[f"count_{level}"] = int(result.scores[level]["count"])
            for row in result.per_question:
                entry = per_question.setdefault(row["index"], {
                    "index": row["index"], "db_id": row["db_id"], "hardness": row["hardness"]})
                entry[f"{name}_{mode}"] = row["exec"]
                entry[f"{name}_{mode}_error"] = row["error"]
    names = [name for name, _ in args.pred]
    if len(names) == 2:  # e.g. finetuned minus base
        first, second = names
        for mode in MODES:
            for level in LEVELS:
                metrics[f"delta_{mode}_{level}"] = round(
                    metrics[f"{second}_{mode}_{level}"] - metrics[f"{first}_{mode}_{level}"], 4)

    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps({**metrics, **counts}, indent=2) + "\n", encoding="utf-8")
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    with args.plot.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["bar", "model", "hardness", "exec"])
        for name in names:
            for level in LEVELS:
                writer.writerow([f"{name} {level}", name, level, metrics[f"{name}_exec_{level}"]])
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "per_question.jsonl").open("w", encoding="utf-8") as f:
        for index in sorted(per_question):
            f.write(json.dumps(per_question[index]) + "\n")
    print(f"\nwrote {args.metrics}, {args.plot}, {args.out / 'per_question.jsonl'}")


if __name__ == "__main__":
    run_stage(main)
