"""The export command: adapter merged into the dequantized base, loadable by plain transformers,
computing what base + adapter computes."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

from sqlora.core.params import QuantParams, as_dict  # noqa: E402
from sqlora.model.loading import ADAPTER_RECORD  # noqa: E402

QUANT = QuantParams(bits=4)


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    from sqlora.model.loading import load_quantized_model

    work = tmp_path_factory.mktemp("export")
    base = build_tiny_model(work / "base")
    model = load_quantized_model(base, QUANT)
    # init_lora_weights=False gives a non-zero adapter, as after training
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter = work / "adapter"
    peft_model.save_pretrained(adapter)
    (adapter / ADAPTER_RECORD).write_text('{"prompt_format": {"schema_format": "ddl", "value_hints": true}}\n')
    (work / "params.yaml").write_text(yaml.safe_dump({"quant": as_dict(QUANT), "model": {"name_or_path": str(base), "sha256": "", "trust_remote_code": False}}))
    return work, base, adapter


@pytest.mark.timeout(300)
def test_export_writes_a_plain_model_equal_to_base_plus_adapter(base_and_adapter, run_script):
    from transformers import AutoModelForCausalLM

    from sqlora.model.loading import load_for_inference

    work, base, adapter = base_and_adapter
    done = run_script("stages/export.py", "--adapter", adapter, "--base", base, "--out", work / "merged",
                      cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = AutoModelForCausalLM.from_pretrained(work / "merged")
    # the training record goes with the merged model: `sqlora ask` reads its prompt format there
    assert (work / "merged" / ADAPTER_RECORD).read_text() == (adapter / ADAPTER_RECORD).read_text()
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


def test_an_adapter_for_another_model_is_one_clear_error(base_and_adapter, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from sqlora.core.errors import SqloraError
    from sqlora.model.loading import merged_model

    _, base, adapter = base_and_adapter
    other = tmp_path / "other"
    shutil.copytree(adapter, other)
    tensors = load_file(other / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("q_proj.lora_A.weight"))
    tensors[key] = torch.cat([tensors[key], tensors[key]], dim=1)
    save_file(tensors, other / "adapter_model.safetensors")
    with pytest.raises(SqloraError, match="does not fit"):
        merged_model(other, base, QUANT)
