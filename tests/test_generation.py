"""Batched greedy generation on tiny models: input order, answer prefix, where generation stops."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SQLORA_PROGRESS", "0")

from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from sqlora.errors import ParamError  # noqa: E402
from sqlora.generation import (check_predict_params, degenerate_reason, generate,  # noqa: E402
                               is_adapter, load_for_inference, predict_on_devices)
from sqlora.modeling import (chat_end_token_ids, load_quantized_model, load_tokenizer,  # noqa: E402
                             lora_config)
from sqlora.prompts import build_prompt  # noqa: E402
from tiny_model import build_tiny_model, smollm2_tokenizer  # noqa: E402

torch.set_num_threads(1)

QUANT16 = {"bits": 16, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
           "bnb_4bit_compute_dtype": "auto"}
QUANT4 = {**QUANT16, "bits": 4}
PREDICT = {"batch_size": 8, "max_new_tokens": 160, "merge_adapter": False, "answer_prefix": "SELECT",
           "num_gpus": 0}
SCHEMA = "singer(singer_id number, name text, country text, age number)"
# lengths chosen so that longest-first batches do not follow the input order
PROMPTS = [build_prompt(SCHEMA, "How many singers?" + " Really." * n) for n in (1, 30, 5, 60, 0, 12)]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    llama = build_tiny_model(root / "llama", "llama", tokenizer=smollm2_tokenizer())
    qwen2 = build_tiny_model(root / "qwen2", "qwen2", tokenizer=load_tokenizer(llama))
    return {"llama": llama, "qwen2": qwen2}


def load(model_dir: Path, quant=QUANT16):
    model = load_quantized_model(model_dir, quant)
    model.eval()
    return model, load_tokenizer(model_dir)


@contextmanager
def scripted(model, tokenizer, pieces: list[str]):
    """Force greedy decoding to emit these tokens in turn (the last one forever after): a bias
    on the output logits. Each generate() call must hold a single batch."""
    token_ids = []
    for piece in pieces:
        ids = tokenizer.encode(piece, add_special_tokens=False)
        assert len(ids) == 1, (piece, ids)
        token_ids.append(ids[0])
    step = {"n": 0}

    def start(module, args, kwargs):  # a new prompt: the first forward sees more than one token
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            step["n"] = 0

    def bias(module, inputs, logits):
        token = token_ids[min(step["n"], len(token_ids) - 1)]
        step["n"] += 1
        logits = logits.clone()
        logits[..., token] += 1e4
        return logits

    handles = [model.register_forward_pre_hook(start, with_kwargs=True),
               model.get_output_embeddings().register_forward_hook(bias)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", 0, ["predict.batch_size", "integer >= 1"]),
    ("batch_size", 1.5, ["predict.batch_size", "integer"]),
    ("max_new_tokens", 0, ["predict.max_new_tokens", "integer >= 1"]),
    ("merge_adapter", "no", ["predict.merge_adapter", "true, false"]),
    ("answer_prefix", 3, ["predict.answer_prefix", "string"]),
    ("answer_prefix", None, ["predict.answer_prefix", "string"]),
    ("num_gpus", -1, ["predict.num_gpus", "integer >= 0"]),
])
def test_bad_predict_params(key, value, expected):
    with pytest.raises(ParamError) as caught:
        check_predict_params({**PREDICT, key: value})
    for text in expected:
        assert text in str(caught.value), str(caught.value)


@pytest.mark.parametrize("prefix", ["", "SELECT"])
def test_good_predict_params(prefix):
    assert check_predict_params({**PREDICT, "answer_prefix": prefix})["answer_prefix"] == prefix


# ---------------------------------------------------------------- degenerate generations

@pytest.mark.parametrize("generations", [[""], ["", "  ", "\n"]])
def test_all_empty_is_degenerate(generations):
    assert "empty" in degenerate_reason(generations)


@pytest.mark.parametrize("text", ["SELECT " * 10, "the the the the the the the the the",
                                  "<|im_end|> " * 8])
def test_one_token_repeated_is_degenerate(text):
    reason = degenerate_reason(["SELECT count(*) FROM singer", text])
    assert reason and "repeats" in reason


@pytest.mark.parametrize("generations", [
    ["SELECT count(*) FROM singer", "SELECT name FROM singer WHERE age > 20 ORDER BY age"],
    ["SELECT count(*) FROM singer", ""],  # one empty answer is a wrong answer, not a broken model
    ["SELECT a FROM t WHERE a = a AND a = a"],
    [],
])
def test_normal_sql_is_not_degenerate(generations):
    assert degenerate_reason(generations) is None


# ---------------------------------------------------------------- end tokens

def test_chat_end_token_ids(tiny_models):
    llama = load_tokenizer(tiny_models["llama"])
    assert llama.eos_token == "<|im_end|>"
    assert llama.convert_tokens_to_ids("<|im_end|>") in chat_end_token_ids(llama)

    qwen2 = load_tokenizer(tiny_models["qwen2"])
    assert qwen2.eos_token == "<|endoftext|>"
    ids = chat_end_token_ids(qwen2)
    assert qwen2.convert_tokens_to_ids("<|im_end|>") in ids
    assert qwen2.convert_tokens_to_ids("<|endoftext|>") in ids


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_generation_stops_at_the_chat_end_token(tiny_models, family):
    """The qwen2-style tokenizer's eos is <|endoftext|>, yet its turns end with <|im_end|>."""
    model, tokenizer = load(tiny_models[family])
    with scripted(model, tokenizer, [" count", "<|im_end|>", " x"]):
        outputs = generate(model, tokenizer, PROMPTS[:2], batch_size=2, max_new_tokens=10,
                           answer_prefix="SELECT")
    assert [o.replace("<|im_end|>", "") for o in outputs] == ["SELECT count", "SELECT count"]


def test_generation_stops_at_the_end_of_the_sql(tiny_models):
    model, tokenizer = load(tiny_models["qwen2"])
    with scripted(model, tokenizer, [" name", ";", " x"]):
        outputs = generate(model, tokenizer, PROMPTS[:2], batch_size=2, max_new_tokens=10,
                           answer_prefix="SELECT")
    assert outputs == ["SELECT name;", "SELECT name;"]


@pytest.mark.parametrize("max_new_tokens", [3, 9])
def test_max_new_tokens_bounds_an_endless_generation(tiny_models, max_new_tokens):
    model, tokenizer = load(tiny_models["llama"])
    with scripted(model, tokenizer, [" x"]):  # never an end token, never ';'
        outputs = generate(model, tokenizer, PROMPTS[:3], batch_size=3,
                           max_new_tokens=max_new_tokens, answer_prefix="SELECT")
    assert outputs == ["SELECT" + " x" * max_new_tokens] * 3


# ---------------------------------------------------------------- order and prefix

@pytest.mark.parametrize("batch_size", [1, 2, 4, 8])
def test_outputs_follow_input_order(tiny_models, batch_size):
    """Batches are sorted by length; outputs still come back in input order, each the one its
    prompt gets alone."""
    model, tokenizer = load(tiny_models["qwen2"])  # untied random weights: answers vary by prompt
    alone = [generate(model, tokenizer, [p], batch_size=1, max_new_tokens=5, answer_prefix="SELECT")[0]
             for p in PROMPTS]
    assert len(set(alone)) >= 4, alone  # different prompts get different answers
    outputs = generate(model, tokenizer, PROMPTS, batch_size=batch_size, max_new_tokens=5,
                       answer_prefix="SELECT")
    assert outputs == alone


@pytest.mark.parametrize("prefix", ["SELECT", ""])
def test_answer_prefix_starts_the_answer(tiny_models, prefix):
    model, tokenizer = load(tiny_models["qwen2"])
    with scripted(model, tokenizer, [" name", " FROM", " singer", "<|im_end|>"]):
        outputs = generate(model, tokenizer, PROMPTS[:1], batch_size=1, max_new_tokens=8,
                           answer_prefix=prefix)
    assert outputs[0].replace("<|im_end|>", "") == prefix + " name FROM singer"


def test_answer_prefix_is_part_of_the_prompt(tiny_models):
    """The model continues after the prefix: its first new token sees the prefix in its input."""
    model, tokenizer = load(tiny_models["qwen2"])
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"][0].tolist()), with_kwargs=True)
    try:
        generate(model, tokenizer, PROMPTS[:1], batch_size=1, max_new_tokens=1, answer_prefix="SELECT")
    finally:
        handle.remove()
    prompt = tokenizer.decode(seen[0])
    assert prompt.endswith("<|im_start|>assistant\nSELECT"), prompt[-60:]


# ---------------------------------------------------------------- base + adapter

def test_load_for_inference_base_adapter_and_merged(tiny_models, tmp_path):
    """A fresh LoRA adapter (B = 0) changes nothing: base, base + adapter and merged agree."""
    from peft import get_peft_model

    base = tiny_models["qwen2"]
    adapter = tmp_path / "adapter"
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    get_peft_model(load_quantized_model(base, QUANT16), lora_config(lora)).save_pretrained(adapter)
    load_tokenizer(base).save_pretrained(adapter)
    assert is_adapter(adapter) and not is_adapter(base)

    answers = {}
    for name, model_dir, quant, merge in [("base4", base, QUANT4, False), ("adapter4", adapter, QUANT4, False),
                                          ("base16", base, QUANT16, False),
                                          ("merged", adapter, QUANT16, True)]:
        model, tokenizer = load_for_inference(model_dir, base, quant, merge_adapter=merge)
        assert not model.training and model.config.use_cache
        answers[name] = generate(model, tokenizer, PROMPTS[:3], batch_size=3, max_new_tokens=4,
                                 answer_prefix="SELECT")
        assert all(a.startswith("SELECT") for a in answers[name])
    assert answers["adapter4"] == answers["base4"]
    assert answers["merged"] == answers["base16"]


def test_questions_spread_over_devices_come_back_in_order(tiny_models):
    """One process per device (here two CPU processes stand in for two GPUs)."""
    options = {"batch_size": 4, "max_new_tokens": 6, "answer_prefix": "SELECT"}
    alone, _, _ = predict_on_devices(tiny_models["llama"], tiny_models["llama"], QUANT16, PROMPTS, ["cpu"],
                                     **options)
    spread, load_s, generate_s = predict_on_devices(tiny_models["llama"], tiny_models["llama"], QUANT16,
                                                    PROMPTS, ["cpu", "cpu"], **options)
    assert spread == alone and len(spread) == len(PROMPTS)
    assert load_s > 0 and generate_s > 0
