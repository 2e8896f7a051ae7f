"""How an optimizer step is cut into micro-batches that fit the GPU, with or without
activation checkpointing, measured on the card itself."""

from __future__ import annotations

import dataclasses
import time

from ..core.errors import SqloraError
from ..core.params import AUTO
from ..model.devices import free_gpu_memory


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
