"""LoRA fine-tuning with TRL's SFTTrainer: set up, train through the failures a small card and a
diverging loss bring, and measure.

    result = train_lora(model, tokenizer, rows, train, lora_config, RunFiles(...), dtype)
    result.trainer.model      # the PEFT model, trained
    result.metrics            # what runs are compared by (metrics/train.json)
    result.details            # the settings `auto` resolved to, and what the run decided
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from ..core.errors import SqloraError
from ..core.params import AUTO, TrainParams
from ..core.progress import bars_enabled, quiet_library_bars, say
from ..data.prompts import training_example, training_length
from ..model.devices import free_gpu_memory, guard_attention_kernels
from ..model.precision import COMPUTE_DTYPE_KEY, dtype_name
from .plan import BatchPlan, agreed_plan, choose_plan, longest_example
from .resume import last_finite_checkpoint, resumable_checkpoint, step_of
from .schedule import AUTO_BY_SIZE, parameter_count
from .trainer import make_trainer
from .weights import prepare_weights

MAX_ROLLBACKS = 3
ROLLBACK_LR_FACTOR = 0.5
# keys of `TrainResult.metrics`: what `dvc exp show` compares runs by
METRIC_KEYS = ("final_loss", "runtime_s", "tokens_per_s", "peak_memory_mb")


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Where a run keeps what lets it resume: checkpoints (of this fingerprint only) and the loss
    curve as it grows."""

    checkpoint_dir: Path
    loss_csv: Path
    fingerprint: str


@dataclasses.dataclass
class TrainResult:
    trainer: Any
    metrics: dict[str, Any]
    details: dict[str, Any]
    events: list[dict]

    @property
    def stats(self) -> dict[str, Any]:
        return {**self.metrics, **self.details}


def train_lora(model, tokenizer, rows: list[dict], train: TrainParams, lora_config, files: RunFiles, dtype, *,
               fused_norms: bool = True) -> TrainResult:
    """Train LoRA adapters on prompt/completion rows (loss on the completion only).

    `dtype` is the compute dtype: bfloat16 or float16 turn on mixed precision on a GPU. On a GPU,
    each optimizer step of `train.batch_size` examples is cut into the largest micro-batches that
    fit the card, with gradient accumulation making up the rest, so the recipe (and the loss
    curve) is the same on a small card as on a large one. RMSNorm layers run as torch's fused
    `rms_norm` unless `fused_norms` is False (the plain recipe of benchmarks/bench_train.py).
    """
    import torch
    from accelerate import PartialState
    from datasets import Dataset

    from .callbacks import TrainingCallbacks

    quiet_library_bars()
    parameters = parameter_count(model)
    unresolved = [name for name in AUTO_BY_SIZE if getattr(train, name) == AUTO]
    if unresolved:
        raise ValueError(f"train.{unresolved[0]} is still 'auto': resolve it first (schedule.resolved_schedule)")
    say(f"schedule: learning rate {train.learning_rate:g}, {train.epochs:g} epochs "
        f"for a model of {parameters / 1e6:,.0f}M parameters")
    model, held = prepare_weights(model, train, dtype, fused_norms=fused_norms)
    say(held.describe())
    rows, too_long = fitting_rows(rows, tokenizer, train.max_length)
    if not rows:
        raise SqloraError(f"every training example is longer than train.max_length = {train.max_length} tokens")
    dataset = Dataset.from_list([training_example(tokenizer, r) for r in rows])  # chat, or plain text
    attention = guard_attention_kernels()
    if attention:
        say(f"note: {attention}")
    with PartialState().main_process_first():  # one process clears stale checkpoints, then all look
        resume_from = resumable_checkpoint(files.checkpoint_dir, files.fingerprint)
    callbacks = TrainingCallbacks(files.loss_csv, resume_from, progress_line=not bars_enabled())

    def new_trainer(model, dataset, plan: BatchPlan, peft_config=None):
        return make_trainer(model, dataset, tokenizer, train, plan, files.checkpoint_dir, dtype, callbacks.all,
                            peft_config=peft_config, quantized_base=held.quantized)

    plan = BatchPlan(train.batch_size, train.gradient_accumulation_steps,
                     checkpointing=train.gradient_checkpointing is True)
    trainer = new_trainer(model, dataset, plan, lora_config)
    measured = ""
    if torch.cuda.is_available():
        fitted, measured = fitted_plan(trainer, plan, train)
        if fitted != plan:
            plan, trainer = fitted, new_trainer(trainer.model, trainer.train_dataset, fitted)
        torch.cuda.reset_peak_memory_stats()

    started = time.perf_counter()
    trainer, plan, events = train_through_failures(trainer, plan, resume_from, new_trainer, callbacks,
                                                   files.checkpoint_dir, len(rows), train, dtype)
    runtime = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen
    # the logged losses, not the trainer's training_loss, which after a resume covers the resumed steps only
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "final_loss": finite_or_none(losses[-1]) if losses else None,
        "runtime_s": round(runtime, 2),
        "tokens_per_s": round(tokens / runtime, 1) if runtime else 0.0,
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }
    details = {
        "mean_loss": finite_or_none(sum(losses) / len(losses)) if losses else None,
        "base_weights_mb": round(held.base_weights_mb, 1),
        "compute_dtype": dtype_name(dtype),
        "learning_rate": train.learning_rate,
        "epochs": train.epochs,
        "dequantized": held.dequantized,
        "float32_norms": held.float32_norms,
        "fused_rms_norms": held.fused_rms_norms,
        "steps": trainer.state.global_step,
        "tokens": int(tokens),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "model_params": parameters,
        "examples": len(rows),
        "skipped_too_long": too_long,
        "resumed_from_step": step_of(resume_from),
        "batch_size": train.batch_size * train.gradient_accumulation_steps,
        "micro_batch_size": plan.micro_batch,
        "gradient_accumulation_steps": plan.accumulation,
        "gradient_checkpointing": plan.checkpointing,
        "plan_measured": measured,
        "rollbacks": count(events, "rollback"),
        "out_of_memory_restarts": count(events, "out of GPU memory"),
        "final_learning_rate_factor": callbacks.rate.factor,
        "cudnn_attention_off": attention is not None,
    }
    return TrainResult(trainer, metrics, details, events)


def fitted_plan(trainer, plan: BatchPlan, train: TrainParams) -> tuple[BatchPlan, str]:
    """The plan that fits this GPU (the same for every process of a data-parallel run), and the
    line saying what was measured to choose it."""
    longest = longest_example(trainer)
    say(f"fitting micro-batches of {train.batch_size} examples of up to {longest} tokens to the GPU's memory")
    fitted, measured = choose_plan(trainer, plan, longest, train.gradient_checkpointing)
    if measured:
        say(measured)
    fitted = agreed_plan(trainer, fitted)
    say(f"micro-batch {fitted.micro_batch} x {fitted.accumulation} accumulation steps "
        f"= {fitted.micro_batch * fitted.accumulation} examples per optimizer step"
        + (", gradient checkpointing on" if fitted.checkpointing else ""))
    return fitted, measured


def train_through_failures(trainer, plan: BatchPlan, resume_from, new_trainer, callbacks, checkpoint_dir: Path,
                           examples: int, train: TrainParams, dtype):
    """Train to the end. Out of GPU memory: go on from the last good checkpoint with half the
    micro-batch. A loss that turns NaN/inf: roll back to the last good checkpoint with half the
    learning rate, up to MAX_ROLLBACKS times. Returns the last trainer, its plan and the events."""
    import torch

    events: list[dict] = []
    while True:
        say(f"training: {examples} examples, {train.epochs:g} epochs"
            + (f", resuming from {resume_from}" if resume_from else ""))
        callbacks.start(resume_from, rollbacks=count(events, "rollback"), factor=ROLLBACK_LR_FACTOR)
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        except torch.cuda.OutOfMemoryError:
            smaller = plan.halved()
            if smaller is None:
                raise SqloraError("out of GPU memory with one example per micro-batch: lower train.max_length "
                                  "or turn on train.gradient_checkpointing") from None
            step = trainer.state.global_step
            plan, resume_from = smaller, last_finite_checkpoint(checkpoint_dir)
            events.append({"step": step, "event": "out of GPU memory", "micro_batch": plan.micro_batch,
                           "resumed_from_step": step_of(resume_from)})
            say(f"out of GPU memory at step {step}: going on with micro-batches of {plan.micro_batch}")
            release(trainer)
            callbacks.loss_log.keep_until(step_of(resume_from))
            trainer = new_trainer(trainer.model, trainer.train_dataset, plan)
            continue
        except (RuntimeError, NotImplementedError, ValueError) as error:
            if not is_precision_error(error):
                raise
            raise SqloraError(f"training in {dtype_name(dtype)} failed on a dtype mismatch "
                              f"({str(error).splitlines()[0]}): set {COMPUTE_DTYPE_KEY} to float32") from None
        guard = callbacks.guard
        rollback_to = last_finite_checkpoint(checkpoint_dir) if guard.non_finite else None
        if rollback_to and count(events, "rollback") < MAX_ROLLBACKS:
            events.append({"step": trainer.state.global_step, "event": "rollback", "reason": guard.problem,
                           "resumed_from_step": step_of(rollback_to), "learning_rate_factor": ROLLBACK_LR_FACTOR})
            say(f"{guard.problem}: rolling back to {rollback_to} with the learning rate x{ROLLBACK_LR_FACTOR}")
            guard.reset()
            callbacks.loss_log.keep_until(step_of(rollback_to))
            resume_from = rollback_to
            trainer = new_trainer(trainer.model, trainer.train_dataset, plan)
            continue
        break
    if guard.problem:
        hint = ""
        if guard.non_finite and dtype_name(dtype) == "float16":
            hint = f"; float16 may overflow in this model: set {COMPUTE_DTYPE_KEY} to float32"
        raise SqloraError(f"{guard.problem}; no adapter written, last good checkpoint: "
                          f"{last_finite_checkpoint(checkpoint_dir) or 'none saved yet'}{hint}")
    return trainer, plan, events


PRECISION_ERRORS = ("not implemented for 'bfloat16'", "not implemented for 'half'", "unscale fp16 gradients",
                    "expected scalar type", "same dtype", "dtype mismatch")


def is_precision_error(error: BaseException) -> bool:
    """Whether an error is a mixed-precision mismatch (a kernel or the gradient scaler meeting a
    dtype it does not take), which the compute dtype decides."""
    text = str(error).lower()
    return any(marker in text for marker in PRECISION_ERRORS)


def count(events: list[dict], kind: str) -> int:
    return sum(event["event"] == kind for event in events)


def release(trainer) -> None:
    """Let go of a failed trainer's optimizer and gradients before the next one starts."""
    trainer.optimizer = trainer.lr_scheduler = None
    trainer.model.zero_grad(set_to_none=True)
    free_gpu_memory()


def finite_or_none(value: float) -> float | None:
    """A loss for a metrics file: JSON has no NaN, so a non-finite one is written as null."""
    return round(float(value), 5) if math.isfinite(value) else None


def fitting_rows(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """The examples whose whole conversation fits in max_length tokens, and how many did not.

    Truncation would cut the SQL, the only part trained on: a long schema would teach the model
    to stop mid-query, or nothing at all. Such examples are left out instead. Lengths count the
    tokens TRL trains on: with the chat template, or in the plain format (see data/prompts.py).
    """
    kept = [row for row in rows
            if training_length(tokenizer, training_example(tokenizer, row)) <= max_length]
    return kept, len(rows) - len(kept)


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
