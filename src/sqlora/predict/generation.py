"""Batched generation (greedy or beam search) that stops at the end of the SQL."""

from __future__ import annotations

from typing import NamedTuple

from ..core.progress import progress
from ..data.prompts import chat_end_token_ids, prompt_text, sql_complete
from ..model.devices import free_gpu_memory, gpu_bytes_free, gpu_peak, watch_gpu_peak
from .batching import BatchShape, BatchSizer, model_sizes, prompt_bytes

# `stop_early`: a sequence whose last LOOP_WINDOW tokens repeat a piece of at most LOOP_PERIOD ends
LOOP_WINDOW, LOOP_PERIOD = 32, 16


def generate(model, tokenizer, prompts: list[list[dict]], *, batch_size: int, max_new_tokens: int,
             answer_prefix: str = "", desc: str = "generating") -> list[str]:
    """One greedy completion per chat prompt, in input order (see `generate_candidates`)."""
    return [c[0] for c in generate_candidates(model, tokenizer, prompts, batch_size=batch_size,
                                              max_new_tokens=max_new_tokens, answer_prefix=answer_prefix,
                                              desc=desc)]


class BatchReport(NamedTuple):
    """One `generate` call of `generate_candidates`."""
    prompts: int
    shape: BatchShape
    estimated_bytes: int         # by `prompt_bytes`, before correction by what earlier batches measured
    peak_bytes: int | None       # the most GPU memory allocated during it (None on the CPU)
    allocated_bytes: int | None  # GPU memory allocated before it (the model's weights, mostly)
    out_of_memory: bool


def generate_candidates(model, tokenizer, prompts: list[list[dict]], *, batch_size: int, max_new_tokens: int,
                        answer_prefix: str = "", num_candidates: int = 1, stop_early: bool = False,
                        desc: str = "generating", on_first_batch=None, on_batch=None,
                        free_bytes: int | None = None, plan_memory: bool = True, cache_per_batch: bool = True,
                        prefill_chunk_tokens: int | None = None) -> list[list[str]]:
    """Completions per chat prompt, in input order: the greedy one, or with `num_candidates` > 1
    the best `num_candidates` of a beam search, best first.

    A batch holds prompts of similar length, longest first, at most `batch_size` sequences
    (`batch_size // num_candidates` prompts), and no more than fit in the GPU memory free
    (`free_bytes`, or what the device has free under SQLORA_GPU_MEMORY_GB) by the bytes a
    prompt takes (`batching.prompt_bytes`: its KV cache, the prefill's activations, the logits),
    corrected by the peak the batch before measured. `plan_memory=False` leaves that out: the
    batches then start at `batch_size` sequences.
    `answer_prefix` starts the assistant's answer (e.g. "SELECT"), so that a chatty base model
    writes SQL instead of prose; the returned texts include it.

    Each batch's KV cache is allocated for its own longest prompt (`cache_per_batch`; otherwise
    transformers keeps every later cache as long as the longest before). A batch that runs out
    of GPU memory is retried with half as many prompts, and no later batch takes more bytes.
    `prefill_chunk_tokens` feeds the prompts to the model that many tokens at a time.

    With `stop_early`, a sequence also ends where the SQL it holds is final, or where it repeats
    itself (`early_stops`), not at `max_new_tokens`: a model that writes on after its SQL, or
    loops, then answers in fewer tokens. It decodes every sequence at every step: for a few
    sequences at a time (`sqlora ask`), not for batches of hundreds.

    The prompts are tokenized once, up front; `on_first_batch()`, if given, is called when that is
    done, just before the first batch generates; `on_batch(BatchReport)` after each batch. On a
    GPU, torch's peak memory statistics are reset before each batch, to measure it.
    """
    texts = [prompt_text(tokenizer, p) + answer_prefix for p in prompts]
    token_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in token_ids]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # longest first: memory errors show early
    ends = sql_end_token_ids(tokenizer)
    options = {"max_new_tokens": max_new_tokens, "eos_token_id": ends, "num_candidates": num_candidates,
               "prefill_chunk_tokens": prefill_chunk_tokens, "stop_answer": answer_prefix if stop_early else None}
    device = next(model.parameters()).device
    sizer = BatchSizer(batch_size // num_candidates, model_sizes(model))
    outputs: list[list[str]] = [[] for _ in texts]
    bar = progress(total=len(texts), desc=desc, unit="q")
    longest_cache = 0  # transformers sizes a static cache for the longest prompt it has seen
    start = 0
    while start < len(order):
        prompt_tokens = lengths[order[start]]
        cache_tokens = prompt_tokens + max_new_tokens - 1
        if not cache_per_batch:
            cache_tokens = longest_cache = max(longest_cache, cache_tokens)
        shape = BatchShape(prompt_tokens, cache_tokens, max_new_tokens, num_candidates, len(ends),
                           prefill_chunk_tokens)
        free = (gpu_bytes_free(device) if free_bytes is None else free_bytes) if plan_memory else None
        batch = order[start:start + sizer.prompts(shape, free)]
        if on_first_batch is not None:
            on_first_batch()
            on_first_batch = None
        allocated = watch_gpu_peak(device)
        try:
            generated = _generate_batch(model, tokenizer, [token_ids[i] for i in batch],
                                        cache_tokens=cache_tokens if cache_per_batch else None, **options)
        except out_of_memory_errors():
            if len(batch) == 1:
                raise
            generated = None
        peak = gpu_peak(device)
        if on_batch is not None:
            on_batch(BatchReport(len(batch), shape, len(batch) * prompt_bytes(sizer.sizes, shape), peak,
                                 allocated, generated is None))
        if generated is None:  # out of memory: retry with half, once the failed batch's tensors are gone
            sizer.ran_out(len(batch), shape)
            free_gpu_memory()
            bar.write(f"{desc}: out of GPU memory with {len(batch) * num_candidates} sequences at once; "
                      f"going on with {len(batch) // 2 * num_candidates}, more as the prompts get shorter")
            continue
        if peak is not None:
            sizer.ran(len(batch), shape, peak - allocated)
        for i, candidates in zip(batch, generated):
            outputs[i] = [answer_prefix + text for text in candidates]
        bar.update(len(batch))
        start += len(batch)
    bar.close()
    return outputs


def _generate_batch(model, tokenizer, token_ids: list[list[int]], *, max_new_tokens: int,
                    eos_token_id: list[int], num_candidates: int, cache_tokens: int | None = None,
                    prefill_chunk_tokens: int | None = None, stop_answer: str | None = None) -> list[list[str]]:
    """`cache_tokens`: a static KV cache of that length, made here; None: the one transformers
    makes for `cache_implementation="static"`."""
    import torch

    device = next(model.parameters()).device
    encoded = {name: tensor.to(device) for name, tensor in left_padded(token_ids, tokenizer.pad_token_id).items()}
    search = {"num_beams": num_candidates, "num_return_sequences": num_candidates,
              "early_stopping": True} if num_candidates > 1 else {}
    # A cache allocated once per batch: the default one grows at every step, and on a GPU each
    # new prompt length then costs seconds of allocator work (benchmarks/bench_kv_cache.py).
    # Compiling it would cost more than it saves on one pass over the dev set.
    cache = {"cache_implementation": "static"} if cache_tokens is None else {
        cache_argument(): static_cache(model, cache_tokens), "cache_implementation": None}
    if prefill_chunk_tokens:
        search["prefill_chunk_size"] = prefill_chunk_tokens
    if stop_answer is not None:
        search["stopping_criteria"] = early_stops(tokenizer, encoded["input_ids"].shape[1], stop_answer)
    with torch.inference_mode():
        generated = model.generate(
            **encoded, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
            eos_token_id=eos_token_id, pad_token_id=tokenizer.pad_token_id,
            temperature=None, top_p=None, top_k=None, disable_compile=True, **cache, **search,
        )
    decoded = tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    return [decoded[i:i + num_candidates] for i in range(0, len(decoded), num_candidates)]


def static_cache(model, tokens: int):
    """An empty static KV cache of `tokens` per sequence, allocated by the first forward pass
    (for whatever batch it brings, beams included)."""
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=tokens)


def cache_argument() -> str:
    """What generate() calls a cache it is given: `cache` in recent transformers, `past_key_values` before."""
    try:
        from transformers.generation.utils import ALL_CACHE_NAMES
    except ImportError:
        return "past_key_values"
    return ALL_CACHE_NAMES[0]


def left_padded(token_ids: list[list[int]], pad_token_id: int) -> dict:
    """`input_ids` and `attention_mask` of one batch, padded on the left (as the tokenizer pads
    with `padding_side="left"`), so that every prompt's last token sits where generation starts."""
    import torch

    longest = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), longest), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        if ids:
            input_ids[row, -len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, -len(ids):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def sql_end_token_ids(tokenizer) -> list[int]:
    """Token ids that end an answer: the chat's end tokens, and every token holding ';' (the SQL
    ends inside it; `extract_sql` cuts there). Matching the stop string ';' instead made generation
    9-10% slower (benchmarks/bench_generate.py: `greedy` against `greedy-semicolon-eos`, H200)."""
    semicolons = {i for token, i in tokenizer.get_vocab().items() if ";" in token}
    return sorted(set(chat_end_token_ids(tokenizer)) | semicolons)


def out_of_memory_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (torch.cuda.OutOfMemoryError, MemoryError)


def degenerate_reason(generations: list[str]) -> str | None:
    """Why a set of generations shows a broken model (all empty, or one token repeated), else None."""
    stripped = [g.strip() for g in generations]
    if stripped and all(not g for g in stripped):
        return "every generation was empty"
    for g in stripped:
        words = g.split()
        if len(words) >= 8 and len(set(words)) == 1:
            return f"a generation repeats one token: {g[:60]!r}"
    return None


def early_stops(tokenizer, prompt_length: int, answer_prefix: str):
    """The stopping criteria of `stop_early`: a sequence ends where its SQL is final
    (`sql_complete`: a blank line or a `Label:` line after it), or where its last LOOP_WINDOW
    tokens repeat a piece of at most LOOP_PERIOD tokens (`a, a, a, ...`: more of it could not make
    the SQL right). In beam search a beam that ends so is a finished candidate, as one that meets
    an end token."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class SqlEnd(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_length:], skip_special_tokens=True)
            return torch.tensor([sql_complete(answer_prefix + text) for text in texts], dtype=torch.bool,
                                device=input_ids.device)

    class Loop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            span = LOOP_WINDOW + LOOP_PERIOD
            if input_ids.shape[1] - prompt_length < span:
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            tail = input_ids[:, -span:]
            latest = tail[:, None, LOOP_PERIOD:]
            earlier = tail.unfold(1, LOOP_WINDOW, 1)[:, :LOOP_PERIOD]  # the windows 1 to LOOP_PERIOD tokens back
            return (earlier == latest).all(dim=-1).any(dim=-1)

    return StoppingCriteriaList([SqlEnd(), Loop()])
