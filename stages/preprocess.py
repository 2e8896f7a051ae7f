"""preprocess: turn the fetched questions into chat prompts for training and for prediction.

Writes train.jsonl (prompt-completion records), dev.jsonl and dev_gold.sql (same order),
prompt_format.json (how the prompts were made; training keeps it with the adapter) and
metrics/data.json with the counts. Left out and counted: questions whose db_id is not in
tables.json, dev questions whose database file is missing, and questions whose gold query fails
on its database (sqlora.data.gold; the first few are named). Data without a dev file gets one
split off by database (sqlora.data.split). data.value_hints adds the database values a question
names (sqlora.data.values); data.evidence, its evidence (BIRD's hint). data.schema_format `auto`
goes by the prepared model's size (--model-facts; schema.schema_format_for).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from functools import partial
from pathlib import Path

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import replace_dir, staging_area, write_json_atomic
from sqlora.core.params import AUTO, Params
from sqlora.data.gold import describe_failures, running_golds
from sqlora.data.layouts import read_layout, train_file
from sqlora.data.prompts import PROMPT_FORMAT_FILE, SYSTEM_PROMPT, dev_record, training_record
from sqlora.data.schema import load_schemas, schema_format_for, serialize_schema
from sqlora.data.spider import database_file, load_examples
from sqlora.data.split import split_by_database
from sqlora.data.values import HINTS_HEADER, QuestionHints


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spider", type=Path, required=True, help="the folder fetch-db filled (Spider's layout)")
    parser.add_argument("--model-facts", type=Path, required=True,
                        help="what prepare-model recorded of the model (its size decides data.schema_format auto)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = Params.read(args.params).data
    schema_format, chosen_by = data.schema_format, ""
    if schema_format == AUTO:
        if not args.model_facts.is_file():
            raise SqloraError(f"{args.model_facts} not found: run the prepare-model stage first "
                              "(data.schema_format auto goes by the model's size)")
        parameters = json.loads(args.model_facts.read_text(encoding="utf-8"))["parameters"]
        schema_format = schema_format_for(parameters)
        chosen_by = f" (auto: a model of {parameters / 1e6:.0f}M parameters)"

    layout = read_layout(args.spider)["layout"]
    database_of = partial(database_file, args.spider)
    schemas = load_schemas(args.spider / "tables.json")
    schema_texts = {db_id: serialize_schema(db, schema_format) for db_id, db in schemas.items()}
    hints = QuestionHints(database_of, schemas) if data.value_hints else None

    def evidence(example: dict) -> str:
        return example.get("evidence", "") if data.evidence else ""

    def prompt_parts(example: dict) -> tuple[dict, str, str]:
        text = schema_texts[example["db_id"]]
        return example, text + (hints.text(example["db_id"], example["question"]) if hints else ""), evidence(example)

    train, train_unknown = partition(load_examples(train_file(args.spider)), lambda e: e["db_id"] in schema_texts)
    if (args.spider / "dev.json").is_file():
        dev, split_databases = load_examples(args.spider / "dev.json"), None
    else:
        train, dev, split_databases = split_by_database(train, data.dev_fraction, data.split_seed)
    dev, dev_unknown = partition(dev, lambda example: example["db_id"] in schema_texts)
    dev, dev_missing = partition(dev, lambda example: database_of(example["db_id"]).is_file())
    train, train_gold_errors = running_golds(train, database_of, limit=data.train_limit, desc="train gold queries")
    dev, dev_gold_errors = running_golds(dev, database_of, limit=data.dev_limit, desc="dev gold queries")
    train_records = [training_record(*prompt_parts(example)) for example in train]
    dev_records = [dev_record(i, *prompt_parts(example)) for i, example in enumerate(dev)]

    # Built beside, swapped in whole: a failure leaves the previous data/prepared as it was.
    with staging_area(args.out) as staging:
        new_copy = staging / args.out.name
        new_copy.mkdir()
        write_jsonl(new_copy / "train.jsonl", train_records)
        write_jsonl(new_copy / "dev.jsonl", dev_records)
        write_lines(new_copy / "dev_gold.sql", [f"{r['gold']}\t{r['db_id']}" for r in dev_records])
        (new_copy / PROMPT_FORMAT_FILE).write_text(json.dumps(
            {"schema_format": schema_format, "value_hints": data.value_hints, "evidence": data.evidence,
             "system_prompt": SYSTEM_PROMPT}, indent=2) + "\n", encoding="utf-8")
        replace_dir(new_copy, args.out)
    counts = {
        "layout": layout, "schema_format": schema_format,
        "train_examples": len(train_records),
        "train_skipped_unknown_db": len(train_unknown),
        "train_skipped_gold_error": len(train_gold_errors),
        "dev_questions": len(dev_records),
        "dev_skipped_missing_db": len(dev_missing),
        "dev_skipped_unknown_db": len(dev_unknown),
        "dev_skipped_gold_error": len(dev_gold_errors),
        "train_with_value_hints": sum(1 for r in train_records if HINTS_HEADER in r["prompt"][-1]["content"]),
        "dev_with_value_hints": sum(1 for r in dev_records if HINTS_HEADER in r["prompt"][-1]["content"]),
        "train_with_evidence": sum(1 for example in train if evidence(example)),
        "dev_with_evidence": sum(1 for example in dev if evidence(example)),
    }
    if split_databases is not None:
        counts["dev_split_databases"] = split_databases
    write_json_atomic(args.metrics, counts)

    print(f"schema format: {schema_format}{chosen_by}" + (", with value hints" if data.value_hints else "")
          + (", with evidence" if counts["train_with_evidence"] + counts["dev_with_evidence"] else ""))
    if split_databases is not None:
        print(f"no dev file: dev is split off by database (data.dev_fraction {data.dev_fraction:g}, "
              f"data.split_seed {data.split_seed}): {', '.join(split_databases)}")
    print(f"train: {len(train_records)} examples{skipped(train_unknown, 'db_id not in tables.json')}"
          f"{skipped([e for e, _ in train_gold_errors], 'gold query fails on its database')}")
    print(f"dev: {len(dev_records)} questions{skipped(dev_missing, 'database file missing')}"
          f"{skipped(dev_unknown, 'db_id not in tables.json')}"
          f"{skipped([e for e, _ in dev_gold_errors], 'gold query fails on its database')}")
    for line in describe_failures(train_gold_errors + dev_gold_errors):
        print(line)


def partition(examples: list[dict], keep) -> tuple[list[dict], list[dict]]:
    kept = [example for example in examples if keep(example)]
    dropped = [example for example in examples if not keep(example)]
    return kept, dropped


def skipped(examples: list[dict], reason: str) -> str:
    if not examples:
        return ""
    by_db = Counter(example["db_id"] for example in examples)
    return f"; skipped {len(examples)} ({reason}: {', '.join(sorted(by_db))})"


def write_jsonl(path: Path, records: list[dict]) -> None:
    write_lines(path, [json.dumps(record, ensure_ascii=False) for record in records])


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8", newline="\n")


if __name__ == "__main__":
    run_stage(main)
