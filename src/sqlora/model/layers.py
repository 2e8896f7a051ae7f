"""The model's layers swapped for faster ones that compute the same: quantized layers held as
16-bit `nn.Linear`s, and RMSNorm layers run as torch's fused `rms_norm`."""

from __future__ import annotations

import functools
from contextlib import contextmanager


def dequantize_layers(model, dtype, *, any_input_dtype: bool = False):
    """Each bitsandbytes layer of `model` replaced by a plain `nn.Linear` in `dtype` holding its
    weights as they were quantized, frozen. With `any_input_dtype`, each layer takes input of
    any dtype and returns it in that dtype, as bitsandbytes' layers do (for a model whose norms
    are float32); otherwise input must be in `dtype`."""
    import torch

    linear_class = dequantized_linear_class() if any_input_dtype else torch.nn.Linear
    quantized = [(name, module) for name, module in model.named_modules()
                 if type(module).__name__ in ("Linear4bit", "Linear8bitLt")]
    for name, module in quantized:
        linear = linear_class(module.in_features, module.out_features, bias=module.bias is not None,
                              device=module.weight.device, dtype=dtype).requires_grad_(False)
        with torch.no_grad():
            linear.weight.copy_(dequantized_weight(module).to(dtype))
            if module.bias is not None:
                linear.bias.copy_(module.bias.to(dtype))
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, linear)
    for attribute, plain in (("hf_quantizer", None), ("is_quantized", False), ("is_loaded_in_4bit", False),
                             ("is_loaded_in_8bit", False), ("quantization_method", None)):
        if hasattr(model, attribute):
            setattr(model, attribute, plain)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = dtype
    return model


@functools.cache
def dequantized_linear_class():
    import torch

    class DequantizedLinear(torch.nn.Linear):
        """An `nn.Linear` that computes in its weight's dtype whatever the input's, and returns
        the input's dtype."""

        def forward(self, x):
            return super().forward(x.to(self.weight.dtype)).to(x.dtype)

    return DequantizedLinear


def dequantized_weight(module):
    """A bitsandbytes layer's weight as a plain tensor."""
    from peft.utils.integrations import dequantize_module_weight

    return dequantize_module_weight(module)


@contextmanager
def fused_rms_norms(model):
    """Within the block, the model's RMSNorm layers run as torch's `rms_norm`: on a GPU one
    fused kernel instead of about eight (cast, square, mean, add, rsqrt, two multiplies, cast),
    in a decode step that is bound by kernel launches. Yields how many layers were swapped.

    A layer is swapped only if its class computes `weight * x / rms(x)` (Llama, Qwen2, Mistral,
    Phi-3): each class is checked once on a random input against `rms_norm`, so a norm that
    computes something else, such as Gemma's `(1 + weight) * ...`, is left as it is.
    """
    swapped = swap_rms_norms(model)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward


def swap_rms_norms(model) -> list:
    """Run each RMSNorm layer of `model` that computes `weight * x / rms(x)` as torch's `rms_norm`
    from now on (see `fused_rms_norms`); returns the layers swapped."""
    verdicts: dict[type, bool] = {}
    swapped = []
    for module in model.modules():
        epsilon = rms_norm_epsilon(module) if type(module).__name__.endswith("RMSNorm") else None
        if epsilon is None:
            continue
        forward = fused_rms_norm_forward(module, epsilon)
        if type(module) not in verdicts:
            verdicts[type(module)] = computes_rms_norm(module, forward)
        if verdicts[type(module)]:
            module.forward = forward
            swapped.append(module)
    return swapped


def rms_norm_epsilon(norm) -> float | None:
    weight = getattr(norm, "weight", None)
    if weight is None or weight.dim() != 1:
        return None
    epsilon = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    return epsilon if isinstance(epsilon, float) else None


def fused_rms_norm_forward(norm, epsilon: float):
    """`norm`'s forward as torch's `rms_norm`, its epsilon read once."""
    import torch

    def forward(x):
        return torch.nn.functional.rms_norm(x, norm.weight.shape, norm.weight, epsilon)

    return forward


def computes_rms_norm(norm, forward) -> bool:
    """Whether `norm` computes what `forward` does, on a random input and weight."""
    import torch

    weight = norm.weight
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(4, weight.numel(), generator=generator).to(device=weight.device, dtype=weight.dtype)
    probe = torch.rand(weight.numel(), generator=generator).add_(0.5)  # a weight far from 0 and 1
    saved = norm.weight
    try:
        norm.weight = torch.nn.Parameter(probe.to(device=weight.device, dtype=weight.dtype), requires_grad=False)
        with torch.no_grad():
            expected, got = norm(x).float(), forward(x).float()
    except Exception:  # noqa: BLE001 - a norm that cannot take this input is left alone
        return False
    finally:
        norm.weight = saved
    tolerance = 1e-2 if weight.dtype in (torch.bfloat16, torch.float16) else 1e-4
    return expected.shape == got.shape and torch.allclose(expected, got, rtol=tolerance, atol=tolerance)


def disable_avx512bf16_repacking(model) -> None:
    # bitsandbytes repacks 4-bit weights for AVX512-BF16 CPUs on an eval-mode forward; training
    # after that repack computes wrong gradients or crashes, so the fast path stays off here.
    try:
        import bitsandbytes as bnb
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
