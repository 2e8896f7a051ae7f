"""Which devices a stage runs on, how much GPU memory it may take, and what it says about them."""

from __future__ import annotations

import os
import shutil
import subprocess

from ..core.errors import SqloraError

# A cap on the GPU memory this process may take, in GiB: a stand-in for a smaller card.
MEMORY_CAP_VARIABLE = "SQLORA_GPU_MEMORY_GB"


def default_device() -> str:
    """This process's GPU (one per process under `accelerate launch`), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def cap_gpu_memory() -> float | None:
    """Apply SQLORA_GPU_MEMORY_GB (if set) to every visible GPU; returns the cap in GiB.

    torch then raises out-of-memory past the cap, as on a card that size, and the stages' own
    fallbacks (smaller training micro-batches, halved prediction batches) take over.
    """
    text = os.environ.get(MEMORY_CAP_VARIABLE, "").strip()
    if not text:
        return None
    try:
        cap = float(text)
    except ValueError:
        cap = -1.0
    if not cap > 0:
        raise SqloraError(f"{MEMORY_CAP_VARIABLE} = {text!r}: must be a number of GiB > 0, such as 6")
    import torch

    if not torch.cuda.is_available():
        return None
    for index in range(torch.cuda.device_count()):
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / total), index)
    return cap


def describe_device() -> str:
    """One line on what this stage computes on, with a warning when a GPU sits unused."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        cap = os.environ.get(MEMORY_CAP_VARIABLE)
        capped = f", capped at {cap} GiB by {MEMORY_CAP_VARIABLE}" if cap else ""
        return f"device: {name} ({total:.0f} GiB{capped}), torch {torch.__version__}"
    gpu = nvidia_gpu_name()
    if gpu:
        why = ("it is a CPU-only build" if torch.version.cuda is None
               else f"it was built for CUDA {torch.version.cuda}, which this driver may not support")
        return (f"warning: an NVIDIA GPU is present ({gpu}) but torch {torch.__version__} cannot use it "
                f"({why}); this stage runs on the CPU, many times slower. Install a CUDA build of torch "
                "(docs/INSTALL.md)")
    return f"device: CPU (no CUDA GPU), torch {torch.__version__}"


def guard_attention_kernels() -> str | None:
    """Turn off cuDNN's attention kernel for this process if its backward pass is broken here.

    On H100/H200 with torch >= 2.11, cuDNN's scaled-dot-product-attention backward returns NaN
    gradients for the queries when an explicit mask is passed, the sequence length is 64 mod 128,
    and a row's attention logits are all very negative, as in Qwen2.5's outlier heads
    (pytorch/pytorch#196678). A padded training batch meets the first two conditions often. The
    check runs that case on this card (milliseconds); where the gradients are not finite, training
    uses PyTorch's other attention kernels, which are exact there. Returns what it did, or None.
    """
    import math

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available() or not torch.backends.cuda.cudnn_sdp_enabled():
        return None
    generator = torch.Generator(device="cuda").manual_seed(0)
    for head_dim in (64, 128):
        length = 192  # 64 mod 128
        q, k, v = (torch.randn(1, 2, length, head_dim, device="cuda", generator=generator).to(torch.bfloat16)
                   for _ in range(3))
        q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(head_dim)  # every logit about -120
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        mask = torch.ones(length, length, dtype=torch.bool, device="cuda").tril()[None, None]
        try:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                out.backward(torch.ones_like(out))
        except RuntimeError:  # cuDNN attention not available for this case: not used either
            continue
        if not all(bool(torch.isfinite(t.grad).all()) for t in (q, k, v)):
            torch.backends.cuda.enable_cudnn_sdp(False)
            return ("cuDNN attention gave non-finite gradients on this GPU (pytorch/pytorch#196678); "
                    "training uses PyTorch's other attention kernels")
    return None


def gpu_bytes_free(device) -> int | None:
    """Bytes this process may still allocate on `device`: what the card has free and what torch
    holds unused, within the SQLORA_GPU_MEMORY_GB cap; None on the CPU."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    free_on_card, total = torch.cuda.mem_get_info(index)
    allocated, reserved = torch.cuda.memory_allocated(index), torch.cuda.memory_reserved(index)
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.5
    if fraction is not None:
        allowed = int(total * fraction(index))
    else:
        try:
            allowed = min(total, int(float(os.environ[MEMORY_CAP_VARIABLE]) * 2**30))
        except (KeyError, ValueError):
            allowed = total
    return max(0, min(free_on_card + reserved, allowed) - allocated)


def watch_gpu_peak(device) -> int | None:
    """Start measuring the peak of `device`'s allocated bytes; returns the bytes allocated now
    (None on the CPU). `gpu_peak` then reads the peak."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def gpu_peak(device) -> int | None:
    """The most bytes allocated on `device` since `watch_gpu_peak` (None on the CPU)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device)


def free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def nvidia_gpu_name() -> str | None:
    """The first NVIDIA GPU that nvidia-smi lists, if the driver is installed."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = listed.strip().splitlines()[0] if listed.strip() else ""
    return first.split(":", 1)[1].split("(UUID", 1)[0].strip() if first.startswith("GPU") else None


def prediction_devices(num_gpus: int) -> list[str]:
    """The GPUs to spread questions over (`num_gpus` 0 = all visible), or the CPU."""
    import torch

    if not torch.cuda.is_available():
        return ["cpu"]
    count = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(count if num_gpus == 0 else min(num_gpus, count))]
