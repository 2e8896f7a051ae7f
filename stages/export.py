"""export: merge the LoRA adapter into the dequantized base and save one plain transformers
model (safetensors + tokenizer) that loads without PEFT or bitsandbytes, with the adapter's
training record (how its prompts were made, which `sqlora ask` reads back)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import replace_dir, staging_area
from sqlora.core.params import Params
from sqlora.model.loading import ADAPTER_RECORD, is_adapter, load_tokenizer, merged_model, tokenizer_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adapter", type=Path, default=Path("outputs/adapter"))
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--out", type=Path, default=Path("outputs/merged"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = Params.read(args.params)
    quant, trust_remote_code = params.quant, params.model.trust_remote_code
    if not is_adapter(args.adapter):
        raise SqloraError(f"{args.adapter} holds no LoRA adapter (run quantize-and-train first)")

    model = merged_model(args.adapter, args.base, quant, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(tokenizer_dir(args.adapter, args.base), trust_remote_code)
    with staging_area(args.out) as staging:
        merged = staging / args.out.name
        model.save_pretrained(merged)
        tokenizer.save_pretrained(merged)
        if (args.adapter / ADAPTER_RECORD).is_file():
            shutil.copyfile(args.adapter / ADAPTER_RECORD, merged / ADAPTER_RECORD)
        replace_dir(merged, args.out)
    print(f"wrote {args.out}: load it with AutoModelForCausalLM.from_pretrained({str(args.out)!r})")


if __name__ == "__main__":
    run_stage(main)
