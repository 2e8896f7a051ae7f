"""report: one self-contained HTML page of the run, outputs/report/index.html.

At the top, execution accuracy by hardness (base and fine-tuned, strict and plug-value) and the
run's main parameters; then every question with the gold SQL, both models' SQL (the candidate
kept, and whether it was repaired), the verdicts and SQLite's error, and on demand the first rows
of each result, which this stage reads from the question's database (read-only, a short timeout
per query). Filters by hardness, verdict, change and kind of error, and a text search, run in the
page itself: it needs no network and opens from disk."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import replace_dir, staging_area
from sqlora.core.params import Params
from sqlora.eval.report import (
    answers_of,
    distinct_dropped,
    facts_of,
    join_questions,
    model_names,
    parameters_html,
    preview_results,
    read_gold,
    read_jsonl,
    render_page,
    title_of,
)

PAGE = "index.html"
# parameters whose `auto` the details files resolve: key in params.yaml -> key in the details
RESOLVED = {"data.schema_format": "schema_format", "quant.bnb_4bit_compute_dtype": "compute_dtype",
            "train.epochs": "epochs", "train.learning_rate": "learning_rate"}


def named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise SqloraError(f"{what} not found: {path} (run the stage that writes it)")
    return path.read_text(encoding="utf-8")


def main_parameters(params: Params, resolved: dict) -> list[tuple[str, str]]:
    """The settings a reader of the page needs, `auto` with what it resolved to."""
    keys = ["model.name_or_path", "data.schema_format", "data.value_hints", "quant.bits",
            "quant.bnb_4bit_quant_type", "quant.bnb_4bit_compute_dtype", "lora.r", "lora.alpha",
            "lora.target_modules", "train.epochs", "train.learning_rate", "train.batch_size", "train.max_length",
            "train.seed", "predict.num_candidates", "predict.repair_columns"]
    if params.data.train_limit or params.data.dev_limit:
        keys[1:1] = ["data.train_limit", "data.dev_limit"]
    if params.train.max_steps > 0:
        keys.append("train.max_steps")
    pairs = []
    for key in keys:
        section, name = key.split(".")
        value = getattr(getattr(params, section), name)
        if isinstance(value, tuple):
            value = ", ".join(value)
        if value == "auto" and resolved.get(RESOLVED.get(key)) is not None:
            value = f"auto ({resolved[RESOLVED[key]]})"
        pairs.append((key, str(value).lower() if isinstance(value, bool) else str(value)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-question", type=Path, required=True, help="per_question.jsonl written by evaluate")
    parser.add_argument("--generations", type=named_path, action="append", required=True,
                        help="NAME=generations.jsonl, the model before and then the one after (base, finetuned)")
    parser.add_argument("--gold", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True, help="databases, for the first rows of each result")
    parser.add_argument("--details", type=Path, action="append", default=[],
                        help="a JSON file of what `auto` resolved to (metrics/data.json, metrics/train_details.json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = Params.read(args.params)
    if len(args.generations) != 2:
        raise SqloraError("give --generations twice: the model before (base), then the one after (finetuned)")
    per_question = read_jsonl(read_text(args.per_question, "per-question results"))
    names = [name for name, _ in args.generations]
    judged = model_names(per_question)
    if missing := [name for name in names if name not in judged]:
        raise SqloraError(f"{args.per_question} judged {', '.join(judged)}, not {', '.join(missing)}")
    generations = {name: read_jsonl(read_text(path, f"generations of {name}")) for name, path in args.generations}
    gold = read_gold(read_text(args.gold, "gold file"))
    resolved = {}
    for path in args.details:
        resolved.update(json.loads(read_text(path, "details")))

    before, after = names
    questions = join_questions(facts_of(per_question, gold, generations[after]),
                               answers_of(per_question, generations[before], before),
                               answers_of(per_question, generations[after], after))
    dropped = distinct_dropped(per_question, params.eval.keep_distinct)
    previews = preview_results(questions, args.db, drop_distinct=dropped)
    intro = (f'<p class="intro">{len(questions)} questions; each model\'s SQL is the candidate it kept. '
             "Compare two runs question by question with <code>sqlora compare A B</code>, which writes "
             '<a href="../compare/index.html">outputs/compare/index.html</a>.</p>'
             + parameters_html(main_parameters(params, resolved)))
    page = render_page("sqlora run report", questions, labels=(title_of(before), title_of(after)), intro=intro,
                       previews=previews, distinct_dropped=dropped)

    with staging_area(args.out) as staging:
        new = staging / args.out.name
        new.mkdir()
        (new / PAGE).write_text(page, encoding="utf-8", newline="\n")
        replace_dir(new, args.out)
    print(f"wrote {args.out / PAGE} ({len(page.encode('utf-8')) // 1024} KB, {len(questions)} questions)")


if __name__ == "__main__":
    run_stage(main)
