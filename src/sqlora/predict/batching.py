"""How many prompts one `generate` call takes: the bytes a prompt's sequences hold on the GPU,
from the model's sizes, against the bytes free.

A batch of left-padded prompts, `num_candidates` sequences each, holds at its peak:
- the static KV cache, allocated for the whole batch before the first token: per sequence,
  the cache length (longest prompt + new tokens) times the KV bytes per token (`model_sizes`);
- during the prefill, one layer's activations over every prompt token (the MLP's three
  intermediate tensors, or the attention's queries, its keys and values repeated over the
  query heads, and its mask as a float bias), and the boolean attention mask that every layer
  reads;
- during the decoding, each sequence's logits over the vocabulary and their float32 copies
  (log-softmax, beam scores);
- the token ids and the beam search's bookkeeping: it keeps (1 + end tokens) x beams
  continuations of every prompt for each step, each as long as the whole sequence.

`BatchSizer` turns that into prompts per batch, corrects the estimate by the peak each batch
measured, and after running out of memory halves what failed.
"""

from __future__ import annotations

from typing import NamedTuple

# The share of the free bytes a batch is planned to take, and what is kept back besides (the
# allocator's rounding, cuBLAS workspaces, the output on the way to the CPU).
USABLE_SHARE = 0.9
RESERVED_BYTES = 256 * 2**20
FLOAT32_LOGIT_COPIES = 4  # the float32 logits, their log-softmax, a logits processor's output, beam scores


class ModelSizes(NamedTuple):
    """The model's sizes that decide what a sequence costs in memory."""
    kv_bytes_per_token: int   # keys and values of every layer for one token of one sequence
    hidden_size: int
    intermediate_size: int
    attention_width: int      # query heads x head dim
    vocab_size: int
    dtype_bytes: int          # of the activations (the compute dtype)


class BatchShape(NamedTuple):
    """What decides a batch's memory besides how many prompts it holds."""
    prompt_tokens: int        # the longest prompt, which the batch is padded to
    cache_tokens: int         # the static KV cache's length
    new_tokens: int
    num_candidates: int = 1   # sequences per prompt (beams)
    end_tokens: int = 1       # token ids that end an answer
    prefill_tokens: int | None = None  # prompt tokens per prefill step, if the prefill is chunked


def prompt_bytes(sizes: ModelSizes, shape: BatchShape) -> int:
    """The bytes one prompt's share of a batch holds at the batch's peak (see the module)."""
    b = sizes.dtype_bytes
    hidden, width = sizes.hidden_size, sizes.attention_width
    cache = shape.cache_tokens
    chunk = min(shape.prompt_tokens, shape.prefill_tokens or shape.prompt_tokens)
    mlp = chunk * (3 * sizes.intermediate_size + 5 * hidden) * b
    attention = (chunk * (4 * hidden + 2 * width) * b + 2 * cache * width * b  # keys, values over query heads
                 + 2 * chunk * cache * b)  # the mask as a float bias, aligned
    prefill = max(mlp, attention) + chunk * cache  # + the boolean mask
    logits = sizes.vocab_size * (b + 4 * FLOAT32_LOGIT_COPIES)
    sequence = cache * sizes.kv_bytes_per_token + max(prefill, logits)
    length = shape.prompt_tokens + shape.new_tokens
    candidates = shape.num_candidates
    if candidates > 1:  # running, finished and merged beams, their scores and source beams
        kept = max(2, 1 + shape.end_tokens) * candidates
        token_ids = (3 * kept + 4 * candidates) * (length * 8 + shape.new_tokens * 4)
    else:
        token_ids = 3 * length * 8
    return candidates * (sequence + 2 * length * 8) + token_ids  # + the growing attention mask


def prompts_that_fit(free_bytes: int, each: float) -> int:
    """Prompts of `each` bytes that the planned share of `free_bytes` holds (0 when none)."""
    usable = free_bytes * USABLE_SHARE - RESERVED_BYTES
    return max(0, int(usable // each)) if usable > 0 else 0


class BatchSizer:
    """Prompts per batch, at most `most_prompts`: as many as fit in the free bytes by
    `prompt_bytes`, times the ratio of measured to estimated bytes of the last batch that ran.

    After a batch of n prompts runs out of memory, the next batch of the same shape holds n // 2,
    and from then on every batch holds at most the estimated bytes of those n // 2: shorter
    prompts, which come later, still go in larger batches.
    """

    def __init__(self, most_prompts: int, sizes: ModelSizes):
        self.most_prompts = max(1, most_prompts)
        self.sizes = sizes
        self.scale = 1.0            # measured / estimated bytes of the last batch that ran
        self.limit: float | None = None  # estimated bytes a batch may take, once one ran out

    def prompts(self, shape: BatchShape, free_bytes: int | None) -> int:
        """How many prompts of this shape the next batch takes; `free_bytes` None: no plan by
        memory (a CPU), only `most_prompts` and what running out of memory taught."""
        each = prompt_bytes(self.sizes, shape)
        size = self.most_prompts
        if free_bytes is not None:
            size = min(size, prompts_that_fit(free_bytes, each * self.scale))
        if self.limit is not None:
            size = min(size, int(self.limit // each))
        return max(1, size)

    def ran(self, prompts: int, shape: BatchShape, peak_bytes: int) -> None:
        """A batch ran, taking `peak_bytes` at most beyond what was allocated before it."""
        if peak_bytes > 0:
            self.scale = peak_bytes / (prompts * prompt_bytes(self.sizes, shape))

    def ran_out(self, prompts: int, shape: BatchShape) -> None:
        """A batch of `prompts` ran out of memory."""
        self.limit = prompts // 2 * prompt_bytes(self.sizes, shape)


def model_sizes(model) -> ModelSizes:
    """`ModelSizes` of a transformers causal LM, from its config: KV bytes per token = layers x
    KV heads x head dim x 2 (keys, values) x the activations' dtype size. A model whose cache
    holds less (sliding-window layers, layers sharing their KV) is overestimated, on the safe
    side; the peak each batch measures corrects the estimate for the batches after it."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    embeddings = model.get_input_embeddings().weight
    dtype_bytes = embeddings.dtype.itemsize if embeddings.dtype.is_floating_point else 2
    output = model.get_output_embeddings()
    return ModelSizes(kv_bytes_per_token=config.num_hidden_layers * kv_heads * head_dim * 2 * dtype_bytes,
                      hidden_size=hidden, intermediate_size=getattr(config, "intermediate_size", None) or 4 * hidden,
                      attention_width=heads * head_dim,
                      vocab_size=getattr(output, "out_features", None) or config.vocab_size, dtype_bytes=dtype_bytes)
