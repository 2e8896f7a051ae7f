"""prepare-model: turn model.name_or_path (hub id, folder, .gguf, packaged .gguf) into one
16-bit safetensors folder with its tokenizer, which every later stage loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sqlora.errors import run_stage  # noqa: E402
from sqlora.files import replace_dir, staging_area  # noqa: E402
from sqlora.modeling import check_model_params, prepare_base_model  # noqa: E402
from sqlora.params import load_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    model_params = load_section("model", args.params)
    source = check_model_params(model_params)
    print(f"base model: {source.kind} {source.location}")

    with staging_area(args.out) as staging:
        new_model = prepare_base_model(source, staging / args.out.name,
                                       trust_remote_code=model_params["trust_remote_code"])
        replace_dir(new_model, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
