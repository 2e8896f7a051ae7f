"""export: merge the LoRA adapter into the dequantized base and save it as one model that runs
without PEFT or bitsandbytes: a plain transformers folder (safetensors + tokenizer), or with
--gguf TYPE a GGUF file for llama.cpp, Ollama and LM Studio (DIR/model.gguf) and an Ollama
Modelfile (DIR/Modelfile) that asks it questions the way it was trained. Either way the adapter's
training record goes with it (how its prompts were made, which `sqlora ask` reads back)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.files import replace_dir, staging_area
from sqlora.core.params import Params
from sqlora.core.progress import say
from sqlora.model.gguf_export import GGUF_TYPES, check_exportable, export_gguf
from sqlora.model.loading import ADAPTER_RECORD, is_adapter, load_tokenizer, merged_model, require_base, tokenizer_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adapter", type=Path, default=Path("outputs/adapter"))
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--out", type=Path, help="folder to write (default: outputs/merged; outputs/gguf with --gguf)")
    parser.add_argument("--gguf", metavar="TYPE", help=f"write a GGUF file instead: {' or '.join(GGUF_TYPES)}")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = Params.read(args.params)
    quant, trust_remote_code = params.quant, params.model.trust_remote_code
    out = args.out or Path("outputs/gguf" if args.gguf else "outputs/merged")
    if not is_adapter(args.adapter):
        raise SqloraError(f"{args.adapter} holds no LoRA adapter (run quantize-and-train first)")
    require_base(args.adapter, args.base)
    wanted = check_exportable(args.base, args.gguf) if args.gguf else None

    say(f"merging {args.adapter} into {args.base} ({quant.bits}-bit, dequantized)")
    model = merged_model(args.adapter, args.base, quant, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(tokenizer_dir(args.adapter, args.base), trust_remote_code)
    if wanted is not None:
        written = export_gguf(model, tokenizer, args.base, args.adapter, out, wanted)
        say(f"wrote {written} ({wanted.name}, {written.stat().st_size / 1e6:,.0f} MB) and {out / 'Modelfile'}: "
            f"llama-cli -m {written}, or: cd {out} && ollama create sqlora -f Modelfile")
        return
    with staging_area(out) as staging:
        merged = staging / out.name
        model.save_pretrained(merged)
        tokenizer.save_pretrained(merged)
        if (args.adapter / ADAPTER_RECORD).is_file():
            shutil.copyfile(args.adapter / ADAPTER_RECORD, merged / ADAPTER_RECORD)
        replace_dir(merged, out)
    say(f"wrote {out}: load it with AutoModelForCausalLM.from_pretrained({str(out)!r})")


if __name__ == "__main__":
    run_stage(main)
