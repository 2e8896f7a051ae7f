"""preprocess: turn Spider questions into chat prompts for training and for prediction.

Writes train.jsonl (prompt-completion records), dev.jsonl and dev_gold.sql (same order), and
metrics/data.json with the counts, and prompt_format.json, how the prompts were made (training
keeps it with the adapter). Dev questions whose database file is missing are skipped and counted;
they could not be evaluated. With data.value_hints, each prompt also lists the database values
its question names (sqlora.data.values). data.schema_format `auto` picks the format by the size
of the prepared model, which prepare-model records (--model-facts; schema.schema_format_for).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import replace_dir, staging_area, write_json_atomic
from sqlora.core.params import AUTO, Params
from sqlora.data.prompts import PROMPT_FORMAT_FILE, SYSTEM_PROMPT, dev_record, training_record
from sqlora.data.schema import load_schemas, schema_format_for, serialize_schema
from sqlora.data.spider import database_file, load_examples
from sqlora.data.values import HINTS_HEADER, QuestionHints


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spider", type=Path, required=True, help="fetched Spider folder")
    parser.add_argument("--model-facts", type=Path, required=True,
                        help="what prepare-model recorded of the model (its size decides data.schema_format auto)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = Params.read(args.params).data
    schema_format, value_hints = data.schema_format, data.value_hints
    train_limit, dev_limit = data.train_limit, data.dev_limit
    chosen_by = ""
    if schema_format == AUTO:
        if not args.model_facts.is_file():
            raise SqloraError(f"{args.model_facts} not found: run the prepare-model stage first "
                              "(data.schema_format auto goes by the model's size)")
        parameters = json.loads(args.model_facts.read_text(encoding="utf-8"))["parameters"]
        schema_format = schema_format_for(parameters)
        chosen_by = f" (auto: a model of {parameters / 1e6:.0f}M parameters)"

    schemas = load_schemas(args.spider / "tables.json")
    schema_texts = {db_id: serialize_schema(db, schema_format) for db_id, db in schemas.items()}
    hints = QuestionHints(lambda db_id: database_file(args.spider, db_id), schemas) if value_hints else None

    def schema_for(example: dict) -> str:
        text = schema_texts[example["db_id"]]
        return text + hints.text(example["db_id"], example["question"]) if hints else text

    train, train_unknown = partition(load_examples(args.spider / "train_spider.json"),
                                     lambda example: example["db_id"] in schema_texts)
    train_records = [training_record(example, schema_for(example)) for example in first(train, train_limit)]

    dev, dev_unknown = partition(load_examples(args.spider / "dev.json"),
                                 lambda example: example["db_id"] in schema_texts)
    dev, dev_missing = partition(dev, lambda example: database_file(args.spider, example["db_id"]).is_file())
    dev_records = [dev_record(i, example, schema_for(example)) for i, example in enumerate(first(dev, dev_limit))]

    # Built beside, swapped in whole: a failure leaves the previous data/prepared as it was.
    with staging_area(args.out) as staging:
        new_copy = staging / args.out.name
        new_copy.mkdir()
        write_jsonl(new_copy / "train.jsonl", train_records)
        write_jsonl(new_copy / "dev.jsonl", dev_records)
        write_lines(new_copy / "dev_gold.sql", [f"{r['gold']}\t{r['db_id']}" for r in dev_records])
        (new_copy / PROMPT_FORMAT_FILE).write_text(json.dumps(
            {"schema_format": schema_format, "value_hints": value_hints, "system_prompt": SYSTEM_PROMPT}, indent=2)
            + "\n", encoding="utf-8")
        replace_dir(new_copy, args.out)
    write_json_atomic(args.metrics, {
        "schema_format": schema_format,
        "train_examples": len(train_records),
        "train_skipped_unknown_db": len(train_unknown),
        "dev_questions": len(dev_records),
        "dev_skipped_missing_db": len(dev_missing),
        "dev_skipped_unknown_db": len(dev_unknown),
        "train_with_value_hints": sum(1 for r in train_records if HINTS_HEADER in r["prompt"][-1]["content"]),
        "dev_with_value_hints": sum(1 for r in dev_records if HINTS_HEADER in r["prompt"][-1]["content"]),
    })

    print(f"schema format: {schema_format}{chosen_by}" + (", with value hints" if value_hints else ""))
    print(f"train: {len(train_records)} examples{skipped(train_unknown, 'db_id not in tables.json')}")
    print(f"dev: {len(dev_records)} questions{skipped(dev_missing, 'database file missing')}"
          f"{skipped(dev_unknown, 'db_id not in tables.json')}")


def partition(examples: list[dict], keep) -> tuple[list[dict], list[dict]]:
    kept = [example for example in examples if keep(example)]
    dropped = [example for example in examples if not keep(example)]
    return kept, dropped


def first(items: list, limit: int) -> list:
    """The first `limit` items; 0 means all."""
    return items[:limit] if limit else items


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
