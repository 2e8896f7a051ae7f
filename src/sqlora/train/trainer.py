"""TRL's SFTTrainer, configured for one batch plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.params import TrainParams
from ..core.progress import bars_enabled
from .plan import BatchPlan
from .weights import cast_adapters


def make_trainer(model, dataset, tokenizer, train: TrainParams, plan: BatchPlan, checkpoint_dir: Path, dtype,
                 callbacks: list, peft_config=None, *, quantized_base: bool = True):
    """An SFTTrainer for this plan, with the adapter's weights in the dtype the compute dtype needs
    (`weights.adapter_dtype`; TRL casts them to bfloat16 over a 4-bit base each time it is built).
    The first one wraps `model` with `peft_config`; a later one (another micro-batch, a roll-back)
    takes the first one's PEFT model and tokenized data as they are."""
    from trl import SFTTrainer

    config = sft_config(train, plan, checkpoint_dir, dtype, prepared_dataset=peft_config is None)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    cast_adapters(trainer.model, dtype, quantized_base)
    return trainer


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
