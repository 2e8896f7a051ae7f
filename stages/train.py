"""quantize-and-train: load the base model quantized per quant.*, attach LoRA per lora.*,
train it with TRL SFT on the SQL completions, and save the adapter with its tokenizer.

Nothing is replaced until the new adapter is complete: a failed or stopped run leaves the last
good adapter and metrics as they were, and its checkpoints let the next run resume.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sqlora import training
from sqlora.devices import cap_gpu_memory, describe_device
from sqlora.errors import SqloraError, run_stage
from sqlora.files import replace_dir, staging_area, write_text_atomic
from sqlora.generation import degenerate_reason, generate
from sqlora.modeling import compute_dtype, load_quantized_model, load_tokenizer, lora_config
from sqlora.params import Params, as_dict
from sqlora.training import files_digest, fingerprint, train_lora


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--train", type=Path, default=Path("data/prepared/train.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("outputs/adapter"))
    parser.add_argument("--checkpoints", type=Path, default=Path("outputs/checkpoints"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--loss-curve", type=Path, default=Path("metrics/train_loss.csv"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = Params.read(args.params)
    quant, lora, train = params.quant, params.lora, params.train
    trust_remote_code = params.model.trust_remote_code
    rows = read_jsonl(args.train)
    if not rows:
        raise SqloraError(f"{args.train} has no training examples")
    cap_gpu_memory()
    print(describe_device(), flush=True)

    print(f"loading {args.base} ({quant.bits}-bit)", flush=True)
    model = load_quantized_model(args.base, quant, trust_remote_code=trust_remote_code, for_training=True)
    tokenizer = load_tokenizer(args.base, trust_remote_code)
    package = Path(training.__file__).parent  # by path: importing callbacks here would load transformers early
    code = [package / f"{name}.py" for name in ("training", "callbacks", "modeling", "prompts")] + [Path(__file__)]
    run_id = fingerprint(quant, lora, train, files_digest([args.train, args.base, *code]))
    live_curve = args.checkpoints / "train_loss.csv"  # grows as training goes; published when it ends well
    result = train_lora(model, tokenizer, rows, train, lora_config(lora), args.checkpoints,
                        live_curve, run_id, compute_dtype(quant.bnb_4bit_compute_dtype))
    trainer, stats = result["trainer"], result["stats"]
    if not trainer.is_world_process_zero():
        return  # under `accelerate launch`, the first process checks and saves for all

    # A diverged model writes nothing or one token over and over: refuse to hand it over.
    peft_model = trainer.model
    peft_model.eval()
    peft_model.config.use_cache = True
    if train.check_generations:
        print("checking the trained model's first generations", flush=True)
        samples = generate(peft_model, tokenizer, [r["prompt"] for r in rows[:4]], batch_size=4,
                           max_new_tokens=48, desc="checking generations")
        problem = degenerate_reason(samples)
        if problem:
            raise SqloraError(f"the trained model is broken ({problem}); adapter not written, "
                              f"checkpoints kept in {args.checkpoints} (train.check_generations: false "
                              "skips this check)")

    print(f"saving the adapter to {args.out}", flush=True)
    with staging_area(args.out) as staging:
        adapter = staging / args.out.name
        peft_model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        (adapter / "training_events.json").write_text(json.dumps(result["events"], indent=2) + "\n", encoding="utf-8")
        (adapter / "sqlora_base.json").write_text(
            json.dumps({"base": args.base.as_posix(), "quant": as_dict(quant)}, indent=2) + "\n", encoding="utf-8")
        replace_dir(adapter, args.out)
    write_text_atomic(args.loss_curve, live_curve.read_text(encoding="utf-8"))
    write_text_atomic(args.metrics, json.dumps(stats, indent=2, allow_nan=False) + "\n")
    print(f"adapter: {args.out}  " + "  ".join(f"{k}={v}" for k, v in stats.items()))


if __name__ == "__main__":
    run_stage(main)
