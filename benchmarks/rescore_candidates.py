"""Score a prediction run's beam candidates several ways: the beam's best alone, the candidate the
run kept, the candidate the predict stage would keep now (execution-guided choice with names
repaired, `predict.choose.choose_sql`), the same without repairing, the same choice among only the
first k candidates (what fewer candidates might give), a vote over the candidates' results, and
the ceiling (a question counts when any candidate is right).
It reads a predict stage's generations.jsonl (greedy runs too, as one candidate each); no model, no GPU.

    python benchmarks/rescore_candidates.py outputs/predictions/finetuned/generations.jsonl
    python benchmarks/rescore_candidates.py outputs/predictions/finetuned/generations.jsonl --min-name-ratio 0.75
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from sqlora.data.prompts import extract_sql
from sqlora.eval.accuracy import ALL_LEVELS as HARDNESS
from sqlora.eval.accuracy import ORDER_BY, evaluate, score
from sqlora.predict import choose as choosing
from sqlora.predict.choose import choose_candidates, choose_sql


def choose(records: list[dict], candidates: list[list[str]], db_dir: Path, rule=None) -> list[int]:
    """The predict stage's choice (or rule's) among raw generations."""
    options = {"rule": rule} if rule is not None else {}
    return choose_candidates(records, candidates, db_dir, extract=extract_sql, **options)


def vote(sqls: list[str], database) -> int:
    """Self-consistency: group the candidates that run by their result (row order counts only
    under ORDER BY), prefer groups with rows, then the largest, then the best-ranked."""
    groups = defaultdict(list)
    for i, sql in enumerate(sqls):
        outcome = database.run(sql, timeout=2.0)
        if outcome.ok:
            rows = tuple(outcome.rows) if ORDER_BY.search(sql) else tuple(sorted(Counter(outcome.rows).items(), key=repr))
            groups[(len(outcome.rows) > 0, outcome.columns, rows)].append(i)
    if not groups:
        return 0
    return min(groups.items(), key=lambda item: (not item[0][0], -len(item[1]), item[1][0]))[1][0]


def first_k(records: list[dict], candidates: list[list[str]], k: int, db_dir: Path) -> list[str]:
    """The SQL the current rule keeps when it sees only each question's first k candidates."""
    return [choice.sql for choice in choose_sql(records, [c[:k] for c in candidates], db_dir, extract=extract_sql)]


def ceiling(gold: Path, candidates: list[list[str]], db_dir: Path) -> dict:
    """Scores when a question counts as right if any of its candidates is."""
    gold_lines = [line for line in gold.read_text(encoding="utf-8").splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        every_gold, every_pred = Path(tmp) / "gold.sql", Path(tmp) / "pred.sql"
        every_gold.write_text("".join(g + "\n" for g, c in zip(gold_lines, candidates) for _ in c), encoding="utf-8")
        every_pred.write_text("".join(extract_sql(t) + "\n" for c in candidates for t in c), encoding="utf-8")
        verdicts = iter(evaluate(every_gold, every_pred, db_dir).per_question)
    return score([max((next(verdicts) for _ in c), key=lambda v: v["exec"]) for c in candidates])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generations", type=Path)
    parser.add_argument("--gold", type=Path, default=Path("data/prepared/dev_gold.sql"))
    parser.add_argument("--db", type=Path, default=Path("data/spider/database"))
    parser.add_argument("--min-name-ratio", type=float,
                        help="the least resemblance a misspelt name needs to be repaired (choosing.similar_name's "
                             "min_ratio; default: the predict stage's)")
    args = parser.parse_args()
    if args.min_name_ratio is not None:
        choosing.similar_name = functools.partial(choosing.similar_name, min_ratio=args.min_name_ratio)

    records = [json.loads(line) for line in args.generations.open(encoding="utf-8") if line.strip()]
    candidates = [r.get("candidates", [r["generation"]]) for r in records]  # one candidate: greedy
    chosen = choose(records, candidates, args.db)
    rules = {
        "beam's best": [extract_sql(c[0]) for c in candidates],
        "kept by the run": [r["sql"] for r in records],
        "kept by the current code": [choice.sql for choice in choose_sql(records, candidates, args.db,
                                                                          extract=extract_sql)],
        "kept by the current code, no name repair": [extract_sql(c[i]) for c, i in zip(candidates, chosen)],
        **{f"kept by the current code, first {k} only": first_k(records, candidates, k, args.db)
           for k in range(2, max(map(len, candidates)))},
        "vote over results": [extract_sql(c[i]) for c, i in zip(candidates, choose(records, candidates, args.db, rule=vote))],
    }
    print("| candidate | " + " | ".join(HARDNESS) + " |")
    print("|---|" + "---|" * len(HARDNESS))
    with tempfile.TemporaryDirectory() as tmp:
        for name, sqls in rules.items():
            pred = Path(tmp) / "pred.sql"
            pred.write_text("".join(sql + "\n" for sql in sqls), encoding="utf-8")
            scores = evaluate(args.gold, pred, args.db).scores
            print(f"| {name} | " + " | ".join(f"{scores[h]['exec']:.4f}" for h in HARDNESS) + " |", flush=True)
    scores = ceiling(args.gold, candidates, args.db)
    print("| any candidate right (ceiling) | " + " | ".join(f"{scores[h]['exec']:.4f}" for h in HARDNESS) + " |")


if __name__ == "__main__":
    main()
