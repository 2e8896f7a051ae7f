"""Where the load seconds of `predict` go: each way of loading the model for inference, timed
phase by phase in a fresh Python process (imports included), as the predict stage pays them.

Run after `dvc repro` (or after the stages up to training; without an adapter, after
prepare-model, only the base model is timed):
    python benchmarks/bench_load.py
Ways: the base model and base + adapter as the predict stage loads them (quantized, dequantized,
adapter merged), the adapter merged by PEFT instead, and a plain 16-bit folder holding that merged
model (written once, first).
The sqlora imported is the one on PYTHONPATH, so two versions of the code can be compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(how: str, model: Path, base: Path) -> None:
    """One load in this process; prints {phase: seconds} as JSON on its last line."""
    phases, last = {}, time.perf_counter()

    def mark(phase):
        nonlocal last
        now = time.perf_counter()
        phases[phase] = round(now - last, 2)
        last = now

    import torch
    mark("import torch")
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    torch.zeros(1, device=device)
    mark("start CUDA")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    mark("import transformers")
    if how == "plain":
        AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.bfloat16 if device != "cpu" else torch.float32,
                                                      device_map={"": device})
        mark("load weights")
        AutoTokenizer.from_pretrained(str(model))
        mark("load tokenizer")
    else:  # the steps of sqlora.modeling.load_for_inference(dequantize=True), one by one
        from sqlora import modeling
        from sqlora.params import Params
        quant = Params.read().quant
        modeling.import_bitsandbytes()
        mark("import bitsandbytes")
        quantized = modeling.load_quantized_model(base, quant, device=device)
        mark("load and quantize weights")
        plain = modeling.dequantize_layers(quantized, modeling.compute_dtype(quant.bnb_4bit_compute_dtype))
        mark("dequantize")
        if how == "peft":  # as the predict stage merged adapters before commit 9dd4f70
            from peft import PeftModel
            mark("import peft")
            PeftModel.from_pretrained(plain, str(model)).merge_and_unload()
            mark("merge adapter")
        elif modeling.is_adapter(model):
            modeling.merge_lora_weights(plain, model)
            mark("merge adapter")
        modeling.load_tokenizer(modeling.tokenizer_dir(model, base))
        mark("load tokenizer")
    if device != "cpu":
        torch.cuda.synchronize()
    print(json.dumps({**phases, "total": round(sum(phases.values()), 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--adapter", type=Path, default=Path("outputs/adapter"))
    parser.add_argument("--no-bytecode", action="store_true",
                        help="children find no bytecode and compile every module they import, as the first run "
                             "after an install that wrote none (uv without compile-bytecode)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model, args.base)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ways = [("base, as predict loads it", "predict", args.base)]
        if args.adapter.is_dir():
            merged = Path(tmp) / "merged"
            subprocess.run([sys.executable, str(ROOT / "stages" / "export.py"), "--adapter", str(args.adapter),
                            "--base", str(args.base), "--out", str(merged)], check=True, capture_output=True)
            ways += [("base + adapter, as predict loads it", "predict", args.adapter),
                     ("base + adapter, merged by PEFT", "peft", args.adapter),
                     ("merged, plain 16-bit folder", "plain", merged)]
        python = [sys.executable]
        if args.no_bytecode:  # an empty bytecode folder per child, and none written back
            python = [sys.executable, "-B", "-X", f"pycache_prefix={tmp}/nothing"]
        for way, how, model in ways * 2:  # the second round runs with the file cache warm
            started = time.perf_counter()
            done = subprocess.run([*python, __file__, "--child", how, "--model", str(model),
                                   "--base", str(args.base)], check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({**row, "way": way, "process": round(time.perf_counter() - started, 2)})
            print(rows[-1], flush=True)
    phases = list(dict.fromkeys(k for row in rows for k in row if k not in ("way", "total", "process")))
    print("| way | " + " | ".join(phases) + " | total | whole process |")
    print("|---|" + "---|" * (len(phases) + 2))
    for row in rows:
        print(f"| {row['way']} | " + " | ".join(str(row.get(p, "")) for p in phases)
              + f" | {row['total']} | {row['process']} |")


if __name__ == "__main__":
    main()
