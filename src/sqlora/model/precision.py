"""The dtype a model computes in, and a check that float16 holds its activations.

float16 reaches only 65,504. Some models' activations grow past that: on Spider dev prompts
Gemma-3-270M's residual stream reaches about 104,000 (not finite in float16 from layer 8 of 18
on), while SmolLM2-135M's stays under 25,000 and Qwen2.5-Coder-0.5B's under 2,200
(`benchmarks/float16_range.py`, docs/RESULTS.md). Such a model computes in float32 on a card
without bfloat16 (`float16_overflow` says where it overflowed).
"""

from __future__ import annotations

from ..core.errors import ParamError

COMPUTE_DTYPE_KEY = "quant.bnb_4bit_compute_dtype"


def compute_dtype(name: str):
    """The dtype for matmuls: `auto` takes bfloat16 where the GPU has it, float16 on older GPUs,
    float32 on CPU. bfloat16 asked for on a GPU without it is an error that says what to set."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name == "bfloat16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ParamError(f"{COMPUTE_DTYPE_KEY} = 'bfloat16': {torch.cuda.get_device_name(0)} has no bfloat16; "
                         "set it to auto or float16")
    return getattr(torch, name)


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def float16_overflow(model, tokenizer, texts: list[str]) -> str | None:
    """Where a model that computes in float16 overflows on `texts` (one forward pass each), as a
    sentence; None when it does not overflow, or does not compute in float16."""
    import torch

    if getattr(model, "dtype", None) != torch.float16 or not texts:
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :512].to(device)
            with torch.no_grad():
                out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
            states = out.hidden_states or ()
            for layer, state in enumerate(states):
                if not bool(torch.isfinite(state).all()):
                    return (f"float16 overflows in this model: the output of layer {layer} of {len(states) - 1} "
                            "passes 65,504")
            if not bool(torch.isfinite(out.logits).all()):
                return "float16 overflows in this model's output layer"
    finally:
        model.train(was_training)
    return None
