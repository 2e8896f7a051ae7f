"""Compute dtypes: the adapter's weights in a dtype the gradient scaler takes, float16 overflow
found and met with float32, and mixed-precision mistakes as one error line (CPU stand-ins for
what a card without bfloat16 does)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from script_modules import load_script

from sqlora.core.errors import ParamError
from sqlora.core.params import LoraParams, QuantParams, TrainParams, as_dict
from sqlora.data.prompts import build_prompt
from sqlora.model.loading import load_quantized_model, load_tokenizer, lora_config
from sqlora.model.precision import compute_dtype, float16_overflow
from sqlora.predict.fanout import load_for_prompts
from sqlora.train.loop import is_precision_error
from sqlora.train.plan import BatchPlan
from sqlora.train.schedule import parameter_count, resolved_schedule
from sqlora.train.trainer import make_trainer
from sqlora.train.weights import adapter_dtype, prepare_weights

ROOT = Path(__file__).resolve().parents[1]
LORA = LoraParams(r=4, alpha=8, dropout=0.0, target_modules="all-linear")
TRAIN = {"epochs": 1, "max_steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1,
         "learning_rate": 1e-3, "lr_scheduler": "constant", "warmup_steps": 0, "max_length": 128,
         "gradient_checkpointing": False, "dequantize": "auto", "float32_norms": "auto",
         "group_by_length": False, "check_generations": False, "seed": 0, "logging_steps": 1, "save_steps": 100}
PROMPT = build_prompt("singer(singer_id*, name, country, age)", "How many singers are there?")


def test_the_adapter_dtype_is_one_the_gradient_scaler_takes():
    """float16 mixed precision unscales float32 gradients only (CUDA's kernel has no bfloat16
    version; CPU's scaler refuses float16 ones), so float16 keeps float32 master weights."""
    assert adapter_dtype(torch.bfloat16) == torch.bfloat16  # TRL's QLoRA recipe
    assert adapter_dtype(torch.bfloat16, quantized=False) == torch.float32  # PEFT's, over a 16-bit base
    assert adapter_dtype(torch.float16) == adapter_dtype(torch.float16, quantized=False) == torch.float32
    assert adapter_dtype(torch.float32) == torch.float32
    parameter = torch.nn.Parameter(torch.ones(3, dtype=adapter_dtype(torch.float16)))
    parameter.grad = torch.ones(3, dtype=parameter.dtype)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(1))
    scaler.unscale_(torch.optim.AdamW([parameter]))  # a float16 gradient would raise here


@pytest.mark.parametrize("bits, dequantize", [(4, False), (4, True), (16, False)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_trainable_weights_take_the_adapter_dtype(tiny_models, tmp_path, bits, dequantize, dtype):
    """Whatever TRL does to them when it builds a trainer (it casts them to bfloat16 over a 4-bit
    base), the trainable weights end in the dtype the compute dtype needs, and only they train."""
    from datasets import Dataset

    quant = QuantParams(bits=bits, bnb_4bit_compute_dtype="float32")
    model = load_quantized_model(tiny_models["llama"], quant, for_training=True)
    tokenizer = load_tokenizer(tiny_models["llama"])
    train = resolved_schedule(TrainParams.read({**TRAIN, "dequantize": dequantize}), parameter_count(model))
    model, held = prepare_weights(model, train, torch.float32)
    assert held.dequantized is (bits == 4 and dequantize)
    rows = [{"prompt": PROMPT, "completion": [{"role": "assistant", "content": "SELECT count(*) FROM singer"}]}] * 2
    expected = torch.bfloat16 if dtype == torch.bfloat16 and bits == 4 else torch.float32
    trainer = make_trainer(model, Dataset.from_list(rows), tokenizer, train, BatchPlan(2, 1), tmp_path, dtype, [],
                           peft_config=lora_config(LORA), quantized_base=held.quantized)
    trainable = {name: p.dtype for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert set(trainable.values()) == {expected}
    again = make_trainer(trainer.model, trainer.train_dataset, tokenizer, train, BatchPlan(1, 2), tmp_path, dtype, [],
                         quantized_base=held.quantized)
    assert {p.dtype for p in again.model.parameters() if p.requires_grad} == {expected}


def overflowing_model(source: Path, out: Path) -> Path:
    """A copy of a tiny model whose first layer's MLP writes values past float16's 65,504."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1e6)
    model.save_pretrained(out)
    load_tokenizer(source).save_pretrained(out)
    return out


def test_float16_overflow_names_the_first_layer_past_the_range(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(tiny_models["llama"])
    texts = ["SELECT name FROM singer WHERE age > 30"]
    healthy = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float16)
    assert float16_overflow(healthy, tokenizer, texts) is None
    broken_dir = overflowing_model(tiny_models["llama"], tmp_path / "broken")
    broken = AutoModelForCausalLM.from_pretrained(broken_dir, dtype=torch.float16)
    assert float16_overflow(broken, tokenizer, texts) == \
        "float16 overflows in this model: the output of layer 1 of 2 passes 65,504"
    as_float32 = AutoModelForCausalLM.from_pretrained(broken_dir, dtype=torch.float32)
    assert float16_overflow(as_float32, tokenizer, texts) is None  # only float16 is checked
    assert broken.training is False


def test_prediction_computes_in_float32_where_float16_overflows(tiny_models, tmp_path, capsys):
    broken = overflowing_model(tiny_models["llama"], tmp_path / "broken")
    quant = QuantParams(bits=16, bnb_4bit_compute_dtype="float16")
    model, _, dtype = load_for_prompts(broken, broken, quant, [PROMPT], device="cpu")
    assert dtype == torch.float32 and model.dtype == torch.float32
    assert "float16 overflows in this model" in capsys.readouterr().out
    model, _, dtype = load_for_prompts(tiny_models["llama"], tiny_models["llama"], quant, [PROMPT], device="cpu")
    assert dtype == torch.float16 and model.dtype == torch.float16


def test_the_train_stage_trains_in_float32_where_float16_overflows(tiny_models, tmp_path, monkeypatch, capsys):
    broken = overflowing_model(tiny_models["llama"], tmp_path / "broken")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["quant"] = as_dict(QuantParams(bits=16, bnb_4bit_compute_dtype="float16"))
    params["lora"], params["train"] = as_dict(LORA), TRAIN
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    row = {"prompt": PROMPT, "completion": [{"role": "assistant", "content": "SELECT count(*) FROM singer"}]}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    monkeypatch.setattr("sys.argv", [
        "train.py", "--base", str(broken), "--train", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "adapter"),
        "--checkpoints", str(tmp_path / "ckpt"), "--metrics", str(tmp_path / "train.json"),
        "--details", str(tmp_path / "details.json"), "--loss-curve", str(tmp_path / "loss.csv"),
        "--params", str(tmp_path / "params.yaml")])
    load_script("stages/train.py").main()
    assert "float16 overflows in this model: the output of layer 1 of 2" in capsys.readouterr().out
    assert json.loads((tmp_path / "details.json").read_text())["compute_dtype"] == "float32"
    record = json.loads((tmp_path / "adapter" / "sqlora_adapter.json").read_text())
    assert record["compute_dtype"] == "float32" and record["quant"]["bnb_4bit_compute_dtype"] == "float32"
    shutil.rmtree(tmp_path / "ckpt")


def test_bfloat16_on_a_card_without_it_names_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA GeForce GTX 1660 SUPER")
    assert compute_dtype("auto") == torch.float16
    with pytest.raises(ParamError, match=r"quant.bnb_4bit_compute_dtype = 'bfloat16': NVIDIA GeForce GTX 1660 SUPER "
                                         r"has no bfloat16; set it to auto or float16"):
        compute_dtype("bfloat16")


@pytest.mark.parametrize("message, expected", [
    ('"_amp_foreach_non_finite_check_and_unscale_cuda" not implemented for \'BFloat16\'', True),
    ("Attempting to unscale FP16 gradients.", True),
    ("expected mat1 and mat2 to have the same dtype, but got: float != c10::Half", True),
    ("CUDA error: an illegal memory access was encountered", False),
])
def test_mixed_precision_errors_are_told_from_others(message, expected):
    assert is_precision_error(RuntimeError(message)) is expected


def test_base_weights_are_measured_as_held(tiny_models):
    """metrics/train.json's base_weights_mb: 4 bits a weight (and constants) in the quantized
    layers, 16 bits where they are held dequantized, and every other weight as it is, tied ones once."""
    from sqlora.train.weights import weight_bytes

    plain = load_quantized_model(tiny_models["llama"], QuantParams(bits=16, bnb_4bit_compute_dtype="float32"))
    everything = sum(p.numel() for p in plain.parameters())
    assert weight_bytes(plain) == 4 * everything
    quantized = load_quantized_model(tiny_models["llama"], QuantParams(bits=4, bnb_4bit_compute_dtype="float32"),
                                     for_training=True)
    linear = sum(m.in_features * m.out_features for n, m in plain.named_modules()
                 if isinstance(m, torch.nn.Linear) and "layers" in n)
    other = everything - linear
    four_bit = weight_bytes(quantized)
    assert 4 * other + linear / 2 < four_bit < 4 * other + linear / 2 * 1.2  # packed weights + constants
    train = resolved_schedule(TrainParams.read({**TRAIN, "dequantize": True}), parameter_count(quantized))
    _, held = prepare_weights(quantized, train, torch.float16)
    assert held.dequantized and held.base_weights_mb * 2**20 == pytest.approx(4 * other + 2 * linear, rel=1e-6)
