"""Does this GPU's cuDNN attention return NaN gradients (pytorch/pytorch#196678)?

Runs one attention backward pass per sequence length, with an explicit causal mask and every
logit about -120 (as in Qwen2.5's outlier heads), and counts the non-finite query gradients for
PyTorch's default kernel choice, cuDNN forced, the memory-efficient kernel, and is_causal=True
without a mask tensor. Then it applies training's guard (`sqlora.model.devices.guard_attention_kernels`)
and tries the default choice again. Needs a CUDA GPU:

    python benchmarks/cudnn_attention_probe.py
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sqlora.model.devices import guard_attention_kernels


def non_finite_query_grads(length: int, head_dim: int, backends=None, mask: bool = True) -> int:
    torch.manual_seed(0)
    q = torch.randn(1, 1, length, head_dim, device="cuda", dtype=torch.bfloat16) * 0.1
    k = torch.randn(1, 1, length, head_dim, device="cuda", dtype=torch.bfloat16) * 0.1
    v = torch.randn(1, 1, length, head_dim, device="cuda", dtype=torch.bfloat16)
    q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(head_dim)
    for t in (q, k, v):
        t.requires_grad_()
    causal = torch.ones(length, length, dtype=torch.bool, device="cuda").tril()[None, None]
    with sdpa_kernel(backends) if backends else torch.enable_grad():
        if mask:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(torch.randn_like(out))
    return int((~torch.isfinite(q.grad)).sum())


def main() -> None:
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print("| length | default, mask | cuDNN, mask | efficient, mask | default, is_causal |")
    print("| --- | --- | --- | --- | --- |")
    for length in (640, 704, 768, 192):
        cells = [non_finite_query_grads(length, 64), non_finite_query_grads(length, 64, [SDPBackend.CUDNN_ATTENTION]),
                 non_finite_query_grads(length, 64, [SDPBackend.EFFICIENT_ATTENTION]),
                 non_finite_query_grads(length, 64, mask=False)]
        print(f"| {length} | " + " | ".join(map(str, cells)) + " |")
    print(f"guard: {guard_attention_kernels()}")
    print(f"after the guard, default kernel, mask, length 704: {non_finite_query_grads(704, 64)} non-finite")


if __name__ == "__main__":
    main()
