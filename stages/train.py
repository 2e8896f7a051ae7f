"""quantize-and-train: load the base model quantized per quant.*, attach LoRA per lora.*,
train it with TRL SFT on the SQL completions, and save the adapter with its tokenizer.

Nothing is replaced until the new adapter is complete: a failed or stopped run leaves the last
good adapter and metrics as they were, and its checkpoints let the next run resume.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import replace_dir, staging_area, write_json_atomic, write_text_atomic
from sqlora.core.params import Params, as_dict
from sqlora.core.progress import say
from sqlora.data.prompts import PROMPT_FORMAT_FILE, prompt_text
from sqlora.model.devices import cap_gpu_memory, describe_device
from sqlora.model.loading import ADAPTER_RECORD, load_for_training, load_tokenizer, lora_config
from sqlora.model.precision import compute_dtype, dtype_name
from sqlora.predict.generation import degenerate_reason, generate
from sqlora.train.loop import RunFiles, train_lora
from sqlora.train.resume import files_digest, fingerprint, stage_code
from sqlora.train.schedule import parameter_count, resolved_schedule


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="prepared base model folder")
    parser.add_argument("--train", type=Path, required=True, help="train.jsonl written by preprocess")
    parser.add_argument("--out", type=Path, required=True, help="adapter folder to write")
    parser.add_argument("--checkpoints", type=Path, required=True, help="checkpoints of a run, to resume it")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--details", type=Path, required=True, help="what auto resolved to and what the run decided")
    parser.add_argument("--loss-curve", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = Params.read(args.params)
    quant, lora, trust_remote_code = params.quant, params.lora, params.model.trust_remote_code
    train_params = params.train  # checked now, before anything heavy
    if not args.train.is_file():
        raise SqloraError(f"{args.train} not found (run the preprocess stage)")
    rows = read_jsonl(args.train)
    if not rows:
        raise SqloraError(f"{args.train} has no training examples")
    cap_gpu_memory()
    say(describe_device())

    say(f"loading {args.base} ({quant.bits}-bit, computing in "
        f"{dtype_name(compute_dtype(quant.bnb_4bit_compute_dtype))})")
    tokenizer = load_tokenizer(args.base, trust_remote_code)
    model, quant = load_for_training(args.base, quant, tokenizer, sample_texts(tokenizer, rows),
                                     trust_remote_code=trust_remote_code)
    dtype = compute_dtype(quant.bnb_4bit_compute_dtype)

    train = resolved_schedule(train_params, parameter_count(model))
    code = stage_code("quantize-and-train", Path(__file__))
    run_id = fingerprint(quant, lora, train, files_digest([args.train, args.base, *code]))
    live_curve = args.checkpoints / "train_loss.csv"  # grows as training goes; published when it ends well
    result = train_lora(model, tokenizer, rows, train, lora_config(lora),
                        RunFiles(args.checkpoints, live_curve, run_id), dtype)
    trainer = result.trainer
    if not trainer.is_world_process_zero():
        return  # under `accelerate launch`, the first process checks and saves for all

    # A diverged model writes nothing or one token over and over: refuse to hand it over.
    peft_model = trainer.model
    peft_model.eval()
    peft_model.config.use_cache = True
    if train.check_generations:
        say("checking the trained model's first generations")
        samples = generate(peft_model, tokenizer, [r["prompt"] for r in rows[:4]], batch_size=4,
                           max_new_tokens=48, desc="checking generations")
        problem = degenerate_reason(samples)
        if problem:
            raise SqloraError(f"the trained model is broken ({problem}); adapter not written, "
                              f"checkpoints kept in {args.checkpoints} (train.check_generations: false "
                              "skips this check)")

    say(f"saving the adapter to {args.out}")
    record = {"base": args.base.as_posix(), "quant": as_dict(quant), "compute_dtype": dtype_name(dtype),
              "prompt_format": prompt_format(args.train.parent / PROMPT_FORMAT_FILE),
              "training_events": result.events}
    with staging_area(args.out) as staging:
        adapter = staging / args.out.name
        peft_model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        (adapter / ADAPTER_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        replace_dir(adapter, args.out)
    write_text_atomic(args.loss_curve, live_curve.read_text(encoding="utf-8"))
    write_json_atomic(args.details, result.details)
    write_json_atomic(args.metrics, result.metrics)
    say(f"adapter: {args.out}  " + "  ".join(f"{k}={v}" for k, v in result.metrics.items()))


def prompt_format(path: Path) -> dict | None:
    """How preprocess made the prompts (None for training data made another way)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def sample_texts(tokenizer, rows: list[dict], count: int = 4) -> list[str]:
    """A few whole training examples as the model reads them, for the float16 overflow check."""
    return [prompt_text(tokenizer, row["prompt"]) + row["completion"][0]["content"] for row in rows[:count]]


if __name__ == "__main__":
    run_stage(main)
