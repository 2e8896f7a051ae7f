"""prepare-model: turn model.name_or_path (hub id, folder, .gguf, packaged .gguf) into one
16-bit safetensors folder with its tokenizer, which every later stage loads."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlora.core.errors import run_stage
from sqlora.core.files import replace_dir, staging_area
from sqlora.core.params import Params
from sqlora.model.loading import model_source, prepare_base_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    model = Params.read(args.params).model
    source = model_source(model)
    print(f"base model: {source.kind} {source.location}")

    with staging_area(args.out) as staging:
        new_model = prepare_base_model(source, staging / args.out.name,
                                       trust_remote_code=model.trust_remote_code)
        replace_dir(new_model, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
