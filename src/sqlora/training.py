"""LoRA fine-tuning with TRL's SFTTrainer: guarded against divergence, resumable, measured."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

from .devices import free_gpu_memory, guard_attention_kernels
from .errors import SqloraError
from .modeling import dequantize_layers, swap_rms_norms
from .params import AUTO, SMALL_MODEL_PARAMETERS, TrainParams, as_dict
from .progress import bars_enabled, quiet_library_bars
from .prompts import training_example, training_length

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


def train_lora(model, tokenizer, rows: list[dict], train: TrainParams, lora_cfg, checkpoint_dir: Path,
               loss_csv: Path, run_fingerprint: str, dtype, *, fused_norms: bool = True) -> dict:
    """Train LoRA adapters on prompt/completion rows (loss on the completion only).

    `dtype` is the compute dtype: bfloat16 or float16 turn on mixed precision on a GPU. On a GPU,
    each optimizer step of `train.batch_size` examples is cut into the largest micro-batches that
    fit the card, with gradient accumulation making up the rest, so the recipe (and the loss
    curve) is the same on a small card as on a large one. A loss that turns NaN/inf rolls back to
    the last good checkpoint with half the learning rate, up to MAX_ROLLBACKS times.
    RMSNorm layers run as torch's fused `rms_norm` (`modeling.swap_rms_norms`) unless
    `fused_norms` is False (the plain recipe of benchmarks/bench_train.py).
    """
    import torch
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training

    from .callbacks import LearningRateFactor, LossGuard, LossLog, ProgressLine

    quiet_library_bars()

    on_gpu = torch.cuda.is_available()
    parameters = parameter_count(model)
    train = resolved_schedule(train, parameters)
    print(f"schedule: learning rate {train.learning_rate:g}, {train.epochs:g} epochs "
          f"for a model of {parameters / 1e6:,.0f}M parameters", flush=True)
    quantized = getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False)
    float32_norms = quantized and train.float32_norms
    if float32_norms:
        # checkpointing is the trainer's to turn on, once the plan says whether to
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    dequantized = dequantizes(model, train)
    if dequantized:
        model = dequantize_layers(model, dtype, any_input_dtype=float32_norms)
    if quantized:
        held = "4-bit, held as 16-bit numbers (train.dequantize)" if dequantized else "quantized"
        norms = "float32" if float32_norms else "the compute dtype"
        print(f"weights: {held}; embeddings and norms in {norms}", flush=True)
    norms_fused = len(swap_rms_norms(model)) if fused_norms else 0
    from accelerate import PartialState

    with PartialState().main_process_first():  # one process clears stale checkpoints, then all look
        resume_from = resumable_checkpoint(checkpoint_dir, run_fingerprint)
    rows, too_long = fitting_rows(rows, tokenizer, train.max_length)
    if not rows:
        raise SqloraError(f"every training example is longer than train.max_length = {train.max_length} tokens")
    dataset = Dataset.from_list([training_example(tokenizer, r) for r in rows])  # chat, or plain text
    attention = guard_attention_kernels()
    if attention:
        print(f"note: {attention}", flush=True)

    resumed_from_step = step_of(resume_from)
    loss_log, guard, rate = LossLog(loss_csv, resumed_from_step), LossGuard(), LearningRateFactor()
    # a run resumed after a roll-back in an earlier process goes on at that process's rate
    first_factor = LearningRateFactor.saved_factor(resume_from) if resume_from else 1.0
    callbacks = [loss_log, guard, rate] + ([] if bars_enabled() else [ProgressLine()])
    plan = BatchPlan(train.batch_size, train.gradient_accumulation_steps,
                     checkpointing=train.gradient_checkpointing is True)
    trainer = make_trainer(model, dataset, tokenizer, train, plan, checkpoint_dir, dtype, callbacks,
                           peft_config=lora_cfg)
    if dequantized:
        adapters_as_for_4bit(trainer.model)
    if on_gpu:
        longest = longest_example(trainer)
        print(f"fitting micro-batches of {train.batch_size} examples of up to {longest} tokens to the GPU's memory",
              flush=True)
        fitted, measured = choose_plan(trainer, plan, longest, train.gradient_checkpointing)
        if measured:
            print(measured, flush=True)
        fitted = agreed_plan(trainer, fitted)
        if fitted != plan:
            plan = fitted
            trainer = make_trainer(trainer.model, trainer.train_dataset, tokenizer, train, plan, checkpoint_dir,
                                   dtype, callbacks)
        print(f"micro-batch {plan.micro_batch} x {plan.accumulation} accumulation steps "
              f"= {plan.micro_batch * plan.accumulation} examples per optimizer step"
              + (", gradient checkpointing on" if plan.checkpointing else ""), flush=True)
        torch.cuda.reset_peak_memory_stats()

    events: list[dict] = []
    started = time.perf_counter()
    while True:
        print(f"training: {len(rows)} examples, {train.epochs:g} epochs"
              + (f", resuming from {resume_from}" if resume_from else ""), flush=True)
        rate.factor = first_factor * ROLLBACK_LR_FACTOR ** count(events, "rollback")
        rate.resume_from = resume_from
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
            print(f"out of GPU memory at step {step}: going on with micro-batches of {plan.micro_batch}", flush=True)
            release(trainer)
            loss_log.keep_until(step_of(resume_from))
            trainer = make_trainer(trainer.model, trainer.train_dataset, tokenizer, train, plan, checkpoint_dir,
                                   dtype, callbacks)
            continue
        rollback_to = last_finite_checkpoint(checkpoint_dir) if guard.non_finite else None
        if rollback_to and count(events, "rollback") < MAX_ROLLBACKS:
            events.append({"step": trainer.state.global_step, "event": "rollback", "reason": guard.problem,
                           "resumed_from_step": step_of(rollback_to), "learning_rate_factor": ROLLBACK_LR_FACTOR})
            print(f"{guard.problem}: rolling back to {rollback_to} with the learning rate x{ROLLBACK_LR_FACTOR}",
                  flush=True)
            guard.reset()
            loss_log.keep_until(step_of(rollback_to))
            resume_from = rollback_to
            trainer = make_trainer(trainer.model, trainer.train_dataset, tokenizer, train, plan, checkpoint_dir,
                                   dtype, callbacks)
            continue
        break
    runtime = time.perf_counter() - started
    if guard.problem:
        raise SqloraError(f"{guard.problem}; no adapter written, last good checkpoint: "
                          f"{last_finite_checkpoint(checkpoint_dir) or 'none saved yet'}")
    tokens = trainer.state.num_input_tokens_seen
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    stats = {
        "final_loss": finite_or_none(losses[-1]) if losses else None,
        # the logged losses, not result.training_loss, which after a resume covers the resumed steps only
        "mean_loss": finite_or_none(sum(losses) / len(losses)) if losses else None,
        "steps": trainer.state.global_step,
        "runtime_s": round(runtime, 2),
        "tokens": int(tokens),
        "tokens_per_s": round(tokens / runtime, 1) if runtime else 0.0,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "model_params": parameters,
        "learning_rate": train.learning_rate,
        "epochs": train.epochs,
        "resumed_from_step": resumed_from_step,
        "examples": len(rows),
        "skipped_too_long": too_long,
        "batch_size": train.batch_size * train.gradient_accumulation_steps,
        "micro_batch_size": plan.micro_batch,
        "gradient_accumulation_steps": plan.accumulation,
        "gradient_checkpointing": plan.checkpointing,
        "dequantized": dequantized,
        "float32_norms": float32_norms,
        "fused_rms_norms": norms_fused,
        "rollbacks": count(events, "rollback"),
        "out_of_memory_restarts": count(events, "out of GPU memory"),
        "final_learning_rate_factor": rate.factor,
        "cudnn_attention_off": attention is not None,
    }
    return {"trainer": trainer, "stats": stats, "events": events}


MAX_ROLLBACKS = 3
ROLLBACK_LR_FACTOR = 0.5


@dataclasses.dataclass(frozen=True)
class SizeSchedule:
    """What `auto` gives a model of up to `max_parameters`: learning rate, epochs, and whether to
    train on its 4-bit weights held in 16 bits (`dequantize`) with float32 norms (`float32_norms`)."""

    max_parameters: float
    learning_rate: float
    epochs: float
    dequantize: bool
    float32_norms: bool


# Measured on Spider (docs/RESULTS.md, "Models"): a 135M model needs a high rate and many epochs
# to learn SQL at all; a 0.5B code model already writes SQL, and that schedule over-fits it
# (final loss 0.007, 2 points over its base, where 2e-4 for 2 epochs gained 21). Both train
# 1.5-1.7x faster on their dequantized weights with norms in the compute dtype, and scored within
# the run-to-run spread of the slower recipe (five seeds each for the small model; the 0.5B model,
# 630M parameters as loaded, also at 5.5 GiB: docs/RESULTS.md, "Training speed"). Larger models
# keep QLoRA as PEFT prepares it: the 16-bit copy costs 1.5 bytes a weight more, untried on a
# 6 GB card past 1B parameters.
SIZE_SCHEDULES = (
    SizeSchedule(max_parameters=SMALL_MODEL_PARAMETERS, learning_rate=1e-3, epochs=6, dequantize=True,
                 float32_norms=False),
    SizeSchedule(max_parameters=1e9, learning_rate=2e-4, epochs=2, dequantize=True, float32_norms=False),
    SizeSchedule(max_parameters=math.inf, learning_rate=2e-4, epochs=2, dequantize=False, float32_norms=True),
)


def parameter_count(model) -> int:
    """Parameters of the model as trained from, before quantization packed them."""
    total = 0
    for param in model.parameters():
        shape = getattr(getattr(param, "quant_state", None), "shape", None)  # bitsandbytes 4-bit
        total += math.prod(shape) if shape is not None else param.numel()
    return total


def resolved_schedule(train: TrainParams, parameters: int) -> TrainParams:
    """`train` with each `auto` setting replaced by the model size's schedule."""
    size = next(s for s in SIZE_SCHEDULES if parameters <= s.max_parameters)
    return dataclasses.replace(train, **{
        name: getattr(size, name) for name in ("learning_rate", "epochs", "dequantize", "float32_norms")
        if getattr(train, name) == AUTO})


def dequantizes(model, train: TrainParams) -> bool:
    """Whether to train on the 4-bit weights turned back into 16-bit numbers (train.dequantize).

    bitsandbytes multiplies by a 4-bit weight by turning it back into 16 bits first, in every
    forward and backward pass; holding it that way once gives the same products with fewer
    kernels, for the memory of a 16-bit copy. 8-bit layers multiply in 8 bits, so they are kept.
    """
    return bool(train.dequantize) and getattr(model, "is_loaded_in_4bit", False)


def adapters_as_for_4bit(peft_model) -> None:
    """The adapter weights in bfloat16, as TRL's SFTTrainer leaves them over a 4-bit base (the
    QLoRA paper's recipe), so that a dequantized base trains with the 4-bit one's recipe."""
    import torch

    for name, param in peft_model.named_parameters():
        if param.requires_grad and "lora_magnitude_vector" not in name:
            param.data = param.data.to(torch.bfloat16)


def count(events: list[dict], kind: str) -> int:
    return sum(event["event"] == kind for event in events)


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """An optimizer step of micro_batch x accumulation examples (per process), with or without
    gradient (activation) checkpointing."""

    micro_batch: int
    accumulation: int
    checkpointing: bool = False

    def halved(self) -> BatchPlan | None:
        """The largest smaller micro-batch that divides this one, the same examples per step."""
        for smaller in range(self.micro_batch // 2, 0, -1):
            if self.micro_batch % smaller == 0:
                return BatchPlan(smaller, self.accumulation * (self.micro_batch // smaller), self.checkpointing)
        return None


def make_trainer(model, dataset, tokenizer, train: TrainParams, plan: BatchPlan, checkpoint_dir: Path, dtype,
                 callbacks: list, peft_config=None):
    """An SFTTrainer for this plan. A later one (another micro-batch, a roll-back) takes the first
    one's PEFT model and tokenized data as they are."""
    from trl import SFTTrainer

    prepared = peft_config is None
    config = sft_config(train, plan, checkpoint_dir, dtype, prepared_dataset=prepared)
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=callbacks)


def sft_config(train: TrainParams, plan: BatchPlan, checkpoint_dir: Path, dtype, prepared_dataset: bool = False):
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.accumulation,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_steps,
        max_length=train.max_length,
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
        dataset_kwargs={"skip_prepare_dataset": True} if prepared_dataset else None,
        **checkpointing(plan.checkpointing),
        **length_grouping(train.group_by_length),
    )


def choose_plan(trainer, plan: BatchPlan, sequence_length: int, checkpointing) -> tuple[BatchPlan, str]:
    """The micro-batch that fits the GPU and, with `checkpointing` "auto", whether to checkpoint
    activations: where that lets more examples in at once, one step of each is timed and the
    faster way is taken. Returns the plan and a line saying what was measured ("" if nothing was)."""
    import torch

    fitted = fit_micro_batch(trainer, dataclasses.replace(plan, checkpointing=checkpointing is True),
                             sequence_length)
    if checkpointing != AUTO or fitted.micro_batch == plan.micro_batch:
        return fitted, ""
    checkpointed = fit_micro_batch(trainer, dataclasses.replace(plan, checkpointing=True), sequence_length)
    if checkpointed.micro_batch <= fitted.micro_batch:
        return fitted, ""
    speed = {}
    for candidate in (fitted, checkpointed):
        try:
            speed[candidate] = candidate.micro_batch * sequence_length / probe_step(trainer, candidate, sequence_length)
        except torch.cuda.OutOfMemoryError:
            pass  # it fitted once, at the edge of the GPU's memory: too close to train with

    def ran(p: BatchPlan) -> str:
        return f"ran {speed[p]:,.0f} tokens/s" if p in speed else "ran out of memory when timed"

    # every token of sequences of the longest length counts here; training's tokens/s counts real tokens only
    measured = (f"one step of {sequence_length}-token sequences, micro-batches of {fitted.micro_batch} "
                f"without it {ran(fitted)}, {checkpointed.micro_batch} with it {ran(checkpointed)}")
    if not speed:
        smaller = fit_micro_batch(trainer, checkpointed.halved() or checkpointed, sequence_length)
        return smaller, f"gradient checkpointing on: {measured}; took {smaller.micro_batch} with it"
    best = max(speed, key=speed.get)
    return best, f"gradient checkpointing {'on' if best.checkpointing else 'off'}: {measured}"


def agreed_plan(trainer, plan: BatchPlan) -> BatchPlan:
    """One plan for all processes of a data-parallel run: each one probed (and timed) its own GPU,
    and processes that accumulate different numbers of micro-batches would wait on each other forever."""
    if trainer.accelerator.num_processes == 1:
        return plan
    from accelerate.utils import gather_object

    return common_plan(gather_object([plan]))


def common_plan(plans: list[BatchPlan]) -> BatchPlan:
    """A plan that fits every process's GPU: the smallest micro-batch any process chose, with
    checkpointing if any chose it (checkpointing only lowers the memory a micro-batch takes)."""
    smallest = min(plans, key=lambda p: p.micro_batch)
    return dataclasses.replace(smallest, checkpointing=any(p.checkpointing for p in plans))


def fit_micro_batch(trainer, plan: BatchPlan, sequence_length: int) -> BatchPlan:
    """The largest micro-batch whose forward and backward over `sequence_length` tokens fit the
    GPU (or the SQLORA_GPU_MEMORY_GB cap), with room kept for the optimizer's state."""
    import torch

    while True:
        try:
            probe_step(trainer, plan, sequence_length)
            return plan
        except torch.cuda.OutOfMemoryError:
            smaller = plan.halved()
            if smaller is None:
                raise SqloraError(f"one training example of {sequence_length} tokens does not fit in GPU memory: "
                                  "lower train.max_length or turn on train.gradient_checkpointing") from None
            plan = smaller


def probe_step(trainer, plan: BatchPlan, sequence_length: int) -> float:
    """Seconds for one training forward and backward pass over `plan.micro_batch` sequences of
    `sequence_length` tokens, as `plan` runs them, with Adam's state held. Leaves no gradients,
    logged metrics or checkpointing behind."""
    import torch

    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    token = trainer.train_dataset[0]["input_ids"][0]
    device = next(p for p in model.parameters() if p.requires_grad).device
    was_training, tokens_seen = model.training, getattr(trainer, "_total_train_tokens", None)
    model.train()  # in eval mode the model would skip checkpointing and keep no activations for backward
    set_checkpointing(model, plan.checkpointing)
    try:
        # Adam keeps two fp32 numbers per trainable weight: hold that much while probing
        optimizer_state = torch.empty(2 * trainable, dtype=torch.float32, device=device)
        ids = torch.full((plan.micro_batch, sequence_length), token, dtype=torch.long, device=device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        synchronize(device)
        started = time.perf_counter()
        with trainer.accelerator.autocast():  # the loss exactly as a training step computes it
            loss = trainer.compute_loss(model, inputs)
        loss.backward()
        synchronize(device)
        del optimizer_state, ids, inputs, loss
        return time.perf_counter() - started
    finally:
        model.zero_grad(set_to_none=True)
        set_checkpointing(model, False)  # the trainer turns it on again when its plan says so
        model.train(was_training)
        if tokens_seen is not None:
            trainer._total_train_tokens = tokens_seen
        for values in getattr(trainer, "_metrics", {}).get("train", {}).values():
            values.clear()  # the probe's entropy and accuracy are no training step's
        free_gpu_memory()


def set_checkpointing(model, enabled: bool) -> None:
    """Turn activation checkpointing on or off in a (PEFT-wrapped) transformers model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        return
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5
        base.activation_checkpointing_enable() if enabled else base.activation_checkpointing_disable()
    elif enabled:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def longest_example(trainer) -> int:
    return max(len(ids) for ids in trainer.train_dataset["input_ids"])


def release(trainer) -> None:
    """Let go of a failed trainer's optimizer and gradients before the next one starts."""
    trainer.optimizer = trainer.lr_scheduler = None
    trainer.model.zero_grad(set_to_none=True)
    free_gpu_memory()


def step_of(checkpoint: str | Path | None) -> int:
    return int(str(checkpoint).rsplit("-", 1)[-1]) if checkpoint else 0


def last_finite_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint whose adapter weights are all finite."""
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=step_of, reverse=True)
    for checkpoint in checkpoints:
        if (checkpoint / "trainer_state.json").is_file() and adapter_is_finite(checkpoint):
            return str(checkpoint)
    return None


def adapter_is_finite(checkpoint: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    weights = checkpoint / "adapter_model.safetensors"
    if not weights.is_file():
        return False
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(weights)).values())


def finite_or_none(value: float) -> float | None:
    """A loss for a metrics file: JSON has no NaN, so a non-finite one is written as null."""
    return round(float(value), 5) if math.isfinite(value) else None


def fitting_rows(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """The examples whose whole conversation fits in max_length tokens, and how many did not.

    Truncation would cut the SQL, the only part trained on: a long schema would teach the model
    to stop mid-query, or nothing at all. Such examples are left out instead. Lengths count the
    tokens TRL trains on: with the chat template, or in the plain format (see prompts.py).
    """

    kept = [row for row in rows
            if training_length(tokenizer, training_example(tokenizer, row)) <= max_length]
    return kept, len(rows) - len(kept)


def checkpointing(enabled: bool) -> dict:
    """Activation (gradient) checkpointing; transformers 5 renamed the option."""
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": enabled}


def length_grouping(enabled: bool) -> dict:
    """Batches of similar lengths waste less compute on padding; the option moved in transformers 5."""
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
