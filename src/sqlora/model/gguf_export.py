"""Base model + LoRA adapter as one GGUF file, for llama.cpp, Ollama and LM Studio, with an
Ollama Modelfile that asks the model questions the way it was trained.

The weights written are those of `merged_model` (the base quantized per `quant.*`, dequantized,
the adapter merged in), which is what predict runs. The rest of the file comes from:

- a base prepared from a GGUF file (the default model): that file. Its metadata (architecture,
  hyper-parameters, tokenizer) is kept, and each merged weight is written under the name and shape
  the file gave it; tensors that hold no model weight (Llama 3's rope_freqs) are copied as they are;
- a base prepared from a model folder or hub id: its config and tokenizer, written as llama.cpp's
  convert_hf_to_gguf.py writes them, for the model types in FAMILIES.

Either way the chat template is the one the adapter was trained with, or none for a model trained
on the plain prompt format. Tensor layouts follow llama.cpp: the Q and K rows of llama models are
permuted for its rotary embedding (transformers permutes them back when it loads the file), Gemma's
norms are stored as 1 + weight, and 1-D tensors and norms stay F32. `q8_0` quantizes every 2-D
weight whose rows hold whole 32-value blocks and keeps the others F16, as convert_hf_to_gguf.py does.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ..core.errors import SqloraError
from ..core.files import file_sha256, replace_dir, staging_area
from ..core.progress import progress
from ..data.prompts import SYSTEM_PROMPT, build_prompt, chat_end_token_ids, has_chat_template, prompt_text
from ..data.values import HINTS_HEADER
from .loading import ADAPTER_RECORD, model_facts, read_adapter_record

GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"

Q = gguf.GGMLQuantizationType
V = gguf.GGUFValueType


@dataclass(frozen=True)
class GgufType:
    name: str
    file_type: int  # general.file_type, as llama.cpp numbers them
    tensor_type: Any  # what each 2-D weight becomes


GGUF_TYPES = {
    "f16": GgufType("f16", gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "q8_0": GgufType("q8_0", gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}

# transformers model type -> llama.cpp architecture
FAMILIES = {"llama": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3"}
ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "gemma3": gguf.MODEL_ARCH.GEMMA3}

# llama.cpp names a BPE tokenizer's pre-tokenizer by the sha256 of the ids it gives CHECK_TEXT
# (convert_hf_to_gguf.py, get_vocab_base_pre): the names of this project's families' tokenizers
CHECK_TEXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
              "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
              "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
              "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
              "sure I'll make it, 'D you like some tea? We'Ve a'lL")
PRE_TOKENIZER_HASHES = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3.x
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5, Qwen2, Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3 embedding
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
# A vocabulary the hashes do not know (a resized or retrained one) is named by its pre-tokenizer's
# split pattern instead: the patterns llama.cpp runs for these names (llama-vocab.cpp)
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_SPLITS = {QWEN2_SPLIT: "qwen2", QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|"): "llama-bpe"}


def gguf_type(name: str) -> GgufType:
    """The GGUF type named on the command line; a type the gguf package cannot write is one error."""
    key = name.strip().lower()
    if key in GGUF_TYPES:
        return GGUF_TYPES[key]
    if key.startswith(("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq")):
        raise SqloraError(f"--gguf {name}: the gguf package quantizes to no k-quant; export f16 and quantize "
                          f"it with llama.cpp: llama-quantize model.gguf model-{key}.gguf {key.upper()}")
    raise SqloraError(f"--gguf {name}: choose one of {', '.join(GGUF_TYPES)}")


@dataclass
class Field:
    key: str
    value: Any
    type: Any
    sub_type: Any = None


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]  # as numpy holds it (rows last)
    type: Any
    data: Callable[[], np.ndarray]  # the encoded data, made when it is written

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.type]
        return math.prod(self.shape) // block * size


@dataclass
class Layout:
    """Everything a GGUF file holds besides the merged weights, and where those go."""
    arch: str
    fields: list[Field]
    names: dict[str, str]  # model parameter -> GGUF tensor name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # GGUF name -> shape it must have
    copied: list[Tensor] = field(default_factory=list)  # written as they are


def check_exportable(base_dir: Path, type_name: str) -> GgufType:
    """The GGUF type, once the base is known to be one this module can write (before any merge)."""
    wanted = gguf_type(type_name)
    source = gguf_source(base_dir)
    if source is not None:
        arch = gguf.GGUFReader(source).fields["general.architecture"].contents()
        if arch not in ARCHITECTURES:
            raise SqloraError(f"{source}: GGUF architecture {arch!r} is not one sqlora exports (it writes "
                              f"{', '.join(ARCHITECTURES)}); missing: how that architecture lays out its tensors")
        return wanted
    config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    family_of(config.get("model_type"))
    return wanted


def family_of(model_type: str | None) -> str:
    if model_type not in FAMILIES:
        raise SqloraError(f"model type {model_type!r}: sqlora writes GGUF for {', '.join(FAMILIES)} only; missing: "
                          "its llama.cpp architecture, metadata and tensor names")
    return FAMILIES[model_type]


def gguf_source(base_dir: Path) -> Path | None:
    """The GGUF file a base folder was prepared from; None for a base prepared from a model folder
    or hub id. A file gone or changed since is one error: its metadata would not fit the weights."""
    source = model_facts(base_dir).get("source") or {}
    if source.get("kind") != "gguf":
        return None
    location = Path(source["location"])
    if not location.is_file():
        raise SqloraError(f"{base_dir} was prepared from {location}, which is gone: the GGUF export takes its "
                          "metadata from that file (reinstall it, or prepare the base again)")
    if source.get("sha256") and file_sha256(location) != source["sha256"]:
        raise SqloraError(f"{location} changed since {base_dir} was prepared from it: prepare the base again")
    return location


def export_gguf(model, tokenizer, base_dir: Path, adapter_dir: Path, out_dir: Path, wanted: GgufType) -> Path:
    """Write `out_dir/model.gguf`, `out_dir/Modelfile` and the adapter's training record for the
    merged `model`, all or nothing. `tokenizer` is the one the adapter was trained with."""
    source = gguf_source(base_dir)
    state = merged_state(model)
    if source is not None:
        layout = layout_from_gguf(source, state)
    else:
        layout = layout_from_config(model.config, state, tokenizer, tokenizer_folders(adapter_dir, base_dir),
                                    base_name(base_dir))
    layout.fields += chat_fields(tokenizer) + [Field("general.file_type", int(wanted.file_type), V.UINT32)]
    tensors = plan_tensors(state, layout, model.config, wanted)
    record = read_adapter_record(adapter_dir) or {}
    modelfile = modelfile_text(tokenizer, record, add_bos=field_value(layout, "tokenizer.ggml.add_bos_token"))

    size = file_size(layout, tensors)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    free = free_bytes(out_dir.parent)
    if free < size + (16 << 20):
        raise SqloraError(f"not enough disk space for {out_dir / GGUF_FILE}: it takes {megabytes(size)}, and "
                          f"{out_dir.parent} has {megabytes(free)} free")
    with staging_area(out_dir) as staging:
        new = staging / out_dir.name
        new.mkdir()
        try:
            write_gguf(new / GGUF_FILE, layout, tensors)
        except OSError as error:
            raise SqloraError(f"cannot write {out_dir / GGUF_FILE}: {error.strerror or error}") from None
        (new / MODELFILE).write_text(modelfile, encoding="utf-8", newline="\n")
        if record:
            shutil.copyfile(Path(adapter_dir) / ADAPTER_RECORD, new / ADAPTER_RECORD)
        replace_dir(new, out_dir)
    return out_dir / GGUF_FILE


def merged_state(model) -> dict:
    """The model's weights by parameter name; a tied output layer appears once, as the embedding."""
    state = dict(model.state_dict())
    if getattr(model.config, "tie_word_embeddings", False) or getattr(model.config.get_text_config(),
                                                                        "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return state


def gguf_names(state: dict, arch: str, blocks: int) -> dict[str, str]:
    names = gguf.get_tensor_name_map(ARCHITECTURES[arch], blocks)
    found = {}
    for parameter in state:
        stem, _, suffix = parameter.rpartition(".")
        name = names.get_name(stem)
        if name is None:
            raise SqloraError(f"weight {parameter} has no GGUF name in llama.cpp's {arch} architecture")
        found[parameter] = f"{name}.{suffix}"
    return found


def layout_from_gguf(source: Path, state: dict) -> Layout:
    """The source file's metadata; each weight under the source's name, checked against its shape."""
    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    if arch not in ARCHITECTURES:
        raise SqloraError(f"{source}: GGUF architecture {arch!r} is not one sqlora exports")
    skip = {"general.architecture", "general.file_type", "tokenizer.chat_template"}
    fields = [copied_field(key, value) for key, value in reader.fields.items()
              if not key.startswith("GGUF.") and key not in skip]
    blocks = reader.fields[f"{arch}.block_count"].contents()
    names = gguf_names(state, arch, blocks)
    stored = {t.name: t for t in reader.tensors}
    shapes = {}
    for parameter, name in names.items():
        if name not in stored:
            raise SqloraError(f"{source} has no tensor {name} for weight {parameter}: the base model was not "
                              "prepared from this file")
        shapes[name] = tuple(int(n) for n in reversed(stored[name].shape))
    copied = [Tensor(t.name, tuple(int(n) for n in reversed(t.shape)), t.tensor_type, lambda t=t: np.asarray(t.data))
              for t in reader.tensors if t.name not in shapes]
    for tensor in copied:
        if tensor.name.startswith(("token_embd.", "output.", "blk.")):
            raise SqloraError(f"{source}: tensor {tensor.name} matches no weight of the merged model")
    return Layout(arch, fields, names, shapes, copied)


def copied_field(key: str, source) -> Field:
    kind = source.types[0]
    if kind == V.ARRAY:
        if len(source.types) != 2:
            raise SqloraError(f"GGUF field {key}: arrays of arrays are not copied")
        sub = source.types[1]
        value = [bytes(source.parts[i]) for i in source.data] if sub == V.STRING else source.contents()
        return Field(key, value, V.ARRAY, sub)
    if kind == V.STRING:
        return Field(key, bytes(source.parts[source.data[0]]), V.STRING)
    return Field(key, source.contents(), kind)


def layout_from_config(config, state: dict, tokenizer, tokenizer_dirs: list[Path], name: str) -> Layout:
    """Metadata written from the model's config and tokenizer, as convert_hf_to_gguf.py writes it."""
    arch = family_of(config.model_type)
    fields = [Field("general.type", "model", V.STRING), Field("general.name", f"{name} (sqlora)", V.STRING),
              Field("general.quantization_version", gguf.GGML_QUANT_VERSION, V.UINT32)]
    put = hparams_adder(fields, arch)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = rope_settings(config)
    put("block_count", config.num_hidden_layers)
    put("context_length", config.max_position_embeddings)
    put("embedding_length", config.hidden_size)
    put("feed_forward_length", config.intermediate_size)
    put("attention.head_count", config.num_attention_heads)
    put("attention.head_count_kv", config.num_key_value_heads)
    put("rope.freq_base", float(rope.get("rope_theta", 10000.0)))
    put("attention.layer_norm_rms_epsilon", float(config.rms_norm_eps))
    put("attention.key_length", head_dim)
    put("attention.value_length", head_dim)
    copied: list[Tensor] = []
    rope_type = rope.get("rope_type") or "default"
    if rope_type == "linear":
        put("rope.scaling.type", "linear")
        put("rope.scaling.factor", float(rope["factor"]))
    elif rope_type == "llama3" and arch == "llama":
        factors = llama3_rope_factors(rope, head_dim)
        copied.append(Tensor("rope_freqs.weight", factors.shape, Q.F32, lambda: factors))
    elif rope_type != "default":
        raise SqloraError(f"rope scaling {rope_type!r} of this {config.model_type} model is not written to GGUF "
                          "by sqlora; missing: its llama.cpp rope settings")
    if arch == "llama":
        put("vocab_size", config.vocab_size)
        put("rope.dimension_count", head_dim)
    elif arch == "qwen2" and getattr(config, "use_sliding_window", False):
        raise SqloraError("qwen2 with sliding-window attention: llama.cpp's qwen2 attends to the whole context; "
                          "missing: a GGUF setting for the window")
    elif arch == "gemma3":
        gemma3_fields(config, put, head_dim)
    fields += tokenizer_fields(tokenizer, tokenizer_dirs, config.vocab_size, arch)
    return Layout(arch, fields, gguf_names(state, arch, config.num_hidden_layers), copied=copied)


def hparams_adder(fields: list[Field], arch: str) -> Callable[[str, Any], None]:
    def put(key: str, value: Any) -> None:
        fields.append(typed_field(f"{arch}.{key}", value))
    return put


def typed_field(key: str, value: Any) -> Field:
    """A field in the types llama.cpp's writer gives it: whole numbers uint32, fractions float32,
    lists int32, float32, bool or strings."""
    if isinstance(value, bool):
        return Field(key, value, V.BOOL)
    if isinstance(value, int):
        return Field(key, value, V.UINT32)
    if isinstance(value, float):
        return Field(key, value, V.FLOAT32)
    if isinstance(value, (str, bytes)):
        return Field(key, value, V.STRING)
    first = value[0]
    sub = (V.BOOL if isinstance(first, bool) else V.INT32 if isinstance(first, int)
           else V.FLOAT32 if isinstance(first, float) else V.STRING)
    return Field(key, list(value), V.ARRAY, sub)


def rope_settings(config) -> dict:
    rope = getattr(config, "rope_parameters", None) or {}
    rope = rope.get("full_attention", rope)
    if not rope.get("rope_theta") and getattr(config, "rope_theta", None):
        rope = {**rope, "rope_theta": config.rope_theta}
    return rope


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """Llama 3's frequency factors, which llama.cpp reads from a rope_freqs tensor."""
    base = rope.get("rope_theta", 10000.0)
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * math.pi * base ** (i / head_dim)
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def gemma3_fields(config, put, head_dim: int) -> None:
    """Gemma 3's settings beyond the common ones; its attention scale is fixed in llama.cpp."""
    scale_from = config.hidden_size // config.num_attention_heads if config.num_hidden_layers == 62 else head_dim
    if getattr(config, "query_pre_attn_scalar", scale_from) != scale_from:
        raise SqloraError(f"gemma3 with query_pre_attn_scalar {config.query_pre_attn_scalar}: llama.cpp scales "
                          f"queries by 1/sqrt({scale_from}); missing: a GGUF setting for the scale")
    if getattr(config, "final_logit_softcapping", None):
        put("final_logit_softcapping", float(config.final_logit_softcapping))
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "sliding_window", None) and "sliding_attention" in layer_types:
        put("attention.sliding_window", config.sliding_window)
        put("attention.sliding_window_pattern", [kind == "sliding_attention" for kind in layer_types])
        local = (getattr(config, "rope_parameters", None) or {}).get("sliding_attention", {})
        if local.get("rope_theta"):
            put("rope.freq_base_swa", float(local["rope_theta"]))


def tokenizer_fields(tokenizer, folders: list[Path], vocab_size: int, arch: str) -> list[Field]:
    """The vocabulary as llama.cpp reads it: SentencePiece from tokenizer.model where there is one,
    else byte-level BPE named by its pre-tokenizer; padded with unused tokens to the embedding's rows."""
    spm = next((folder / "tokenizer.model" for folder in folders if (folder / "tokenizer.model").is_file()), None)
    if spm is not None:
        fields = sentencepiece_fields(spm, tokenizer, vocab_size)
        if arch == "gemma3":
            fields.append(Field("tokenizer.ggml.add_space_prefix", False, V.BOOL))
    elif sentencepiece_style(tokenizer):
        raise SqloraError("the tokenizer is a SentencePiece one: llama.cpp needs its tokenizer.model, which is in "
                          f"none of {', '.join(map(str, folders))} (copy the model's tokenizer.model into the base)")
    else:
        fields = bpe_fields(tokenizer, folders, vocab_size)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(token_id, int):
            key = "padding" if kind == "pad" else "unknown" if kind == "unk" else kind
            fields.append(Field(f"tokenizer.ggml.{key}_token_id", token_id, V.UINT32))
    adds_bos, adds_eos = special_tokens_added(tokenizer)
    fields += [Field("tokenizer.ggml.add_bos_token", adds_bos, V.BOOL),
               Field("tokenizer.ggml.add_eos_token", adds_eos, V.BOOL)]
    return fields


def bpe_fields(tokenizer, folders: list[Path], vocab_size: int) -> list[Field]:
    pre_tokenizer = pre_tokenizer_name(tokenizer)
    merges_from = next((folder for folder in folders if (folder / "tokenizer.json").is_file()), None)
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)  # its notes on post-processors concern no merge
    merges = gguf.SpecialVocab(merges_from, load_merges=True).merges if merges_from else []
    if not merges:
        raise SqloraError("the tokenizer has no BPE merges (tokenizer.json) to write to GGUF")
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(max(vocab_size, len(by_id))):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            if not added[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if added[i].special or (token.startswith("<|") and token.endswith("|>")):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
            tokens.append(token)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return [Field("tokenizer.ggml.model", "gpt2", V.STRING), Field("tokenizer.ggml.pre", pre_tokenizer, V.STRING),
            Field("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING),
            Field("tokenizer.ggml.token_type", [int(t) for t in types], V.ARRAY, V.INT32),
            Field("tokenizer.ggml.merges", merges, V.ARRAY, V.STRING)]


def sentencepiece_style(tokenizer) -> bool:
    """Whether the tokenizer is SentencePiece's, converted (BPE over text with a byte fallback),
    rather than byte-level BPE."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and bool(json.loads(backend.to_str()).get("model", {}).get("byte_fallback"))


def pre_tokenizer_name(tokenizer) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE, by llama.cpp's check hash,
    else by the split pattern itself (GPT-2's byte-level split alone is "gpt-2")."""
    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest in PRE_TOKENIZER_HASHES:
        return PRE_TOKENIZER_HASHES[digest]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    steps = json.loads(backend.to_str()).get("pre_tokenizer") or {} if backend is not None else {}
    steps = steps.get("pretokenizers", [steps])
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") in PRE_TOKENIZER_SPLITS:
        return PRE_TOKENIZER_SPLITS[steps[0]["pattern"]["Regex"]]
    raise SqloraError(f"the tokenizer splits text in a way llama.cpp knows under none of the names sqlora writes "
                      f"({', '.join(sorted(set(PRE_TOKENIZER_HASHES.values())))}); missing: its pre-tokenizer name")


def sentencepiece_fields(path: Path, tokenizer, vocab_size: int) -> list[Field]:
    """A SentencePiece vocabulary with its scores, as convert_hf_to_gguf.py reads tokenizer.model."""
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise SqloraError(f"{path} is a SentencePiece tokenizer: install sentencepiece to write it to GGUF "
                          "(python -m pip install sentencepiece)") from None
    processor = SentencePieceProcessor()
    processor.LoadFromFile(str(path))
    size = max(vocab_size, processor.vocab_size())
    tokens = [f"[PAD{i}]".encode() for i in range(size)]
    scores = [-10000.0] * size
    types = [int(gguf.TokenType.UNUSED)] * size
    for i in range(processor.vocab_size()):
        tokens[i] = processor.IdToPiece(i).encode("utf-8")
        scores[i] = float(processor.GetScore(i))
        types[i] = int(gguf.TokenType.UNKNOWN if processor.IsUnknown(i) else gguf.TokenType.CONTROL
                       if processor.IsControl(i) else gguf.TokenType.UNUSED if processor.IsUnused(i)
                       else gguf.TokenType.BYTE if processor.IsByte(i) else gguf.TokenType.NORMAL)
    for i, token in tokenizer.added_tokens_decoder.items():
        if i < size:
            special = token.special or (token.content.startswith("<|") and token.content.endswith("|>"))
            tokens[i] = (token.content if special else token.content.replace("\u2581", " ")).encode("utf-8")
            scores[i] = -1000.0
            types[i] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    return [Field("tokenizer.ggml.model", "llama", V.STRING), Field("tokenizer.ggml.pre", "default", V.STRING),
            Field("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING),
            Field("tokenizer.ggml.scores", scores, V.ARRAY, V.FLOAT32),
            Field("tokenizer.ggml.token_type", types, V.ARRAY, V.INT32)]


def special_tokens_added(tokenizer) -> tuple[bool, bool]:
    """Whether the tokenizer puts its BOS before, and its EOS after, every text it encodes."""
    with_special = tokenizer("x")["input_ids"]
    alone = tokenizer("x", add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    extra = len(with_special) > len(alone)
    return (extra and bos is not None and with_special[0] == bos, extra and eos is not None and with_special[-1] == eos)


def chat_fields(tokenizer) -> list[Field]:
    return [Field("tokenizer.chat_template", tokenizer.chat_template, V.STRING)] if has_chat_template(tokenizer) else []


def plan_tensors(state: dict, layout: Layout, config, wanted: GgufType) -> list[Tensor]:
    """Each merged weight in llama.cpp's layout and type, then the tensors copied as they are."""
    tensors = []
    for parameter, weight in state.items():
        name = layout.names[parameter]
        shape = tuple(weight.shape)
        if name in layout.shapes and layout.shapes[name] != shape:
            raise SqloraError(f"weight {parameter} has shape {list(shape)}, the base's GGUF file "
                              f"{list(layout.shapes[name])}")
        kind = tensor_type(name, shape, wanted)
        tensors.append(Tensor(name, shape, kind, encoder(weight, parameter, name, kind, layout.arch, config)))
    return tensors + layout.copied


def tensor_type(name: str, shape: tuple[int, ...], wanted: GgufType):
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return Q.F32
    if wanted.tensor_type == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return wanted.tensor_type


def encoder(weight, parameter: str, name: str, kind, arch: str, config) -> Callable[[], np.ndarray]:
    def encode() -> np.ndarray:
        import torch

        with torch.no_grad():
            data = in_llama_cpp_layout(weight.detach().to("cpu", torch.float32), parameter, arch, config)
        encoded = gguf.quants.quantize(data.numpy(), kind)
        if kind == Q.F16 and not np.isfinite(encoded).all():
            raise SqloraError(f"weight {parameter} exceeds float16's range: export it as q8_0")
        return encoded
    return encode


def in_llama_cpp_layout(data, parameter: str, arch: str, config):
    """A transformers weight as llama.cpp stores it (convert_hf_to_gguf.py's modify_tensors)."""
    if arch == "llama" and parameter.endswith(("q_proj.weight", "q_proj.bias")):
        return rope_permuted(data, config.num_attention_heads)
    if arch == "llama" and parameter.endswith(("k_proj.weight", "k_proj.bias")):
        return rope_permuted(data, config.num_key_value_heads)
    if arch == "gemma3" and parameter.endswith("norm.weight"):
        return data + 1.0
    return data


def rope_permuted(weight, heads: int):
    """Each head's rows from transformers' rotate-half order to llama.cpp's interleaved pairs."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_gguf(path: Path, layout: Layout, tensors: list[Tensor]) -> None:
    writer = gguf.GGUFWriter(path, layout.arch)
    try:
        for item in layout.fields:
            writer.add_key_value(item.key, item.value, item.type, item.sub_type)
        for tensor in tensors:
            writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes,
                                   raw_dtype=tensor.type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in progress(tensors, desc=f"writing {path.name}", unit="tensor"):
            writer.write_tensor_data(tensor.data())
    finally:
        writer.close()


def file_size(layout: Layout, tensors: list[Tensor]) -> int:
    """The bytes the file will take, give or take a few for alignment."""
    def value_bytes(value, kind) -> int:
        if kind == V.STRING:
            return 8 + len(value.encode("utf-8") if isinstance(value, str) else value)
        return {V.UINT8: 1, V.INT8: 1, V.BOOL: 1, V.UINT16: 2, V.INT16: 2, V.UINT64: 8, V.INT64: 8,
                V.FLOAT64: 8}.get(kind, 4)

    size = 24
    for item in [*layout.fields, Field("general.architecture", layout.arch, V.STRING)]:
        size += 12 + len(item.key)
        if item.type == V.ARRAY:
            size += 12 + sum(value_bytes(v, item.sub_type) for v in item.value)
        else:
            size += value_bytes(item.value, item.type)
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    size += sum(8 + len(t.name) + 4 + 8 * len(t.shape) + 12 for t in tensors) + alignment
    return size + sum(gguf.GGUFWriter.ggml_pad(t.nbytes, alignment) for t in tensors)


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e6:.2f} MB"


def field_value(layout: Layout, key: str):
    return next((item.value for item in reversed(layout.fields) if item.key == key), None)


def tokenizer_folders(adapter_dir: Path, base_dir: Path) -> list[Path]:
    """Where the tokenizer's files are: the adapter's copy, the base's, then the folder or hub
    download the base was prepared from (transformers saves no tokenizer.model of its own)."""
    folders = [Path(adapter_dir), Path(base_dir)]
    source = model_facts(base_dir).get("source") or {}
    if source.get("kind") == "folder":
        folders.append(Path(source["location"]))
    elif source.get("kind") == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source["location"], "tokenizer.model")
        if isinstance(cached, str):
            folders.append(Path(cached).parent)
    return [folder for folder in dict.fromkeys(folders) if folder.is_dir()]


def base_name(base_dir: Path) -> str:
    source = model_facts(base_dir).get("source") or {}
    location = source.get("location") or str(base_dir)
    return Path(location).stem if source.get("kind") == "gguf" else Path(location).name


TEMPLATE_SYSTEM = "SQLORA-SYSTEM-PROMPT"
TEMPLATE_PROMPT = "SQLORA-USER-PROMPT"
TEMPLATE_ANSWER = "SQLORA-ANSWER"


def modelfile_text(tokenizer, record: dict, *, add_bos: bool | None) -> str:
    """An Ollama Modelfile: the prompt exactly as training rendered it (chat template or plain
    format), the system line it was trained with, its stop tokens, greedy decoding."""
    prompt_format = record.get("prompt_format") or {}
    system = prompt_format.get("system_prompt") or SYSTEM_PROMPT
    messages = [{"role": "system", "content": TEMPLATE_SYSTEM}, {"role": "user", "content": TEMPLATE_PROMPT}]
    text = prompt_text(tokenizer, messages)
    if text.count(TEMPLATE_SYSTEM) != 1 or text.count(TEMPLATE_PROMPT) != 1 or '"""' in text + system:
        raise SqloraError("the chat template does not render one system and one user message as an Ollama "
                          "template can hold them")
    bos = tokenizer.bos_token
    if add_bos and bos and text.startswith(bos):
        text = text[len(bos):]  # llama.cpp adds it
    stops = [tokenizer.decode([i]) for i in chat_end_token_ids(tokenizer)]
    end = stops[0] if stops else ""
    if has_chat_template(tokenizer):  # what the template writes after an answer, such as "<|im_end|>\n"
        answered = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": TEMPLATE_ANSWER}], tokenize=False)
        after = answered[answered.rfind(TEMPLATE_ANSWER) + len(TEMPLATE_ANSWER):]
        end = after if any(stop in after for stop in stops) else end
    template = (text.replace("{{", '{{ "{{" }}').replace(TEMPLATE_SYSTEM, "{{ .System }}")
                .replace(TEMPLATE_PROMPT, "{{ .Prompt }}") + "{{ .Response }}" + end)
    schema = prompt_format.get("schema_format", "compact")
    example = ("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT)" if schema == "ddl"
               else "singer(singer_id*, name, country)")
    if prompt_format.get("value_hints", True):
        example += f"\n{HINTS_HEADER}\nsinger.country = 'France'"
    question = build_prompt(example, "How many singers are from France?")[1]["content"]
    lines = [
        "# Ollama: ollama create sqlora -f Modelfile, then: ollama run sqlora",
        "# It answers one question at a time, asked as in training (the schema in its "
        f"{schema} format), e.g.:",
        *[f"#   {line}".rstrip() for line in question.splitlines()],
        f"FROM ./{GGUF_FILE}",
        f'TEMPLATE """{template}"""',
        f'SYSTEM """{system}"""',
        *[f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in dict.fromkeys(stops)],
        "PARAMETER temperature 0",
    ]
    return "\n".join(lines) + "\n"

