"""LoRA fine-tuning with TRL's SFTTrainer: guarded against divergence, resumable, measured."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

from .errors import SqloraError
from .params import TrainParams, as_dict

FINGERPRINT_FILE = "sqlora_fingerprint.json"


def fingerprint(*parts) -> str:
    """A hash of everything a checkpoint depends on, so a resume never mixes two configurations."""
    plain = [as_dict(part) if dataclasses.is_dataclass(part) else part for part in parts]
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def files_digest(paths: list[Path]) -> str:
    """A cheap content digest of files and folders (names, sizes, first and last MiB of each file),
    so that checkpoints of another base model, training set or training code are never resumed."""
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).is_dir() else [Path(root)]
        for path in files:
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}".encode())
            with path.open("rb") as f:
                digest.update(f.read(1 << 20))
                if size > 2 << 20:
                    f.seek(-(1 << 20), os.SEEK_END)
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def resumable_checkpoint(checkpoint_dir: Path, run_fingerprint: str) -> str | None:
    """The last checkpoint of an interrupted run with the same configuration; others are cleared."""
    stamp = checkpoint_dir / FINGERPRINT_FILE
    same_run = stamp.is_file() and json.loads(stamp.read_text())["fingerprint"] == run_fingerprint
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [c for c in checkpoints if (c / "trainer_state.json").is_file()]
    if same_run and complete:
        return str(complete[-1])
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    stamp.write_text(json.dumps({"fingerprint": run_fingerprint}) + "\n")
    return None


def is_main_process() -> bool:
    """False in the extra processes of a data-parallel run (`accelerate launch`)."""
    return int(os.environ.get("RANK", 0)) == 0


def make_callbacks(loss_csv: Path, resumed_from_step: int):
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        """Appends each logged loss to a CSV as it comes, so an interrupted run keeps its curve."""

        def __init__(self):
            if not is_main_process():
                return
            loss_csv.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if resumed_from_step and loss_csv.is_file():
                # rows logged after the checkpoint are logged again by the resumed run
                with loss_csv.open(newline="") as f:
                    kept = [row for row in list(csv.reader(f))[1:]
                            if row and int(row[0]) <= resumed_from_step]
            with loss_csv.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["step", "loss", "learning_rate"])
                writer.writerows(kept)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and state.is_world_process_zero:
                with loss_csv.open("a", newline="") as f:
                    csv.writer(f).writerow([state.global_step, round(float(logs["loss"]), 5),
                                            logs.get("learning_rate", "")])

    class LossGuard(TrainerCallback):
        """Stops a run whose loss is NaN/inf or collapses to zero, before it saves a broken adapter."""

        problem: str | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            loss = float(logs["loss"])
            if math.isnan(loss) or math.isinf(loss):
                self.problem = f"training loss became {loss} at step {state.global_step}"
            elif loss < 1e-4 and state.global_step > args.logging_steps:
                self.problem = f"training loss collapsed to {loss:.2g} at step {state.global_step}"
            if self.problem:
                control.should_training_stop = True
                control.should_save = False

    return LossLog(), LossGuard()


def last_good_checkpoint(checkpoint_dir: Path) -> str:
    found = sorted(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(found[-1]) if found else "none saved yet"


def train_lora(model, tokenizer, rows: list[dict], train: TrainParams, lora_cfg, checkpoint_dir: Path,
               loss_csv: Path, run_fingerprint: str, dtype) -> dict:
    """Train LoRA adapters on prompt/completion rows (loss on the completion only).

    `dtype` is the compute dtype: bfloat16 or float16 turn on mixed precision on a GPU.
    """
    import torch
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training
    from trl import SFTConfig, SFTTrainer

    from .progress import bars_enabled, quiet_library_bars

    quiet_library_bars()

    on_gpu = torch.cuda.is_available()
    if getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=train.gradient_checkpointing)
    from accelerate import PartialState

    with PartialState().main_process_first():  # one process clears stale checkpoints, then all look
        resume_from = resumable_checkpoint(checkpoint_dir, run_fingerprint)
    rows, too_long = fitting_rows(rows, tokenizer, train.max_length)
    if not rows:
        raise SqloraError(f"every training example is longer than train.max_length = {train.max_length} tokens")
    from .prompts import training_example  # chat messages, or the plain format without a chat template
    dataset = Dataset.from_list([training_example(tokenizer, r) for r in rows])
    config = SFTConfig(
        output_dir=str(checkpoint_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_steps,
        max_length=train.max_length,
        gradient_checkpointing=train.gradient_checkpointing,
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        use_cpu=not on_gpu,
        seed=train.seed,
        logging_steps=train.logging_steps,
        logging_nan_inf_filter=False,  # else a NaN loss is logged as a finite mean, hidden from LossGuard
        save_steps=train.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=not bars_enabled(),
        include_num_input_tokens_seen="non_padding",
        **length_grouping(train.group_by_length),
    )
    resumed_from_step = int(resume_from.rsplit("-", 1)[-1]) if resume_from else 0
    log_callback, guard = make_callbacks(loss_csv, resumed_from_step)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_cfg, callbacks=[log_callback, guard])
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    runtime = time.perf_counter() - started
    if guard.problem:
        raise SqloraError(f"{guard.problem}; no adapter written, last good checkpoint: "
                          f"{last_good_checkpoint(checkpoint_dir)}")
    tokens = trainer.state.num_input_tokens_seen
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    stats = {
        "final_loss": round(float(losses[-1]), 5) if losses else float("nan"),
        # the logged losses, not result.training_loss, which after a resume covers the resumed steps only
        "mean_loss": round(sum(losses) / len(losses), 5) if losses else float("nan"),
        "steps": trainer.state.global_step,
        "runtime_s": round(runtime, 2),
        "tokens": int(tokens),
        "tokens_per_s": round(tokens / runtime, 1) if runtime else 0.0,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "resumed_from_step": resumed_from_step,
        "examples": len(rows),
        "skipped_too_long": too_long,
    }
    return {"trainer": trainer, "stats": stats}


def fitting_rows(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """The examples whose whole conversation fits in max_length tokens, and how many did not.

    Truncation would cut the SQL, the only part trained on: a long schema would teach the model
    to stop mid-query, or nothing at all. Such examples are left out instead. Lengths count the
    tokens TRL trains on: with the chat template, or in the plain format (see prompts.py).
    """
    from .prompts import training_example, training_length

    kept = [row for row in rows
            if training_length(tokenizer, training_example(tokenizer, row)) <= max_length]
    return kept, len(rows) - len(kept)


def length_grouping(enabled: bool) -> dict:
    """Batches of similar lengths waste less compute on padding; the option moved in transformers 5."""
    import dataclasses

    from transformers import TrainingArguments

    if not enabled:
        return {}
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch; on CPU the process's peak resident memory where known."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import resource  # not on Windows
    except ImportError:
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
