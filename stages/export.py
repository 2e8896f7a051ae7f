"""export: merge the LoRA adapter into the dequantized base and save one plain transformers
model (safetensors + tokenizer) that loads without PEFT or bitsandbytes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sqlora.errors import SqloraError, run_stage  # noqa: E402
from sqlora.files import replace_dir, staging_area  # noqa: E402
from sqlora.generation import is_adapter, merged_model, tokenizer_dir  # noqa: E402
from sqlora.modeling import check_quant_params, load_tokenizer, trust_remote_code_param  # noqa: E402
from sqlora.params import load_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adapter", type=Path, default=Path("outputs/adapter"))
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--out", type=Path, default=Path("outputs/merged"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    quant = check_quant_params(load_section("quant", args.params))
    trust_remote_code = trust_remote_code_param(args.params)
    if not is_adapter(args.adapter):
        raise SqloraError(f"{args.adapter} holds no LoRA adapter (run quantize-and-train first)")

    model = merged_model(args.adapter, args.base, quant, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(tokenizer_dir(args.adapter, args.base), trust_remote_code)
    with staging_area(args.out) as staging:
        merged = staging / args.out.name
        model.save_pretrained(merged)
        tokenizer.save_pretrained(merged)
        replace_dir(merged, args.out)
    print(f"wrote {args.out}: load it with AutoModelForCausalLM.from_pretrained({str(args.out)!r})")


if __name__ == "__main__":
    run_stage(main)
