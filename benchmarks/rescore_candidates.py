"""Score a prediction run's beam candidates three ways: the beam's best alone, the candidate the
run kept, and the candidate the current `stages/predict.py` would keep (execution-guided choice).
It reads generations.jsonl from a run with predict.num_candidates > 1; no model, no GPU.

    python benchmarks/rescore_candidates.py outputs/predictions/finetuned/generations.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sqlora.evaluate import evaluate  # noqa: E402
from sqlora.prompts import extract_sql  # noqa: E402

HARDNESS = ("easy", "medium", "hard", "extra", "all")


def predict_stage():
    spec = importlib.util.spec_from_file_location("predict_stage", ROOT / "stages" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generations", type=Path)
    parser.add_argument("--gold", type=Path, default=Path("data/prepared/dev_gold.sql"))
    parser.add_argument("--db", type=Path, default=Path("data/spider/database"))
    args = parser.parse_args()

    records = [json.loads(line) for line in args.generations.open(encoding="utf-8") if line.strip()]
    if not all("candidates" in r for r in records):
        sys.exit(f"{args.generations}: no candidates (a run with predict.num_candidates > 1 writes them)")
    candidates = [r["candidates"] for r in records]
    chosen = predict_stage().choose(records, candidates, args.db)
    rules = {
        "beam's best": [extract_sql(c[0]) for c in candidates],
        "kept by the run": [r["sql"] for r in records],
        "kept by the current code": [extract_sql(c[i]) for c, i in zip(candidates, chosen)],
    }
    print("| candidate | " + " | ".join(HARDNESS) + " |")
    print("|---|" + "---|" * len(HARDNESS))
    with tempfile.TemporaryDirectory() as tmp:
        for name, sqls in rules.items():
            pred = Path(tmp) / "pred.sql"
            pred.write_text("".join(sql + "\n" for sql in sqls), encoding="utf-8")
            scores = evaluate(args.gold, pred, args.db).scores
            print(f"| {name} | " + " | ".join(f"{scores[h]['exec']:.4f}" for h in HARDNESS) + " |", flush=True)


if __name__ == "__main__":
    main()
