"""The export command: adapter merged into the dequantized base, loadable by plain transformers,
computing what base + adapter computes."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from sqlora.params import QuantParams, as_dict  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

QUANT = QuantParams(bits=4)


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    from sqlora.modeling import load_quantized_model

    work = tmp_path_factory.mktemp("export")
    base = build_tiny_model(work / "base")
    model = load_quantized_model(base, QUANT)
    # init_lora_weights=False gives a non-zero adapter, as after training
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter = work / "adapter"
    peft_model.save_pretrained(adapter)
    (work / "params.yaml").write_text(yaml.safe_dump({"quant": as_dict(QUANT), "model": {"name_or_path": str(base), "sha256": "", "trust_remote_code": False}}))
    return work, base, adapter


def test_export_writes_a_plain_model_equal_to_base_plus_adapter(base_and_adapter, run_script):
    from transformers import AutoModelForCausalLM

    from sqlora.modeling import load_for_inference

    work, base, adapter = base_and_adapter
    done = run_script("stages/export.py", "--adapter", adapter, "--base", base, "--out", work / "merged",
                      cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = AutoModelForCausalLM.from_pretrained(work / "merged")
    assert not hasattr(merged.config, "quantization_config")
    assert all(type(m).__name__ == "Linear" for n, m in merged.named_modules() if n.endswith("q_proj"))

    with_adapter, tokenizer = load_for_inference(adapter, base, QUANT)
    ids = tokenizer(["How many singers are there? SELECT count(*) FROM singer"], return_tensors="pt")
    with torch.no_grad():
        expected = with_adapter(**ids).logits
        got = merged(**ids).logits
    # bitsandbytes' CPU 4-bit matmul rounds a little differently from a dequantized fp32 matmul
    assert (expected.argmax(-1) == got.argmax(-1)).float().mean() >= 0.95
    assert (expected - got).abs().max() < 0.05 * expected.abs().max()


def test_export_without_adapter_is_one_error_line(base_and_adapter, run_script):
    work, base, _ = base_and_adapter
    done = run_script("stages/export.py", "--adapter", work / "nothing", "--base", base, "--out",
                      work / "merged2", cwd=work)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1


def test_the_adapter_is_merged_as_peft_merges_it_without_importing_peft(base_and_adapter):
    from peft import PeftModel

    from sqlora.modeling import load_dequantized_model, merge_lora_weights

    _, base, adapter = base_and_adapter
    ours = load_dequantized_model(base, QUANT)
    assert merge_lora_weights(ours, adapter)
    theirs = PeftModel.from_pretrained(load_dequantized_model(base, QUANT), str(adapter)).merge_and_unload()
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    before = load_dequantized_model(base, QUANT).state_dict()
    assert any(not torch.equal(ours_state[k], before[k]) for k in ours_state if "q_proj" in k)
    assert all(torch.equal(ours_state[k], theirs_state[k]) for k in ours_state)


@pytest.mark.parametrize("with_adapter", [True, False])
def test_a_predict_process_loads_without_peft(base_and_adapter, with_adapter):
    import subprocess
    import sys
    from pathlib import Path

    work, base, adapter = base_and_adapter
    model = adapter if with_adapter else base
    code = ("import sys; from sqlora.modeling import load_for_inference; from sqlora.params import QuantParams; "
            f"load_for_inference({str(model)!r}, {str(base)!r}, QuantParams(bits=4), dequantize=True); "
            "print('peft' in sys.modules)")
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=src))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_an_adapter_beyond_plain_lora_is_left_to_peft(base_and_adapter, tmp_path):
    import json
    import shutil

    from sqlora.modeling import load_dequantized_model, merge_lora_weights, merged_model

    _, base, adapter = base_and_adapter
    patterned = tmp_path / "patterned"
    shutil.copytree(adapter, patterned)
    config = json.loads((patterned / "adapter_config.json").read_text())
    config["alpha_pattern"] = {"q_proj": 32}
    (patterned / "adapter_config.json").write_text(json.dumps(config))
    model = load_dequantized_model(base, QUANT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not merge_lora_weights(model, patterned)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    plain, with_pattern = merged_model(adapter, base, QUANT), merged_model(patterned, base, QUANT)
    q = next(k for k in plain.state_dict() if k.endswith("q_proj.weight"))
    v = next(k for k in plain.state_dict() if k.endswith("v_proj.weight"))
    assert not torch.equal(plain.state_dict()[q], with_pattern.state_dict()[q])
    assert torch.equal(plain.state_dict()[v], with_pattern.state_dict()[v])


def test_an_adapter_for_another_model_is_one_clear_error(base_and_adapter, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from sqlora.errors import SqloraError
    from sqlora.modeling import load_dequantized_model, merge_lora_weights

    _, base, adapter = base_and_adapter
    other = tmp_path / "other"
    shutil.copytree(adapter, other)
    tensors = load_file(other / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("q_proj.lora_A.weight"))
    tensors[key] = torch.cat([tensors[key], tensors[key]], dim=1)
    save_file(tensors, other / "adapter_model.safetensors")
    with pytest.raises(SqloraError, match="does not fit this base model"):
        merge_lora_weights(load_dequantized_model(base, QUANT), other)
