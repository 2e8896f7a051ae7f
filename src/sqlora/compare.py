"""sqlora compare: two runs question by question, which questions one fixed or broke.

    sqlora compare                      # HEAD's run against the workspace's
    sqlora compare HEAD~3 bushy-ram     # a git revision against an experiment (dvc exp show's names)
    sqlora compare path/to/results .    # a folder of results against the workspace
    sqlora compare A B --json           # the same as JSON

A and B are each `workspace`, a folder, or a git revision or experiment name. A run's
per-question verdicts (outputs/eval/per_question.jsonl) and SQL (outputs/predictions/<model>/
generations.jsonl) are read from the folder, or through DVC at that revision: from git where
they are tracked, else from the DVC cache (`dvc repro` and `dvc exp run` put them there; `dvc pull`
fetches a teammate's). The comparison is of one model of each run (--model, the fine-tuned one
by default), in strict mode (--mode plug for plug-value). It prints broken, fixed, both right and
both wrong by hardness, then the broken questions and the fixed ones, and writes the same as a
page (--html) that filters them like the run's report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import write_text_atomic
from sqlora.eval.accuracy import ALL_LEVELS
from sqlora.eval.report import (
    MODE_TITLES,
    MODES,
    OUTCOMES,
    Facts,
    Question,
    accuracy,
    answers_of,
    broken_first,
    distinct_dropped,
    facts_of,
    join_questions,
    model_names,
    outcome,
    outcomes,
    preview_results,
    read_gold,
    read_jsonl,
    render_page,
    title_of,
)

PER_QUESTION = "outputs/eval/per_question.jsonl"
GENERATIONS = "outputs/predictions/{model}/generations.jsonl"
GOLD = "data/prepared/dev_gold.sql"
PARAMS = "params.yaml"
DATABASES = Path("data/spider/database")
HTML = Path("outputs/compare/index.html")
REPORT = "outputs/report/index.html"
WORKSPACE = "workspace"
# where a folder of results may hold each file: a project (or the results.tgz of
# benchmarks/gpu_repro.sh), outputs/, or flat as benchmarks/gpu_sweep.sh copies them
FOLDER_LAYOUTS = {
    PER_QUESTION: ("outputs/eval/per_question.jsonl", "eval/per_question.jsonl", "per_question.jsonl"),
    GOLD: ("data/prepared/dev_gold.sql", "dev_gold.sql"),
    PARAMS: ("params.yaml",),
}


@dataclass
class Run:
    """One side of the comparison: what to call it, and how to read its files."""

    label: str
    read: Callable[[str], str | None]  # a project path -> its text, None where the run has no such file
    missing: str                        # why a file the run lacks is missing, and what to do

    def generations_path(self, model: str) -> str:
        return GENERATIONS.format(model=model)


def folder_run(spec: str, folder: Path) -> Run:
    def read(path: str) -> str | None:
        candidates = FOLDER_LAYOUTS.get(path, (path,))
        if path.startswith("outputs/predictions/"):
            model = path.split("/")[2]
            candidates = (path, path.removeprefix("outputs/"), f"{model}/generations.jsonl",
                          *(("generations.jsonl",) if model == "finetuned" else ()))
        for candidate in candidates:
            if (folder / candidate).is_file():
                return (folder / candidate).read_text(encoding="utf-8")
        return None

    return Run(spec, read, f"it is not in {folder}")


def revision_run(spec: str, root: Path) -> Run:
    """A git revision or an experiment's name, read through DVC (git, then the DVC cache)."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.scm import SCMError, resolve_rev

    try:
        with Repo(str(root)) as repo:
            sha = resolve_rev(repo.scm, spec)
    except (DvcException, SCMError) as error:
        raise SqloraError(f"{spec} is no folder, and no git revision or experiment of {root}: "
                          f"{str(error).splitlines()[0]}") from None
    filesystem = DVCFileSystem(str(root), rev=sha)

    def read(path: str) -> str | None:
        try:
            return filesystem.read_text(path, encoding="utf-8")
        except (DvcException, OSError, ValueError):
            return None

    if read("dvc.lock") is None:
        missing = "that commit holds no dvc.lock, no run was committed there"
    else:
        missing = "it is not in git or the DVC cache: run `dvc pull`, or that run's outputs were never cached"
    return Run(f"{spec} ({sha[:7]})" if not sha.startswith(spec) else sha[:7], read, missing)


def open_run(spec: str, root: Path) -> Run:
    if spec == WORKSPACE:
        return folder_run(WORKSPACE, root)
    if Path(spec).is_dir():
        return folder_run(spec, Path(spec))
    return revision_run(spec, root)


def project_root() -> Path:
    """The DVC project around the current folder (the current folder where there is none)."""
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root())
    except Exception:  # NotDvcRepoError, and whatever a broken .dvc folder raises
        return Path.cwd()


def run_questions(run: Run, model: str) -> tuple[dict, dict, bool]:
    """A run's verdicts and SQL for `model`: (facts by index, answers by index, whether its
    evaluation compared results without DISTINCT)."""
    text = run.read(PER_QUESTION)
    if text is None:
        raise SqloraError(f"{run.label}: no per-question results ({PER_QUESTION}: {run.missing})")
    per_question = read_jsonl(text)
    if model not in model_names(per_question):
        raise SqloraError(f"{run.label}: no model {model!r} in its per-question results "
                          f"(it has {', '.join(model_names(per_question))})")
    generations_text = run.read(run.generations_path(model))
    generations = read_jsonl(generations_text) if generations_text is not None else None
    gold = read_gold(run.read(GOLD) or "")
    keep_distinct = flat_params(run.read(PARAMS)).get("eval.keep_distinct") is True
    return (facts_of(per_question, gold, generations), answers_of(per_question, generations, model),
            distinct_dropped(per_question, keep_distinct))


def flat_params(text: str | None) -> dict[str, object]:
    def walk(value, prefix=""):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from walk(inner, f"{prefix}{key}.")
        else:
            yield prefix[:-1], value

    try:
        return dict(walk(yaml.safe_load(text or "") or {}))
    except yaml.YAMLError:
        return {}


def changed_params(a: Run, b: Run) -> list[tuple[str, object, object]]:
    """(key, A's value, B's value) for every parameter that differs; none where either has no params.yaml."""
    first, second = flat_params(a.read(PARAMS)), flat_params(b.read(PARAMS))
    if not first or not second:
        return []
    return [(key, first.get(key), second.get(key)) for key in dict.fromkeys([*first, *second])
            if first.get(key) != second.get(key)]


def compare(a: Run, b: Run, model: str) -> tuple[list[Question], int, bool]:
    """Questions both runs answered (same index, same database), A before and B after; how many
    the two runs do not share; and whether B's evaluation compared results without DISTINCT."""
    facts_a, answers_a, _ = run_questions(a, model)
    facts_b, answers_b, dropped = run_questions(b, model)
    shared = {index: fact for index, fact in facts_b.items()
              if index in facts_a and facts_a[index].db_id == fact.db_id}
    for index, fact in shared.items():  # what B lacks (its gold file, say), A may have
        if not fact.gold or not fact.text:
            other = facts_a[index]
            shared[index] = Facts(fact.db_id, fact.hardness, fact.text or other.text, fact.gold or other.gold)
    unshared = len(set(facts_a) | set(facts_b)) - len(shared)
    return join_questions(shared, answers_a, answers_b), unshared, dropped


def summary(questions: list[Question], a: Run, b: Run, model: str, mode: str, unshared: int,
            params: list[tuple[str, object, object]]) -> dict:
    table = outcomes(questions, mode)
    ordered = broken_first(questions, mode)

    def listing(kind: str) -> list[dict]:
        return [{"index": q.index, "db_id": q.db_id, "hardness": q.hardness, "question": q.text, "gold": q.gold,
                 "a_sql": q.before.sql, "a_error": q.before.errors[MODES.index(mode)], "b_sql": q.after.sql,
                 "b_error": q.after.errors[MODES.index(mode)]}
                for q in ordered if outcome(q.before.right(mode), q.after.right(mode)) == kind]

    def scores(side: str) -> dict:
        return {level: {"right": right, "questions": total} for level, (right, total) in
                accuracy(questions, side, mode).items()}

    return {"model": model, "mode": MODE_TITLES[mode],
            "a": {"run": a.label, "accuracy": scores("before")},
            "b": {"run": b.label, "accuracy": scores("after")},
            "params": [{"key": key, "a": first, "b": second} for key, first, second in params],
            "questions": len(questions), "not_shared": unshared,
            "by_hardness": {level: {kind.replace("-", "_"): table[level][kind] for kind in OUTCOMES}
                            for level in ALL_LEVELS},
            "broken": listing("broken"), "fixed": listing("fixed")}



def text_report(result: dict) -> str:
    model = title_of(result["model"])
    lines = []
    for side in ("a", "b"):
        right, total = (result[side]["accuracy"]["all"][key] for key in ("right", "questions"))
        score = f"{right / total:.3f}" if total else "-"
        lines.append(f"{side.upper()}: {result[side]['run']:30} {model}, {result['mode']}: {score} ({right} of {total})")
    for item in result["params"]:
        lines.append(f"   {item['key']}: {item['a']} -> {item['b']}")
    if result["not_shared"]:
        lines.append(f"({result['not_shared']} questions are not in both runs and are left out)")
    header = f"{'A -> B, ' + model + ', ' + result['mode']:32}" + "".join(f"{level:>8}" for level in ALL_LEVELS)
    lines += ["", header]
    titles = {"broken": "broken (A right, B wrong)", "fixed": "fixed (A wrong, B right)",
              "both_right": "both right", "both_wrong": "both wrong"}
    for kind, title in titles.items():
        lines.append(f"{title:32}" + "".join(f"{result['by_hardness'][level][kind]:>8}" for level in ALL_LEVELS))
    for kind in ("broken", "fixed"):
        lines += ["", f"{kind} ({len(result[kind])}):"]
        for q in result[kind]:
            lines.append(f"  #{q['index']:<5} {q['hardness']:7} {q['db_id']}: {q['question']}")
            lines.append(f"         A: {q['a_sql'] or '(no SQL)'}" + (f"   [{q['a_error']}]" if q["a_error"] else ""))
            lines.append(f"         B: {q['b_sql'] or '(no SQL)'}" + (f"   [{q['b_error']}]" if q["b_error"] else ""))
    return "\n".join(lines)


def page(questions: list[Question], result: dict, previews: dict, report: str | None, dropped: bool) -> str:
    """The comparison as a page; report: a link to the workspace's report page, where there is one;
    dropped: the previews ran without DISTINCT, as the evaluation compared the results."""
    from html import escape

    changes = "".join(f"<li><code>{escape(item['key'])}</code>: {escape(str(item['a']))} → "
                      f"{escape(str(item['b']))}</li>" for item in result["params"])
    intro = (f'<p class="intro">A: <b>{escape(result["a"]["run"])}</b>, B: <b>{escape(result["b"]["run"])}</b>; '
             f"the {escape(title_of(result['model']))} model of each, {len(questions)} questions, the broken ones "
             "first."
             + (f' The workspace\'s report: <a href="{escape(report)}">{REPORT}</a>.' if report else "") + "</p>"
             + (f'<ul class="intro">{changes}</ul>' if changes else ""))
    ordered = broken_first(questions)
    return render_page("sqlora compare", ordered, labels=("A", "B"), intro=intro, previews=previews,
                       distinct_dropped=dropped)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sqlora compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", nargs="?", default="HEAD", help="the run before (default: HEAD)")
    parser.add_argument("b", nargs="?", default=WORKSPACE, help="the run after (default: workspace)")
    parser.add_argument("--model", default="finetuned", help="which model of each run (default: finetuned)")
    parser.add_argument("--mode", choices=("exec", "plug"), default="exec",
                        help="exec: strict (default); plug: plug-value")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--html", type=Path, default=HTML, help=f"the page to write (default: {HTML})")
    parser.add_argument("--db", type=Path, default=DATABASES,
                        help="databases, for the first rows of the changed questions' results (where present)")
    return parser.parse_args(argv)


def run_compare(args: argparse.Namespace) -> None:
    root = project_root()
    a, b = open_run(args.a, root), open_run(args.b, root)
    questions, unshared, dropped = compare(a, b, args.model)
    if not questions:
        raise SqloraError(f"{a.label} and {b.label} share no question (were they run on the same data?)")
    result = summary(questions, a, b, args.model, args.mode, unshared, changed_params(a, b))
    changed = [q for q in questions if q.before.right(args.mode) != q.after.right(args.mode)]
    previews = preview_results(changed, args.db, drop_distinct=dropped) if args.db.is_dir() else {}
    report = root / REPORT
    link = Path(os.path.relpath(report, args.html.resolve().parent)).as_posix() if report.is_file() else None
    write_text_atomic(args.html, page(questions, result, previews, link, dropped))
    result["html"] = str(args.html)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(text_report(result))
        print(f"\nwrote {args.html}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_stage(lambda: run_compare(args))


if __name__ == "__main__":
    main()
