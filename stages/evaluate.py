"""evaluate: execution accuracy by Spider hardness, strict and with plug-value, for the base
model, the fine-tuned one and their difference.

eval.metric chooses the rules: spider (test-suite-sql-eval's) or bird (the sets of result rows
equal; strict only); auto goes by the data's layout (--layout; accuracy.resolve_metric), and
--details says what it chose. Gold queries Spider's rules cannot read form an `n/a` hardness
group. All prediction files are judged in one pass (each gold query runs once per database); the
outputs are written only once everything is judged, each one whole or not at all."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import replace_dir, staging_area, write_json_atomic, write_text_atomic
from sqlora.core.params import Params
from sqlora.data.layouts import SPIDER, read_layout
from sqlora.eval.accuracy import BIRD_METRIC, EvalResult, evaluate_files, format_table, resolve_metric
from sqlora.eval.hardness import NOT_RATED

MODES = {"exec": False, "plug": True}  # metric name -> plug_value
MODE_TITLES = {"exec": "strict", "plug": "plug-value"}
PER_QUESTION = "per_question.jsonl"


def named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def metric_name(name: str, mode: str, level: str) -> str:
    return f"{name}_{mode}_{level.replace('/', '')}"  # n/a: na


def build_scores(results: dict[str, dict[str, EvalResult]]) -> dict[str, float | int]:
    """Every score: {name}_{mode}_{level} for each model, delta_{mode}_{level} (the second model
    minus the first) when there are two, then count_{level}."""
    scores: dict[str, float | int] = {}
    counts: dict[str, int] = {}
    for name, by_mode in results.items():
        for mode, result in by_mode.items():
            for level in result.scores:
                scores[metric_name(name, mode, level)] = round(result.scores[level]["exec"], 4)
                counts[f"count_{level.replace('/', '')}"] = int(result.scores[level]["count"])
    names = list(results)
    if len(names) == 2:  # e.g. finetuned minus base
        first, second = names
        for mode, result in results[first].items():
            for level in result.scores:
                scores[metric_name("delta", mode, level)] = round(
                    scores[metric_name(second, mode, level)] - scores[metric_name(first, mode, level)], 4)
    return {**scores, **counts}


def split_scores(scores: dict[str, float | int], results: dict[str, dict[str, EvalResult]]) -> tuple[dict, dict]:
    """metrics/eval.json, what experiments are compared by (each model's accuracy over all
    questions, in each mode), and the rest for the details: by hardness, deltas, counts."""
    metric_keys = [metric_name(name, mode, "all") for name, by_mode in results.items() for mode in by_mode]
    return ({key: scores[key] for key in metric_keys},
            {key: value for key, value in scores.items() if key not in metric_keys})


def plot_text(scores: dict, results: dict[str, dict[str, EvalResult]]) -> str:
    """metrics/accuracy_by_hardness.csv: strict accuracy per model and level (csv's \\r\\n lines)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["bar", "model", "hardness", "exec"])
    for name, by_mode in results.items():
        for level in by_mode["exec"].scores:
            writer.writerow([f"{name} {level}", name, level, scores[metric_name(name, "exec", level)]])
    return buffer.getvalue()


def per_question_text(results: dict[str, dict[str, EvalResult]]) -> str:
    """One JSON line per question: index, db_id, hardness, then {name}_{mode} (0/1) and
    {name}_{mode}_error for each model and mode."""
    rows: dict[int, dict] = {}
    for name, by_mode in results.items():
        for mode, result in by_mode.items():
            for record in result.per_question:
                row = rows.setdefault(record["index"], {
                    "index": record["index"], "db_id": record["db_id"], "hardness": record["hardness"]})
                row[f"{name}_{mode}"] = record["exec"]
                row[f"{name}_{mode}_error"] = record["error"]
    return "".join(json.dumps(rows[index]) + "\n" for index in sorted(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gold", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--pred", type=named_path, action="append", required=True,
                        help="NAME=pred.sql, once per model (e.g. base=..., finetuned=...)")
    parser.add_argument("--metrics", type=Path, required=True, help="accuracy over all questions, by model and mode")
    parser.add_argument("--plot", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layout", type=Path, help="layout.json of the fetched data (eval.metric auto goes by it)")
    parser.add_argument("--details", type=Path, required=True,
                        help="the metric chosen and why, accuracy by hardness, deltas and counts")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = Params.read(args.params).eval
    for name, path in args.pred:
        if not path.is_file():
            raise SqloraError(f"predictions for {name} not found: {path}")
    layout = read_layout(args.layout.parent)["layout"] if args.layout else SPIDER
    metric, chosen_by = resolve_metric(params.metric, layout)
    modes = {"exec": False} if metric == BIRD_METRIC else MODES
    print(f"metric: {metric} ({chosen_by})")

    judged = evaluate_files(args.gold, [path for _, path in args.pred], args.db,
                            plug_values=tuple(modes.values()), keep_distinct=params.keep_distinct,
                            timeout=params.timeout, workers=params.workers or None, metric=metric)
    results: dict[str, dict[str, EvalResult]] = {}
    for (name, _), by_plug_value in zip(args.pred, judged):
        results[name] = {mode: by_plug_value[plug_value] for mode, plug_value in modes.items()}
        for mode, result in results[name].items():
            print(f"\n{name} ({MODE_TITLES[mode]} execution accuracy, {metric} rules)")
            print(format_table(result))
    first = next(iter(results.values()))["exec"]
    not_rated = int(first.scores.get(NOT_RATED, {"count": 0})["count"])
    if not_rated:
        print(f"\nhardness {NOT_RATED}: {not_rated} gold queries that Spider's rules cannot read "
              "(scored in all and in their own group)")

    scores = build_scores(results)
    metrics, by_hardness = split_scores(scores, results)
    plot = plot_text(scores, results)
    per_question = per_question_text(results)
    details = {"metric": metric, "metric_chosen_by": chosen_by, "modes": list(modes),
               "questions": len(first.per_question), "hardness_not_rated": not_rated,
               "skipped_missing_db": sum(1 for record in first.per_question if record.get("skipped")),
               **by_hardness}

    # everything is judged: publish, each output whole or not at all
    with staging_area(args.out) as staging:
        (staging / PER_QUESTION).write_text(per_question, encoding="utf-8", newline="\n")
        replace_dir(staging, args.out)
    write_text_atomic(args.plot, plot)
    write_json_atomic(args.details, details)
    write_json_atomic(args.metrics, metrics)
    print(f"\nwrote {args.metrics}, {args.details}, {args.plot}, {args.out / PER_QUESTION}")


if __name__ == "__main__":
    run_stage(main)
