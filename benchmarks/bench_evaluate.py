"""Time sqlora.eval on the real Spider dev set with generated predictions.

    python benchmarks/bench_evaluate.py [--zip spider_data.zip] [--workers N] [--measure-cap]

--zip defaults to $SQLORA_SPIDER_ZIP.  The Spider zip is extracted to a temporary folder (nothing
is written to the repository).
Prediction sets, all over the 972 dev questions whose database is present:

- gold:       the gold query itself (everything right);
- perturbed:  every literal value changed (strings get a suffix, numbers +1): wrong without
              --plug-value, mostly right with it; structural slips on some of them
              (ASC/DESC swapped, a comparison flipped) make plug-value search to its bound;
- stress:     400 questions with a structural slip, changed values and six extra literal slots
              (true conditions like 1 = 1) in WHERE: plug-value never finds a match and every
              search runs to its bound, the worst case for time;
- finetuned:  400 questions with a mix like a small fine-tuned model's output: right, columns
              reordered, values off, wrong names, missing clauses, syntax errors, empty lines.

--measure-cap re-judges, with a 100x larger assignment cap and a 10-minute time budget, the questions
whose plug-value search hit its bound, and reports how many verdicts the bound changed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from sqlora.eval.accuracy import Question, Settings, evaluate, judge
from sqlora.sql.sandbox import DatabaseCache
from sqlora.sql.tokens import tokenize

SPIDER_ZIP_VARIABLE = "SQLORA_SPIDER_ZIP"


def extract(zip_path: Path, target: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        names = [n for n in archive.namelist() if n.endswith(("dev_gold.sql", ".sqlite"))]
        archive.extractall(target, members=names)
    return target / "spider_data"


def perturb_values(sql: str) -> str:
    pieces = []
    for token in tokenize(sql):
        text = token.text
        if token.kind == "number":
            text = str(int(text) + 1) if text.isdigit() else str(float(text) + 1)
        elif token.kind in ("string", "quoted") and len(text) >= 2:
            text = text[:-1] + "zz" + text[-1]
        pieces.append(text)
    return "".join(pieces)


def structural_slip(sql: str, rng: random.Random) -> str:
    swaps = [(r"\bDESC\b", "ASC"), (r"\bASC\b", "DESC"), (r" > ", " < "), (r" < ", " > "), (r" = ", " != ")]
    rng.shuffle(swaps)
    for pattern, replacement in swaps:
        changed = re.sub(pattern, replacement, sql, count=1, flags=re.IGNORECASE)
        if changed != sql:
            return changed
    return sql + " LIMIT 1"


def add_literal_noise(sql: str) -> str:
    """Six extra literal slots that change nothing as written (true conditions in WHERE)."""
    noise = "1 = 1 AND 'a' = 'a' AND 2 = 2 AND "
    changed = re.sub(r"(?i)\bWHERE\s", lambda m: m.group(0) + noise, sql, count=1)
    return changed if changed != sql else sql


def reorder_select(sql: str) -> str:
    match = re.match(r"(?is)^\s*SELECT\s+(.*?)\s+FROM\s", sql)
    if not match or "(" in match.group(1):
        return sql
    columns = [c.strip() for c in match.group(1).split(",")]
    if len(columns) < 2:
        return sql
    return sql[: match.start(1)] + " , ".join(reversed(columns)) + sql[match.end(1) :]


def finetuned_like(gold: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.45:
        return gold
    if roll < 0.55:
        return reorder_select(gold)
    if roll < 0.70:
        return perturb_values(gold)
    if roll < 0.78:
        return re.sub(r"(?i)\bFROM\s+(\w+)", r"FROM \1_x", gold, count=1)  # no such table
    if roll < 0.90:
        return perturb_values(structural_slip(gold, rng))
    if roll < 0.95:
        return re.sub(r"(?i)\s+WHERE\s.*$", "", gold) or gold
    if roll < 0.98:
        return gold[: len(gold) // 2]  # cut off: syntax error
    return ""


def write_case(folder: Path, name: str, golds: list[str], preds: list[str]) -> tuple[Path, Path]:
    gold_path = folder / f"{name}_gold.sql"
    pred_path = folder / f"{name}_pred.sql"
    gold_path.write_text("".join(line + "\n" for line in golds), encoding="utf-8")
    pred_path.write_text("".join(line + "\n" for line in preds), encoding="utf-8")
    return gold_path, pred_path


def measure_cap(result, db_dir: Path, limit: int) -> tuple[int, int]:
    """(questions whose search was capped, verdicts that an unbounded-ish search turns right)."""
    capped = [r for r in result.per_question if r.get("plug_capped")]
    settings = Settings(str(db_dir), plug_value=True, timeout=5.0, plug_limit=limit, plug_seconds=600.0)
    changed = 0
    with DatabaseCache() as databases:
        for record in capped:
            question = Question(record["index"], record["db_id"], record["gold"], record["pred"])
            changed += judge(question, settings, databases)["exec"]
    return len(capped), changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=os.environ.get(SPIDER_ZIP_VARIABLE) or None,
                        help=f"Spider's spider_data.zip (default: ${SPIDER_ZIP_VARIABLE})")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--measure-cap", action="store_true")
    args = parser.parse_args()
    if args.zip is None:
        sys.exit(f"error: give --zip or set {SPIDER_ZIP_VARIABLE} to the path of spider_data.zip")
    if not args.zip.is_file():
        sys.exit(f"error: Spider zip not found: {args.zip}")

    with tempfile.TemporaryDirectory() as temp:
        root = extract(args.zip, Path(temp))
        db_dir = root / "database"
        lines = (root / "dev_gold.sql").read_text(encoding="utf-8").splitlines()
        executable = [l for l in lines if l.strip() and (db_dir / l.split("\t")[-1]).is_dir()]
        golds_sql = [l.rsplit("\t", 1)[0] for l in executable]
        rng = random.Random(0)
        sample = sorted(rng.sample(range(len(executable)), 400))
        cases = {
            "gold": (executable, golds_sql),
            "perturbed": (
                executable,
                [perturb_values(structural_slip(g, rng) if i % 5 == 0 else g) for i, g in enumerate(golds_sql)],
            ),
            "stress": (
                [executable[i] for i in sample],
                [add_literal_noise(perturb_values(structural_slip(golds_sql[i], rng))) for i in sample],
            ),
            "finetuned": ([executable[i] for i in sample], [finetuned_like(golds_sql[i], rng) for i in sample]),
        }
        print(f"{'predictions':12} {'n':>5} {'mode':12} {'seconds':>8} {'exec all':>9} {'capped':>7}")
        for name, (golds, preds) in cases.items():
            gold_path, pred_path = write_case(Path(temp), name, golds, preds)
            for plug_value in (False, True):
                start = time.perf_counter()
                result = evaluate(gold_path, pred_path, db_dir, plug_value=plug_value, workers=args.workers)
                seconds = time.perf_counter() - start
                capped = sum(bool(r.get("plug_capped")) for r in result.per_question)
                mode = "plug-value" if plug_value else "strict"
                print(
                    f"{name:12} {len(preds):>5} {mode:12} {seconds:>8.2f} "
                    f"{result.scores['all']['exec']:>9.3f} {capped:>7}",
                    flush=True,
                )
                if plug_value and args.measure_cap and capped:
                    count, changed = measure_cap(result, db_dir, limit=10_000)
                    print(f"{'':12} {'':>5} {'cap x100':12} {count} capped, {changed} turn right with 10000 tries")


if __name__ == "__main__":
    main()
