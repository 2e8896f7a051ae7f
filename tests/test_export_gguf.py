"""The GGUF export (stages/export.py --gguf): the file holds the merged model (transformers' GGUF
loader reads back the weights predict runs, and the tokenizer and chat template training used),
its Modelfile renders prompts as training did, and each failure is one error line that leaves
nothing half-written."""

from __future__ import annotations

import json
import os
import re
import shutil

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from script_modules import one_error_line
from tiny_model import build_tiny_base_model  # noqa: E402

from sqlora.core.params import QuantParams, as_dict  # noqa: E402

QUANT = QuantParams(bits=4)
TRAINED_SYSTEM = "You write SQLite. One query, nothing else."  # as an adapter's record may hold it
MESSAGES = [{"role": "system", "content": TRAINED_SYSTEM},
            {"role": "user", "content": "Database schema:\nsinger(singer_id*, name)\n\nQuestion: How many?\nSQL:"}]


def make_adapter(base, out):
    """A LoRA adapter with random non-zero weights on every linear layer, as after training, and
    the record training writes beside it."""
    from peft import LoraConfig, get_peft_model

    from sqlora.model.loading import ADAPTER_RECORD, load_quantized_model

    model = load_quantized_model(base, QUANT)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(out)
    record = {"base": str(base), "quant": as_dict(QUANT),
              "prompt_format": {"schema_format": "compact", "value_hints": True, "system_prompt": TRAINED_SYSTEM}}
    (out / ADAPTER_RECORD).write_text(json.dumps(record), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_models):
    """Tiny llama, qwen2 and gemma3 bases with adapters, and a params.yaml, in one folder."""
    root = tmp_path_factory.mktemp("gguf")
    # gemma3 as transformers' GGUF loader reads it back: queries scaled by 1/sqrt(head_dim) with
    # query_pre_attn_scalar 256 (as llama.cpp scales them), a full-attention layer every sixth
    gemma3 = build_tiny_base_model(root / "gemma3", head_dim=256, num_attention_heads=2, num_key_value_heads=1,
                                   query_pre_attn_scalar=256, num_hidden_layers=6, layer_types=None)
    bases = {**tiny_models, "gemma3": gemma3}
    for family, base in bases.items():
        make_adapter(base, root / f"{family}_adapter")
    (root / "params.yaml").write_text(yaml.safe_dump({"quant": as_dict(QUANT), "model": {
        "name_or_path": str(bases["llama"]), "sha256": "", "trust_remote_code": False}}))
    return root, bases


def export(run_script, root, base, adapter, out, kind):
    return run_script("stages/export.py", "--adapter", adapter, "--base", base, "--out", out, "--gguf", kind,
                      cwd=root, timeout=300)


def loaded_back(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf", dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder, gguf_file="model.gguf")


def tensor_types(path) -> dict[str, str]:
    import gguf

    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def modelfile_prompt(folder) -> str:
    """The prompt Ollama renders from the Modelfile for MESSAGES."""
    text = (folder / "Modelfile").read_text(encoding="utf-8")
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    prompt = template.split("{{ .Response }}")[0]
    return prompt.replace("{{ .System }}", MESSAGES[0]["content"]).replace("{{ .Prompt }}", MESSAGES[1]["content"])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("family, kind", [("llama", "f16"), ("qwen2", "q8_0"), ("gemma3", "f16")])
def test_the_gguf_file_reads_back_as_the_merged_model(work, run_script, family, kind):
    from sqlora.data.prompts import chat_end_token_ids, prompt_text
    from sqlora.model.loading import ADAPTER_RECORD, load_tokenizer, merged_model

    root, bases = work
    out = root / f"{family}_{kind}"
    done = export(run_script, root, bases[family], root / f"{family}_adapter", out, kind)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf", ADAPTER_RECORD]

    merged = merged_model(root / f"{family}_adapter", bases[family], QUANT)
    back, back_tokenizer = loaded_back(out)
    expected, got = merged.state_dict(), back.state_dict()
    assert set(got) == set(expected)
    for name, weight in expected.items():
        if kind == "f16" or weight.dim() == 1:  # 1-D tensors and norms stay float32
            want = weight.half().float() if weight.dim() > 1 else weight
            torch.testing.assert_close(got[name], want, rtol=0, atol=1e-6, msg=name)
        else:  # q8_0: within half a step of each 32-value block's scale
            assert (got[name] - weight).abs().max() <= weight.abs().max() / 127 + 1e-6, name
            assert not torch.equal(got[name], weight)
    types = tensor_types(out / "model.gguf")
    assert types["blk.0.attn_q.weight"] == kind.upper() and types["blk.0.attn_norm.weight"] == "F32"

    tokenizer = load_tokenizer(bases[family])
    text = prompt_text(tokenizer, MESSAGES) + "SELECT count(*) FROM singer"
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert back_tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    assert back_tokenizer.chat_template == tokenizer.chat_template
    with torch.no_grad():
        want, have = merged(input_ids=ids).logits, back(input_ids=ids).logits
    assert (want - have).abs().max() < (0.02 if kind == "f16" else 0.1) * want.abs().max()

    modelfile = (out / "Modelfile").read_text(encoding="utf-8")
    assert f'SYSTEM """{TRAINED_SYSTEM}"""' in modelfile and "FROM ./model.gguf" in modelfile
    bos = tokenizer.bos_token if family == "gemma3" else ""  # its tokenizer adds a BOS, as llama.cpp will
    assert bos + modelfile_prompt(out) == prompt_text(tokenizer, MESSAGES)
    for token_id in chat_end_token_ids(tokenizer):
        assert f"PARAMETER stop {json.dumps(tokenizer.decode([token_id]))}" in modelfile


@pytest.mark.timeout(600)
def test_a_base_from_a_gguf_file_keeps_that_files_metadata(work, run_script, tmp_path):
    import gguf
    from transformers import AutoModelForCausalLM

    from sqlora.model.gguf_export import GGUF_TYPES, Field, Layout, Tensor, copied_field, export_gguf, write_gguf
    from sqlora.model.loading import ModelSource, load_tokenizer, merged_model, prepare_base_model

    root, bases = work
    # a source GGUF made from the tiny llama, with a field only that file has
    first = tmp_path / "first"
    export_gguf(AutoModelForCausalLM.from_pretrained(bases["llama"]), load_tokenizer(bases["llama"]), bases["llama"],
                bases["llama"], first, GGUF_TYPES["f16"])
    reader = gguf.GGUFReader(first / "model.gguf")
    fields = [copied_field(key, field) for key, field in reader.fields.items()
              if not key.startswith("GGUF.") and key != "general.architecture"]
    fields.append(Field("general.source.url", "https://example.org/tiny-source", gguf.GGUFValueType.STRING))
    source = tmp_path / "tiny-source.gguf"
    write_gguf(source, Layout("llama", fields, {}), [
        Tensor(t.name, tuple(reversed(t.shape.tolist())), t.tensor_type, lambda t=t: t.data) for t in reader.tensors])

    base = prepare_base_model(ModelSource("gguf", str(source)), tmp_path / "base")
    adapter = make_adapter(base, tmp_path / "adapter")
    done = export(run_script, root, base, adapter, tmp_path / "out", "q8_0")
    assert done.returncode == 0, done.stderr[-3000:]

    written = gguf.GGUFReader(tmp_path / "out" / "model.gguf")
    assert written.fields["general.source.url"].contents() == "https://example.org/tiny-source"
    assert written.fields["tokenizer.ggml.tokens"].contents() == reader.fields["tokenizer.ggml.tokens"].contents()
    assert [t.name for t in written.tensors] == [t.name for t in reader.tensors]
    assert written.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    merged = merged_model(adapter, base, QUANT)
    back, _ = loaded_back(tmp_path / "out")
    for name, weight in merged.state_dict().items():
        assert (back.state_dict()[name] - weight).abs().max() <= weight.abs().max() / 127 + 1e-6, name


@pytest.mark.timeout(600)  # run alone, it builds the tiny models and adapters first
def test_an_adapter_without_its_base_is_one_error_line(work, run_script):
    root, bases = work
    done = export(run_script, root, root / "no_base_here", root / "llama_adapter", root / "orphan", "f16")
    assert "no base model" in one_error_line(done) and str(bases["llama"]) in done.stderr
    assert not (root / "orphan").exists()


@pytest.mark.timeout(600)  # run alone, it builds the tiny models and adapters first
def test_another_family_is_refused_in_one_line_naming_what_is_missing(work, run_script):
    root, bases = work
    other = root / "mistral"
    shutil.copytree(bases["llama"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    line = one_error_line(export(run_script, root, other, root / "llama_adapter", root / "mistral_out", "f16"))
    assert "'mistral'" in line and "missing" in line
    assert not (root / "mistral_out").exists()


@pytest.mark.timeout(600)  # run alone, it builds the tiny models and adapters first
def test_a_k_quant_is_refused_with_how_to_make_it(work, run_script):
    root, bases = work
    line = one_error_line(export(run_script, root, bases["llama"], root / "llama_adapter", root / "k", "q4_k_m"))
    assert "llama-quantize" in line and not (root / "k").exists()


@pytest.mark.timeout(600)  # run alone, it builds the tiny models and adapters first
def test_no_space_or_a_failed_write_leaves_the_folder_as_it_was(work, monkeypatch):
    from sqlora.core.errors import SqloraError
    from sqlora.model import gguf_export
    from sqlora.model.loading import load_tokenizer, merged_model

    root, bases = work
    model = merged_model(root / "llama_adapter", bases["llama"], QUANT)
    tokenizer = load_tokenizer(bases["llama"])
    out = root / "kept"
    out.mkdir()
    (out / "model.gguf").write_text("the previous export")

    monkeypatch.setattr(gguf_export, "free_bytes", lambda folder: 10_000)
    with pytest.raises(SqloraError, match="not enough disk space"):
        gguf_export.export_gguf(model, tokenizer, bases["llama"], root / "llama_adapter", out,
                                gguf_export.GGUF_TYPES["f16"])
    monkeypatch.undo()

    def full_disk(path, layout, tensors):
        path.write_bytes(b"GGUF half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf_export, "write_gguf", full_disk)
    with pytest.raises(SqloraError, match="No space left"):
        gguf_export.export_gguf(model, tokenizer, bases["llama"], root / "llama_adapter", out,
                                gguf_export.GGUF_TYPES["q8_0"])
    assert [p.name for p in out.iterdir()] == ["model.gguf"]
    assert (out / "model.gguf").read_text() == "the previous export"
    assert not [p for p in root.iterdir() if p.name.startswith(".kept-")]


def test_llama3_rope_factors_give_the_frequencies_transformers_uses():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from sqlora.model.gguf_export import llama3_rope_factors, rope_settings

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    config = LlamaConfig(hidden_size=2048, num_attention_heads=32, head_dim=64, rope_parameters=rope)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = 1.0 / (500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    factors = torch.from_numpy(llama3_rope_factors(rope_settings(config), 64))
    assert factors.min() == 1.0 and factors.max() == 32.0  # both ends of the range are used
    torch.testing.assert_close(plain / factors, scaled)  # llama.cpp divides each frequency by its factor
