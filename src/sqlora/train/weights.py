"""How the base model's weights are held while LoRA trains on them, and in which dtype the
adapter's own weights live."""

from __future__ import annotations

import dataclasses

from ..core.params import TrainParams
from ..model.layers import dequantize_layers, swap_rms_norms
from .schedule import dequantizes


@dataclasses.dataclass(frozen=True)
class HeldWeights:
    """What `prepare_weights` did, for the stage's output and the metrics."""

    quantized: bool          # loaded in 4 or 8 bits
    dequantized: bool        # 4-bit weights held as 16-bit numbers (train.dequantize)
    float32_norms: bool      # embeddings and norms in float32 (PEFT's prepare_model_for_kbit_training)
    fused_rms_norms: int     # RMSNorm layers run as torch's fused kernel
    base_weights_mb: float   # memory the frozen base weights take, as held

    def describe(self) -> str:
        if not self.quantized:
            held = "16-bit"
        elif self.dequantized:
            held = "4-bit, held as 16-bit numbers (train.dequantize)"
        else:
            held = "quantized, held in 4 or 8 bits"
        norms = "float32" if self.float32_norms else "the compute dtype"
        return f"weights: {held}, {self.base_weights_mb:,.0f} MB; embeddings and norms in {norms}"


def prepare_weights(model, train: TrainParams, dtype, *, fused_norms: bool = True):
    """The base model made ready for LoRA per `train` (its `auto` values resolved): returns the
    model and what was done to it."""
    from peft import prepare_model_for_kbit_training

    quantized = bool(getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False))
    float32_norms = quantized and train.float32_norms is True
    if float32_norms:
        # checkpointing is the trainer's to turn on, once the plan says whether to
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    dequantized = dequantizes(model, train)
    if dequantized:
        model = dequantize_layers(model, dtype, any_input_dtype=float32_norms)
    swapped = len(swap_rms_norms(model)) if fused_norms else 0
    return model, HeldWeights(quantized, dequantized, float32_norms, swapped, weight_bytes(model) / 2**20)


def weight_bytes(model) -> int:
    """Bytes a model's weights take as held (before LoRA is attached: the base weights): 4-bit
    layers count their packed weights and their quantization constants, 16-bit and 32-bit ones
    two and four bytes a weight; a tied weight counts once."""
    total = 0
    for param in model.parameters():
        total += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)  # bitsandbytes 4-bit
        while state is not None:
            absmax = getattr(state, "absmax", None)
            if absmax is not None:
                total += absmax.numel() * absmax.element_size()
            state = getattr(state, "state2", None)  # the constants of double quantization
    return total


def adapter_dtype(compute_dtype, quantized: bool = True):
    """The dtype LoRA's trainable weights are kept in under this compute dtype.

    Over a quantized base (held in 4 bits or as 16-bit numbers) under bfloat16: bfloat16, as TRL's
    SFTTrainer casts them (the QLoRA paper's recipe). Under float16: float32, for any base.
    float16 mixed precision scales the loss, and its gradient scaler unscales only float32
    gradients (CUDA's kernel fails on bfloat16 ones, and float16 ones are refused), so the
    trainable weights are float32 master weights that autocast runs in float16. Otherwise the
    float32 that PEFT gives them."""
    import torch

    return torch.bfloat16 if compute_dtype == torch.bfloat16 and quantized else torch.float32


def cast_adapters(model, compute_dtype, quantized: bool = True) -> None:
    """Put the trainable weights in `adapter_dtype`; DoRA's magnitude vector stays float32
    (bfloat16 would round its small updates away, as TRL leaves it)."""
    import torch

    target = adapter_dtype(compute_dtype, quantized)
    for name, param in model.named_parameters():
        if not param.requires_grad or param.dtype == target:
            continue
        if target == torch.bfloat16 and "lora_magnitude_vector" in name:
            continue
        param.data = param.data.to(target)
