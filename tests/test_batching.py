"""Prompts per generation batch from the bytes free and the model's sizes (no model runs, except
where the sizes are checked against the cache transformers allocates)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from sqlora.predict.batching import BatchShape, BatchSizer, ModelSizes, model_sizes, prompt_bytes  # noqa: E402

GIB = 2**30
# SmolLM2-135M in bfloat16: 30 layers x 3 KV heads x 64 x 2 x 2 bytes
SMOLLM2 = ModelSizes(kv_bytes_per_token=23040, hidden_size=576, intermediate_size=1536, attention_width=576,
                     vocab_size=49152, dtype_bytes=2)
# Qwen2.5-Coder-0.5B: 24 layers x 2 KV heads x 64 x 2 x 2 bytes, a large MLP and vocabulary
QWEN05 = ModelSizes(kv_bytes_per_token=12288, hidden_size=896, intermediate_size=4864, attention_width=896,
                    vocab_size=151936, dtype_bytes=2)
NEW = 128


def shape(prompt_tokens: int, candidates: int = 2, **more) -> BatchShape:
    return BatchShape(prompt_tokens, prompt_tokens + NEW - 1, NEW, candidates, 19, **more)


def plan(free_bytes, prompt_tokens, candidates=2, sizes=SMOLLM2, most=512, **more) -> int:
    return BatchSizer(most, sizes).prompts(shape(prompt_tokens, candidates, **more), free_bytes)


@pytest.mark.parametrize("sizes", [SMOLLM2, QWEN05])
@pytest.mark.parametrize("prompt_tokens", [113, 626, 1500])
@pytest.mark.parametrize("free_gib", [2, 5.5, 20])
def test_a_batch_never_plans_more_kv_cache_than_the_free_memory(sizes, prompt_tokens, free_gib):
    prompts = plan(int(free_gib * GIB), prompt_tokens, sizes=sizes)
    kv_cache = prompts * 2 * (prompt_tokens + NEW - 1) * sizes.kv_bytes_per_token
    assert prompts == 1 or kv_cache < free_gib * GIB
    assert prompts >= 1


def test_at_a_6gb_card_the_longest_dev_prompts_go_more_than_64_at_a_time():
    """SmolLM2's longest dev prompt (626 tokens), two beams: 5.5 GiB less the model hold more
    than the 64 prompts that halving from 512 reaches, and fewer than the KV cache alone allows."""
    free = int(5.5 * GIB - 0.3e9)
    prompts = plan(free, 626)
    assert 64 < prompts < free / (2 * (626 + NEW - 1) * SMOLLM2.kv_bytes_per_token)


def test_plenty_of_memory_gives_batch_size():
    """Uncapped on a large card the batches are those of `batch_size`, as without a plan."""
    assert plan(130 * GIB, 626, most=512) == 512
    assert plan(130 * GIB, 113, candidates=1, most=1024) == 1024


def test_too_little_memory_still_tries_one_prompt():
    assert plan(0, 626) == 1
    assert plan(10 * 2**20, 626) == 1


def test_more_free_memory_shorter_prompts_and_fewer_candidates_mean_more_prompts():
    free = 5 * GIB
    assert plan(free, 400) < plan(2 * free, 400)
    assert plan(free, 626) < plan(free, 400) < plan(free, 113)
    assert plan(free, 400, candidates=4) < plan(free, 400, candidates=2) < plan(free, 400, candidates=1)


def test_a_large_vocabulary_costs_memory_per_sequence():
    """Each sequence's logits over the vocabulary, and their float32 copies, count."""
    large = SMOLLM2._replace(vocab_size=151936)
    assert prompt_bytes(large, shape(113)) > prompt_bytes(SMOLLM2, shape(113)) + 2 * 151936 * 4


def test_more_end_tokens_keep_more_beams_for_each_step():
    """Beam search keeps (1 + end tokens) x beams continuations of every prompt each step."""
    few, many = shape(300)._replace(end_tokens=2), shape(300)._replace(end_tokens=200)
    assert prompt_bytes(SMOLLM2, many) > prompt_bytes(SMOLLM2, few)
    greedy = shape(300, candidates=1)
    assert prompt_bytes(SMOLLM2, greedy._replace(end_tokens=200)) == prompt_bytes(SMOLLM2, greedy)


def test_a_chunked_prefill_lets_more_prompts_in_where_the_prefill_dominates():
    """Qwen2.5-0.5B's MLP is large and its KV cache small: the prefill's activations decide."""
    free = 5 * GIB
    assert plan(free, 1500, sizes=QWEN05, prefill_tokens=256) > 1.5 * plan(free, 1500, sizes=QWEN05)
    assert plan(free, 200, prefill_tokens=256) == plan(free, 200)  # shorter than a chunk: the same


def test_running_out_of_memory_halves_the_batch_then_shorter_prompts_go_in_larger_ones():
    sizer = BatchSizer(512, SMOLLM2)
    long, short = shape(626), shape(150)
    sizer.ran_out(40, long)
    assert sizer.prompts(long, None) == 20
    assert sizer.prompts(long, 100 * GIB) == 20
    assert 40 < sizer.prompts(short, None) < 512
    sizer.ran_out(20, long)
    assert sizer.prompts(long, None) == 10


def test_without_free_memory_known_the_batch_is_batch_size():
    """On the CPU nothing is planned by memory: batches of `batch_size` sequences."""
    assert BatchSizer(256, SMOLLM2).prompts(shape(626), None) == 256


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_the_peak_a_batch_measured_corrects_the_next_plan(ratio):
    sizer = BatchSizer(10_000, SMOLLM2)
    free = 5 * GIB
    before = sizer.prompts(shape(400), free)
    sizer.ran(before, shape(400), int(ratio * before * prompt_bytes(SMOLLM2, shape(400))))
    after = sizer.prompts(shape(400), free)
    assert after == pytest.approx(before / ratio, rel=0.02)


def test_a_batch_that_ran_out_of_memory_bounds_the_measured_plan():
    """A measured peak under the estimate does not lift a batch back to a size that failed."""
    sizer = BatchSizer(10_000, SMOLLM2)
    sizer.ran_out(100, shape(400))
    sizer.ran(50, shape(400), int(0.1 * 50 * prompt_bytes(SMOLLM2, shape(400))))
    assert sizer.prompts(shape(400), 100 * GIB) == 50


# ---------------------------------------------------------------- sizes of real models

@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_kv_bytes_per_token_are_what_the_static_cache_allocates(tiny_models, tmp_path, family):
    """The sizes come from the config; the cache generate allocates holds no more per token."""
    import torch
    from tiny_model import build_tiny_base_model
    from transformers import AutoModelForCausalLM, StaticCache

    from sqlora.model.loading import load_tokenizer
    from sqlora.predict.generation import cache_argument

    folder = (build_tiny_base_model(tmp_path / "gemma3", tokenizer=load_tokenizer(tiny_models["llama"]))
              if family == "gemma3" else tiny_models[family])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    sizes = model_sizes(model)
    assert sizes.dtype_bytes == 2 and sizes.vocab_size == model.get_output_embeddings().out_features
    tokens = 48  # within the gemma3 model's 64-token window: every layer holds every token
    cache = StaticCache(config=model.config, max_cache_len=tokens)
    with torch.inference_mode():
        model(input_ids=torch.zeros((3, 5), dtype=torch.long), use_cache=True, **{cache_argument(): cache})
    allocated = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    assert allocated == 3 * tokens * sizes.kv_bytes_per_token


# ---------------------------------------------------------------- the estimate against what generate holds

class LiveTensorBytes:
    """The peak of the bytes held by tensors that torch ops create within the block (a dispatch
    mode: sees every op, on any device), leaving out `known` storages such as the weights."""

    def __init__(self, known=()):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self
        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.held: dict[int, list[int]] = {}  # storage -> [tensors alive, bytes]
        self.live = self.peak = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for tensor in torch.utils._pytree.tree_flatten(out)[0]:
                    if isinstance(tensor, torch.Tensor):
                        tracker.hold(tensor)
                return out

        self.mode = Mode()

    def hold(self, tensor) -> None:
        import weakref

        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self.known:
            return
        if key not in self.held:
            self.held[key] = [0, storage.nbytes()]
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self.held[key][0] += 1
        weakref.finalize(tensor, self.release, key)

    def release(self, key: int) -> None:
        entry = self.held.get(key)
        if entry is not None:
            entry[0] -= 1
            if entry[0] == 0:
                self.live -= entry[1]
                del self.held[key]


@pytest.mark.parametrize("prompt_tokens, num_candidates", [(300, 2), (300, 1), (12, 2)])
def test_the_estimate_covers_what_generate_holds_on_this_cpu(prompt_tokens, num_candidates):
    """A SmolLM2-shaped model with two layers, two prompts: the peak of the tensors generate
    creates (KV cache, activations, logits, beams) is within the estimate, and not far below it
    (the logits' float32 copies, which a short prompt's share is mostly made of, allow for one
    logits processor that this generation does not run).
    A GPU's kernels hold somewhat different temporaries; each batch's measured peak corrects
    the plan there."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sqlora.predict.generation import left_padded

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    new_tokens, end_tokens = 4, list(range(20))
    token_ids = [torch.randint(100, 49000, (n,)).tolist() for n in (prompt_tokens, prompt_tokens * 2 // 3)]
    search = {"num_beams": num_candidates, "num_return_sequences": num_candidates} if num_candidates > 1 else {}
    live = LiveTensorBytes(known=list(model.parameters()) + list(model.buffers()))
    with torch.inference_mode(), live.mode:
        model.generate(**left_padded(token_ids, 0), max_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=0, eos_token_id=end_tokens, cache_implementation="static",
                       disable_compile=True, **search)
    shape = BatchShape(prompt_tokens, prompt_tokens + new_tokens - 1, new_tokens, num_candidates, len(end_tokens))
    estimate = 2 * prompt_bytes(model_sizes(model), shape)
    assert 0.65 * estimate <= live.peak <= estimate
