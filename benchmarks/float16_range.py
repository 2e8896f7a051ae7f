"""How large a model's activations grow, and whether float16 (largest value 65,504) holds them.

For each model (a .gguf file or a model folder), one forward pass over a few dev prompts in
float32, then the same in float16: the largest |value| each layer writes, and the first layer
whose float16 output is not finite. Runs on the CPU (float16 matmuls accumulate in float32 there
as on a GPU, and the residual stream is stored in float16 the same way).

    python benchmarks/float16_range.py MODEL [MODEL ...] [--dev data/prepared/dev.jsonl] [--prompts 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sqlora.data.prompts import build_prompt, prompt_text
from sqlora.model.precision import float16_overflow

FLOAT16_MAX = 65504.0
FALLBACK_PROMPT = build_prompt(
    "singer(singer_id*, name, country, song_name, song_release_year, age, is_male)\n"
    "concert(concert_id*, concert_name, theme, stadium_id, year)", "How many singers are there?")


def load(path: Path, dtype):
    kwargs = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
    folder = path.parent if path.suffix == ".gguf" else path
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **kwargs).eval(), tokenizer


def largest_values(model, ids) -> list[float]:
    """The largest |value| of the embeddings and of each layer's output."""
    with torch.no_grad():
        states = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    return [float(state.float().abs().max()) for state in states]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--dev", type=Path, help="dev.jsonl written by preprocess (default: one built prompt)")
    parser.add_argument("--prompts", type=int, default=4)
    args = parser.parse_args()
    prompts = [FALLBACK_PROMPT]
    if args.dev:
        with args.dev.open(encoding="utf-8") as f:
            prompts = [json.loads(line)["prompt"] for line, _ in zip(f, range(args.prompts))]

    print("| model | layers | largest value, float32 | at layer | headroom to 65,504 | float16 |")
    print("|---|---|---|---|---|---|")
    for path in args.models:
        model, tokenizer = load(path, torch.float32)
        texts = [prompt_text(tokenizer, p) for p in prompts]
        largest = [0.0]
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            values = largest_values(model, ids)
            largest = [max(a, b) for a, b in zip(values, largest)] if len(largest) == len(values) else values
        peak = max(largest)
        layer = largest.index(peak)
        verdict = float16_overflow(model.to(torch.float16), tokenizer, texts) or "holds"
        print(f"| {path.name} | {len(largest) - 1} | {peak:,.0f} | {layer} | {FLOAT16_MAX / peak:.2f}x | {verdict} |",
              flush=True)


if __name__ == "__main__":
    main()
