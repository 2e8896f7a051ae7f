"""predict: one SQL per dev question, in gold order, from the base model or base + adapter."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sqlora.errors import SqloraError, run_stage  # noqa: E402
from sqlora.generation import check_predict_params, predict_on_devices, prediction_devices  # noqa: E402
from sqlora.modeling import check_quant_params, trust_remote_code_param  # noqa: E402
from sqlora.params import load_section  # noqa: E402
from sqlora.prompts import extract_sql  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="base model folder or adapter folder")
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--dev", type=Path, default=Path("data/prepared/dev.jsonl"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    quant = check_quant_params(load_section("quant", args.params))
    predict = check_predict_params(load_section("predict", args.params))
    trust_remote_code = trust_remote_code_param(args.params)
    if not args.model.is_dir():
        raise SqloraError(f"model folder {args.model} does not exist (run the stage that makes it)")
    with args.dev.open(encoding="utf-8") as f:
        questions = [json.loads(line) for line in f if line.strip()]

    devices = prediction_devices(predict["num_gpus"])
    raw, load_s, generate_s = predict_on_devices(
        args.model, args.base, quant, [q["prompt"] for q in questions], devices,
        merge_adapter=predict["merge_adapter"], trust_remote_code=trust_remote_code,
        batch_size=predict["batch_size"], max_new_tokens=predict["max_new_tokens"],
        answer_prefix=predict["answer_prefix"], desc=f"predict {args.out.name}")

    args.out.mkdir(parents=True, exist_ok=True)
    sqls = [extract_sql(text) for text in raw]
    (args.out / "pred.sql").write_text("".join(sql + "\n" for sql in sqls), encoding="utf-8")
    with (args.out / "generations.jsonl").open("w", encoding="utf-8") as f:
        for q, text, sql in zip(questions, raw, sqls):
            f.write(json.dumps({"index": q["index"], "db_id": q["db_id"], "question": q["question"],
                                "generation": text, "sql": sql}, ensure_ascii=False) + "\n")
    stats = {"questions": len(questions), "devices": len(devices), "load_s": round(load_s, 2),
             "generate_s": round(generate_s, 2),
             "questions_per_s": round(len(questions) / max(generate_s, 1e-9), 2),
             "empty_predictions": sum(1 for s in sqls if not s)}
    if args.metrics:
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    print(f"{args.out}: " + "  ".join(f"{k}={v}" for k, v in stats.items()))


if __name__ == "__main__":
    run_stage(main)
