"""One table row per experiment folder left by benchmarks/gpu_sweep.sh (or any folder holding a
`metrics/` directory of a finished run): the overrides, training speed and memory, prediction
time and execution accuracy.      python benchmarks/summarize_runs.py path/to/results/*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ["run", "overrides", "status", "dtype", "weights_mb", "examples", "steps", "train_s", "tok_per_s", "peak_mb",
           "final_loss", "predict_ft_s", "ft_ready_s", "ft_repaired", "predict_base_s", "base_all", "ft_easy",
           "ft_medium", "ft_hard", "ft_extra", "ft_all", "ft_plug_all"]


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def row(folder: Path) -> dict:
    metrics = folder / "metrics"
    train = {**read(metrics / "train.json"), **read(metrics / "train_details.json")}
    evaluation = {**read(metrics / "eval.json"), **read(metrics / "eval_details.json")}
    finetuned = {**read(metrics / "predict_finetuned.json"), **read(metrics / "predict_finetuned_details.json")}
    base = {**read(metrics / "predict_base.json"), **read(metrics / "predict_base_details.json")}
    status = (folder / "status.txt").read_text().split() if (folder / "status.txt").is_file() else ["?"]
    overrides = (folder / "overrides.txt").read_text().strip() if (folder / "overrides.txt").is_file() else ""

    def stage_s(stats: dict, name: str):
        if f"{name}_predict_s" in stats:
            return stats[f"{name}_predict_s"]
        return stats.get("stage_s", round(stats.get("load_s", 0) + stats.get("generate_s", 0), 1) or "")

    return {
        "run": folder.name, "overrides": overrides or "(defaults)", "status": " ".join(status[:1]),
        "dtype": train.get("compute_dtype", ""), "weights_mb": train.get("base_weights_mb", ""),
        "examples": train.get("examples", ""), "steps": train.get("steps", ""),
        "train_s": train.get("runtime_s", ""), "tok_per_s": train.get("tokens_per_s", ""),
        "peak_mb": train.get("peak_memory_mb", ""), "final_loss": train.get("final_loss", ""),
        "predict_ft_s": stage_s(finetuned, "finetuned"), "ft_ready_s": finetuned.get("ready_s", ""),
        "ft_repaired": finetuned.get("repaired", ""), "predict_base_s": stage_s(base, "base"),
        "base_all": evaluation.get("base_exec_all", ""),
        **{f"ft_{h}": evaluation.get(f"finetuned_exec_{h}", "") for h in ("easy", "medium", "hard", "extra", "all")},
        "ft_plug_all": evaluation.get("finetuned_plug_all", ""),
    }


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:] if (Path(a) / "metrics").is_dir()]
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for folder in folders:
        values = row(folder)
        print("| " + " | ".join(str(values[c]) for c in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
    main()
