"""Batched greedy generation on tiny models: input order, answer prefix, where generation stops."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SQLORA_PROGRESS", "0")

import subprocess  # noqa: E402
import sys  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from sqlora.core.params import LoraParams, QuantParams  # noqa: E402
from sqlora.data.prompts import (  # noqa: E402
    build_prompt,
    chat_end_token_ids,  # noqa: E402
    prompt_text,
)
from sqlora.model.loading import is_adapter, load_for_inference, load_quantized_model, load_tokenizer, lora_config  # noqa: E402
from sqlora.predict.fanout import predict_on_devices  # noqa: E402
from sqlora.predict.generation import degenerate_reason, generate, generate_candidates, left_padded, sql_end_token_ids  # noqa: E402

torch.set_num_threads(1)

QUANT16 = QuantParams(bits=16)
QUANT4 = QuantParams(bits=4)
SCHEMA = "singer(singer_id number, name text, country text, age number)"
# lengths chosen so that longest-first batches do not follow the input order
PROMPTS = [build_prompt(SCHEMA, "How many singers?" + " Really." * n) for n in (1, 30, 5, 60, 0, 12)]


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


@pytest.mark.parametrize("end", [";", ");"])
def test_generation_stops_at_the_end_of_the_sql(tiny_models, end):
    """At ';' alone, or inside a longer token that holds it."""
    model, tokenizer = load(tiny_models["qwen2"])
    with scripted(model, tokenizer, [" name", end, " x"]):
        outputs = generate(model, tokenizer, PROMPTS[:2], batch_size=2, max_new_tokens=10,
                           answer_prefix="SELECT")
    assert outputs == ["SELECT name" + end] * 2


def test_sql_end_tokens_are_the_chat_end_and_every_token_with_a_semicolon(tiny_models):
    tokenizer = load_tokenizer(tiny_models["qwen2"])
    ends = sql_end_token_ids(tokenizer)
    assert set(chat_end_token_ids(tokenizer)) <= set(ends)
    assert {tokenizer.convert_tokens_to_ids(t) for t in (";", ");", "';")} <= set(ends)
    others = [i for i in ends if i not in chat_end_token_ids(tokenizer)]
    assert others and all(";" in tokenizer.decode([i]) for i in others)
    assert tokenizer.encode(" count", add_special_tokens=False)[0] not in ends


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


def first_input_ids(model, tokenizer) -> list[int]:
    """The token ids the model's first forward pass sees for PROMPTS[0] with the prefix SELECT."""
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"][0].tolist()), with_kwargs=True)
    try:
        generate(model, tokenizer, PROMPTS[:1], batch_size=1, max_new_tokens=1, answer_prefix="SELECT")
    finally:
        handle.remove()
    return seen[0]


def test_answer_prefix_is_part_of_the_prompt(tiny_models):
    """The model continues after the prefix: its first new token sees the prefix in its input."""
    model, tokenizer = load(tiny_models["qwen2"])
    prompt = tokenizer.decode(first_input_ids(model, tokenizer))
    assert prompt.endswith("<|im_start|>assistant\nSELECT"), prompt[-60:]


# ---------------------------------------------------------------- base + adapter

def test_load_for_inference_base_adapter_and_merged(tiny_models, tmp_path):
    """A trained (non-zero) adapter changes the model; merged into the dequantized base it computes
    what base + adapter computes, for 16-bit and 4-bit bases alike."""
    from peft import PeftModel, get_peft_model

    base = tiny_models["qwen2"]
    adapter = tmp_path / "adapter"
    lora = LoraParams(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))
    peft_model = get_peft_model(load_quantized_model(base, QUANT16), lora_config(lora))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # a fresh adapter has B = 0 and would change nothing
                param.normal_(0, 0.5)
    peft_model.save_pretrained(adapter)
    load_tokenizer(base).save_pretrained(adapter)
    assert is_adapter(adapter) and not is_adapter(base)

    tokenizer = load_tokenizer(base)
    ids = tokenizer(prompt_text(tokenizer, PROMPTS[0]) + "SELECT", return_tensors="pt").input_ids
    logits, answers = {}, {}
    for name, model_dir, quant, dequantize in [("base4", base, QUANT4, False), ("adapter4", adapter, QUANT4, False),
                                               ("base16", base, QUANT16, False), ("adapter16", adapter, QUANT16, False),
                                               ("merged16", adapter, QUANT16, True),
                                               ("merged4", adapter, QUANT4, True)]:
        model, tokenizer = load_for_inference(model_dir, base, quant, dequantize=dequantize)
        assert not model.training and model.config.use_cache
        if dequantize:  # the adapter merged in: a plain transformers model
            assert not isinstance(model, PeftModel)
            assert not any("lora_" in n for n, _ in model.named_parameters())
        else:
            assert isinstance(model, PeftModel) == (model_dir == adapter)
        with torch.no_grad():
            logits[name] = model(input_ids=ids).logits[0, -1].float()
        answers[name] = generate(model, tokenizer, PROMPTS[:3], batch_size=3, max_new_tokens=4,
                                 answer_prefix="SELECT")
        assert all(a.startswith("SELECT") for a in answers[name])
    assert (logits["adapter16"] - logits["base16"]).abs().max() > 1e-2  # the adapter matters
    assert (logits["adapter4"] - logits["base4"]).abs().max() > 1e-2
    torch.testing.assert_close(logits["merged16"], logits["adapter16"], atol=1e-4, rtol=1e-4)
    # bitsandbytes' 4-bit matmul rounds differently from a plain one over the same dequantized weights
    torch.testing.assert_close(logits["merged4"], logits["adapter4"], atol=5e-3, rtol=0)
    assert (logits["merged4"] - logits["base4"]).abs().max() > 10 * 5e-3
    assert answers["merged16"] == answers["adapter16"] and answers["merged4"] == answers["adapter4"]


@pytest.mark.timeout(300)
def test_questions_spread_over_devices_come_back_in_order(tiny_models):
    """One process per device (here two CPU processes stand in for two GPUs)."""
    options = {"batch_size": 4, "max_new_tokens": 6, "answer_prefix": "SELECT", "num_candidates": 2}
    alone = predict_on_devices(tiny_models["llama"], tiny_models["llama"], QUANT16, PROMPTS, ["cpu"],
                               **options).candidates
    spread, load_s, generate_s, peak, ready_s, dtype = predict_on_devices(
        tiny_models["llama"], tiny_models["llama"], QUANT16, PROMPTS, ["cpu", "cpu"], **options)
    assert spread == alone and len(spread) == len(PROMPTS) and peak is None  # no GPU memory on CPU
    assert all(len(c) == 2 and all(t.startswith("SELECT") for t in c) for c in spread), spread
    assert load_s > 0 and generate_s > 0 and load_s <= ready_s <= load_s + generate_s
    assert dtype == "float32"


def test_predict_on_devices_gives_one_candidate_per_prompt_by_default(tiny_models):
    candidates = predict_on_devices(tiny_models["qwen2"], tiny_models["qwen2"], QUANT4, PROMPTS[:3], ["cpu"],
                                    dequantize=True, batch_size=2, max_new_tokens=4,
                                    answer_prefix="SELECT").candidates
    model, tokenizer = load(tiny_models["qwen2"], QUANT4)
    greedy = generate(model, tokenizer, PROMPTS[:3], batch_size=2, max_new_tokens=4, answer_prefix="SELECT")
    assert candidates == [[g] for g in greedy]


def test_batches_are_padded_as_the_tokenizer_pads_them(tiny_models):
    _, tokenizer = load(tiny_models["qwen2"])
    texts = [prompt_text(tokenizer, p) + "SELECT" for p in PROMPTS[:4]]
    tokenizer.padding_side = "left"
    expected = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    got = left_padded(tokenizer(texts, add_special_tokens=False)["input_ids"], tokenizer.pad_token_id)
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])


def test_first_batch_is_announced_once_after_tokenizing(tiny_models, monkeypatch):
    model, tokenizer = load(tiny_models["qwen2"])
    events = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda *a, **kw: events.append("batch") or original(*a, **kw))
    generate_candidates(model, tokenizer, PROMPTS, batch_size=2, max_new_tokens=2,
                        on_first_batch=lambda: events.append("first"))
    assert events == ["first", "batch", "batch", "batch"]


# ---------------------------------------------------------------- candidates (beam search)

@pytest.mark.parametrize("batch_size", [1, 4])
def test_candidates_come_per_prompt_in_input_order(tiny_models, batch_size):
    model, tokenizer = load(tiny_models["qwen2"])
    options = {"max_new_tokens": 5, "answer_prefix": "SELECT", "num_candidates": 3}
    candidates = generate_candidates(model, tokenizer, PROMPTS, batch_size=batch_size, **options)
    assert len(candidates) == len(PROMPTS)
    for texts in candidates:
        assert len(texts) == 3 and all(isinstance(t, str) and t.startswith("SELECT") for t in texts), texts
    # in input order: each prompt's candidates are those it gets alone
    alone = [generate_candidates(model, tokenizer, [p], batch_size=1, **options)[0] for p in PROMPTS]
    assert candidates == alone
    assert len({c[0] for c in candidates}) >= 3, candidates  # prompts differ, so do their answers


def test_one_candidate_is_the_greedy_generation(tiny_models):
    model, tokenizer = load(tiny_models["qwen2"])
    options = {"batch_size": 4, "max_new_tokens": 5, "answer_prefix": "SELECT"}
    candidates = generate_candidates(model, tokenizer, PROMPTS, num_candidates=1, **options)
    # transformers' own greedy search, one prompt at a time, no padding
    greedy = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt_text(tokenizer, prompt) + "SELECT", return_tensors="pt",
                        add_special_tokens=False).input_ids
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=5,
                             eos_token_id=sql_end_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)
        greedy.append(["SELECT" + tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)])
    assert candidates == greedy


def test_candidates_without_answer_prefix(tiny_models):
    model, tokenizer = load(tiny_models["qwen2"])
    with scripted(model, tokenizer, [" name", ";", " x"]):
        candidates = generate_candidates(model, tokenizer, PROMPTS[:1], batch_size=1, max_new_tokens=6,
                                         answer_prefix="", num_candidates=2)
    assert len(candidates) == 1 and len(candidates[0]) == 2
    assert candidates[0][0] == " name;"  # best first; the forced answer wins by far


# ---------------------------------------------------------------- out of GPU memory

def fail_on_big_batches(monkeypatch, model, error, limit: int = 2) -> list[int]:
    """model.generate raises `error` when given more than `limit` prompts; returns the sizes seen."""
    sizes: list[int] = []
    original = model.generate

    def generate_or_fail(*args, **kwargs):
        size = kwargs["input_ids"].shape[0]
        sizes.append(size)
        if size > limit:
            raise error("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate_or_fail)
    return sizes


def test_batch_size_counts_sequences_so_candidates_mean_fewer_prompts_per_batch(tiny_models, monkeypatch):
    model, tokenizer = load(tiny_models["qwen2"])
    prompts_per_call = fail_on_big_batches(monkeypatch, model, MemoryError, limit=len(PROMPTS))
    generate_candidates(model, tokenizer, PROMPTS, batch_size=4, max_new_tokens=3, answer_prefix="SELECT",
                        num_candidates=2)
    assert prompts_per_call == [2, 2, 2]


@pytest.mark.parametrize("free_bytes", [None, 10**12])  # no plan by memory (a CPU), or plenty free
@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, MemoryError])
def test_out_of_memory_halves_the_batch_and_keeps_the_order(tiny_models, monkeypatch, error, free_bytes):
    model, tokenizer = load(tiny_models["qwen2"])
    options = {"max_new_tokens": 5, "answer_prefix": "SELECT"}
    expected = generate_candidates(model, tokenizer, PROMPTS, batch_size=2, **options)
    sizes = fail_on_big_batches(monkeypatch, model, error)
    reports = []
    got = generate_candidates(model, tokenizer, PROMPTS, batch_size=8, free_bytes=free_bytes,
                              on_batch=reports.append, **options)
    assert got == expected and len(got) == len(PROMPTS)
    assert sizes[:3] == [6, 3, 1]  # 6 fails, 3 fails, then what fits in the bytes of 1
    assert [r.out_of_memory for r in reports[:3]] == [True, True, False]
    assert sum(size for size, r in zip(sizes, reports) if not r.out_of_memory) == len(PROMPTS)
    # no later batch takes more estimated bytes than the one prompt that ran
    assert all(r.estimated_bytes <= reports[2].estimated_bytes for r in reports[3:])


def test_after_running_out_of_memory_batches_stay_within_batch_size(tiny_models, monkeypatch):
    """Memory for one long prompt holds many short ones, but never more than batch_size at once."""
    from sqlora.predict.batching import BatchShape, model_sizes, prompt_bytes

    model, tokenizer = load(tiny_models["qwen2"])
    prompts = [build_prompt(SCHEMA, "How many singers?" + " Really." * 2000)]
    prompts += [build_prompt(SCHEMA, f"How many singers are {n}?") for n in range(11)]
    new_tokens, sizes_of_model = 2, model_sizes(model)

    def batch_bytes(prompt_count: int, prompt_tokens: int) -> int:
        shape = BatchShape(prompt_tokens, prompt_tokens + new_tokens - 1, new_tokens)
        return prompt_count * prompt_bytes(sizes_of_model, shape)

    texts = [prompt_text(tokenizer, p) + "SELECT" for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    memory = batch_bytes(1, max(lengths))  # one long prompt fits
    assert memory // batch_bytes(1, max(lengths[1:])) > 4  # and more than batch_size short ones
    original, sizes = model.generate, []

    def generate_within_memory(*args, **kwargs):
        ids = kwargs["input_ids"]
        sizes.append(ids.shape[0])
        if batch_bytes(*ids.shape) > memory:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate_within_memory)
    got = generate_candidates(model, tokenizer, prompts, batch_size=4, max_new_tokens=new_tokens,
                              answer_prefix="SELECT")
    assert len(got) == 12 and sizes == [4, 2, 1, 4, 4, 3]


def test_out_of_memory_with_candidates(tiny_models, monkeypatch):
    model, tokenizer = load(tiny_models["qwen2"])
    options = {"max_new_tokens": 4, "answer_prefix": "SELECT", "num_candidates": 2}
    expected = generate_candidates(model, tokenizer, PROMPTS, batch_size=4, **options)
    sizes = fail_on_big_batches(monkeypatch, model, torch.cuda.OutOfMemoryError, limit=2)
    assert generate_candidates(model, tokenizer, PROMPTS, batch_size=8, **options) == expected
    assert sizes[:2] == [4, 2]  # 8 sequences: 4 prompts of 2 candidates fail, then 2 prompts a batch


def test_out_of_memory_with_one_prompt_is_raised(tiny_models, monkeypatch):
    model, tokenizer = load(tiny_models["qwen2"])
    sizes = fail_on_big_batches(monkeypatch, model, torch.cuda.OutOfMemoryError, limit=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        generate_candidates(model, tokenizer, PROMPTS[:3], batch_size=4, max_new_tokens=3)
    assert sizes == [3, 1]
    sizes.clear()
    with pytest.raises(torch.cuda.OutOfMemoryError):
        generate(model, tokenizer, PROMPTS[:2], batch_size=1, max_new_tokens=3)
    assert sizes == [1]


def test_other_errors_are_not_retried(tiny_models, monkeypatch):
    model, tokenizer = load(tiny_models["qwen2"])
    sizes = fail_on_big_batches(monkeypatch, model, ValueError, limit=0)
    with pytest.raises(ValueError):
        generate_candidates(model, tokenizer, PROMPTS, batch_size=4, max_new_tokens=3)
    assert sizes == [4]


# ---------------------------------------------------------------- batches planned by the memory free

@pytest.mark.parametrize("num_candidates", [1, 2])
def test_batches_planned_by_free_memory_give_the_same_answers(tiny_models, num_candidates):
    """With little memory free the longest prompts go in the smallest batches; every prompt
    gets the answers it gets alone."""
    from sqlora.predict.batching import RESERVED_BYTES, USABLE_SHARE

    model, tokenizer = load(tiny_models["llama"])
    options = {"max_new_tokens": 5, "answer_prefix": "SELECT", "num_candidates": num_candidates}
    alone = [generate_candidates(model, tokenizer, [p], batch_size=num_candidates, **options)[0]
             for p in PROMPTS]
    unplanned = []
    generate_candidates(model, tokenizer, PROMPTS, batch_size=8 * num_candidates, on_batch=unplanned.append,
                        **options)
    assert [r.prompts for r in unplanned] == [len(PROMPTS)]
    longest_prompt_bytes = unplanned[0].estimated_bytes / len(PROMPTS)  # as if all were the longest
    free = int((RESERVED_BYTES + 2.5 * longest_prompt_bytes) / USABLE_SHARE)
    reports = []
    got = generate_candidates(model, tokenizer, PROMPTS, batch_size=8 * num_candidates, free_bytes=free,
                              on_batch=reports.append, **options)
    assert got == alone
    sizes = [r.prompts for r in reports]
    assert sum(sizes) == len(PROMPTS) and sizes[0] <= 2 and len(sizes) > 2 and sizes == sorted(sizes)
    assert all(r.estimated_bytes <= free * USABLE_SHARE - RESERVED_BYTES for r in reports)
    assert not any(r.out_of_memory for r in reports) and all(r.peak_bytes is None for r in reports)


def generate_capturing_caches(monkeypatch, model) -> list[tuple[int, object]]:
    """Wrap model.generate to record each call's padded prompt width and the KV cache it got."""
    from sqlora.predict.generation import cache_argument

    calls = []
    original = model.generate

    def generate_and_record(*args, **kwargs):
        calls.append((kwargs["input_ids"].shape[1], kwargs.get(cache_argument())))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate_and_record)
    return calls


@pytest.mark.parametrize("num_candidates", [1, 3])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_each_batch_caches_its_own_longest_prompt_with_the_same_answers(tiny_models, base_model, monkeypatch,
                                                                      family, num_candidates):
    """A batch's KV cache holds its longest prompt and the new tokens, not the longest prompt of
    the batches before; the answers are those of transformers' static cache."""
    model, tokenizer = load(base_model if family == "gemma3" else tiny_models[family])
    options = {"batch_size": 2 * num_candidates, "max_new_tokens": 6, "answer_prefix": "SELECT",
               "num_candidates": num_candidates}
    shared = generate_candidates(model, tokenizer, PROMPTS, cache_per_batch=False, **options)
    calls = generate_capturing_caches(monkeypatch, model)
    own = generate_candidates(model, tokenizer, PROMPTS, **options)
    assert own == shared
    widths = [width for width, _ in calls]
    assert len(widths) == 3 and widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    for width, cache in calls:
        full_layers = [layer for layer in cache.layers if not getattr(layer, "is_sliding", False)]
        assert full_layers and all(layer.max_cache_len == width + 6 - 1 for layer in full_layers)


@pytest.mark.parametrize("num_candidates", [1, 2])
def test_a_chunked_prefill_gives_the_same_answers_here(tiny_models, num_candidates):
    """On this CPU, in float32; on a GPU the rounding of a chunked prefill may differ
    (benchmarks/bench_predict.py compares the answers)."""
    model, tokenizer = load(tiny_models["qwen2"])
    options = {"batch_size": 4 * num_candidates, "max_new_tokens": 6, "answer_prefix": "SELECT",
               "num_candidates": num_candidates}
    whole = generate_candidates(model, tokenizer, PROMPTS, **options)
    assert generate_candidates(model, tokenizer, PROMPTS, prefill_chunk_tokens=16, **options) == whole


# ---------------------------------------------------------------- dequantized base

def test_dequantized_base_has_no_4bit_layers_and_answers_like_the_4bit_base(tiny_models):
    import bitsandbytes as bnb

    base = tiny_models["llama"]  # its logits are less flat than the qwen2-style one's
    four_bit, tokenizer = load_for_inference(base, base, QUANT4)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in four_bit.modules())
    plain, _ = load_for_inference(base, base, QUANT4, dequantize=True)
    assert not plain.training and plain.config.use_cache
    assert not any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in plain.modules())
    assert all(type(m) is torch.nn.Linear for n, m in plain.named_modules() if n.endswith(("q_proj", "down_proj")))
    assert not getattr(plain, "is_loaded_in_4bit", False)
    assert not hasattr(plain.config, "quantization_config")

    original, _ = load_for_inference(base, base, QUANT16)
    ids = tokenizer(["How many singers are there? SELECT count(*) FROM singer"], return_tensors="pt")
    with torch.no_grad():
        expected, got, unquantized = four_bit(**ids).logits, plain(**ids).logits, original(**ids).logits
    # bitsandbytes' CPU 4-bit matmul rounds a little differently from a dequantized fp32 matmul,
    # far less than the 4-bit weights differ from the original ones
    gap = (expected - got).abs().max()
    assert gap < 0.02 * expected.abs().max()
    assert gap < 0.25 * (expected - unquantized).abs().max()
    # a random model's logits are nearly flat: compare the argmax where it is clear of the rounding
    top = expected.topk(2, dim=-1).values
    clear = (top[..., 0] - top[..., 1]) > 2 * gap
    assert clear.sum() >= 3, clear
    assert torch.equal(expected.argmax(-1)[clear], got.argmax(-1)[clear])
    options = {"batch_size": 3, "max_new_tokens": 4, "answer_prefix": "SELECT"}
    assert generate(plain, tokenizer, PROMPTS[:3], **options) == generate(four_bit, tokenizer, PROMPTS[:3], **options)


@pytest.mark.parametrize("own_cache", [False, True])
@pytest.mark.parametrize("num_candidates", [1, 3])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_static_cache_gives_what_the_growing_cache_gives(tiny_models, family, num_candidates, own_cache):
    """Generation allocates its KV cache once per batch (transformers' static cache, or one made
    for the batch); the tokens must equal transformers' default."""
    from sqlora.predict.generation import _generate_batch

    model, tokenizer = load(tiny_models[family])
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) + "SELECT"
             for p in PROMPTS]
    ends = chat_end_token_ids(tokenizer)
    token_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    cache_tokens = max(len(ids) for ids in token_ids) + 12 - 1 if own_cache else None
    ours = _generate_batch(model, tokenizer, token_ids, max_new_tokens=12, eos_token_id=ends,
                           num_candidates=num_candidates, cache_tokens=cache_tokens)
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    search = {"num_beams": num_candidates, "num_return_sequences": num_candidates,
              "early_stopping": True} if num_candidates > 1 else {}
    with torch.inference_mode():
        default = model.generate(**encoded, do_sample=False, max_new_tokens=12, eos_token_id=ends,
                                 pad_token_id=tokenizer.pad_token_id, stop_strings=[";"], tokenizer=tokenizer,
                                 **search)
    decoded = tokenizer.batch_decode(default[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [c for candidates in ours for c in candidates] == decoded


def test_quiet_library_bars_does_not_import_datasets_yet_silences_it():
    """Under DVC (no terminal) the bars go quiet without the predict stage paying for datasets."""
    code = ("import sys; from sqlora.core.progress import quiet_library_bars; quiet_library_bars(); "
            "assert 'datasets' not in sys.modules, 'datasets was imported'; "
            "from datasets.utils import are_progress_bars_disabled; assert are_progress_bars_disabled()")
    env = {k: v for k, v in os.environ.items() if k != "HF_DATASETS_DISABLE_PROGRESS_BARS"}
    env.update(SQLORA_PROGRESS="0", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------- a base model without chat template

@pytest.fixture(scope="module")
def base_model(tiny_models, tmp_path_factory) -> Path:
    """A tiny Gemma3-style base model whose tokenizer has no chat template and eos <|endoftext|>."""
    from tiny_model import build_tiny_base_model

    return build_tiny_base_model(tmp_path_factory.mktemp("base") / "gemma3",
                                 tokenizer=load_tokenizer(tiny_models["llama"]))


def test_without_chat_template_generation_stops_at_eos(base_model):
    model, tokenizer = load(base_model)
    assert not tokenizer.chat_template
    assert chat_end_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    with scripted(model, tokenizer, [" count", "<|endoftext|>", " x"]):
        outputs = generate(model, tokenizer, PROMPTS[:2], batch_size=2, max_new_tokens=10,
                           answer_prefix="SELECT")
    assert outputs == ["SELECT count", "SELECT count"]


def test_without_chat_template_sql_end_tokens_are_eos_and_semicolons(base_model):
    tokenizer = load_tokenizer(base_model)
    ends = sql_end_token_ids(tokenizer)
    assert tokenizer.eos_token_id in ends and tokenizer.convert_tokens_to_ids("<|im_end|>") not in ends
    assert all(";" in tokenizer.decode([i]) for i in ends if i != tokenizer.eos_token_id)


def test_without_chat_template_the_model_sees_the_plain_prompt(base_model):
    """BOS, the system line, schema and question, "SQL:", a newline and the answer prefix."""
    from sqlora.data.prompts import SYSTEM_PROMPT

    model, tokenizer = load(base_model)
    seen = first_input_ids(model, tokenizer)
    assert seen[0] == tokenizer.bos_token_id
    prompt = tokenizer.decode(seen[1:])
    assert prompt.startswith(SYSTEM_PROMPT + "\n\nDatabase schema:\n" + SCHEMA + "\n\nQuestion: How many singers?")
    assert prompt.endswith("\nSQL:\nSELECT"), prompt[-60:]
