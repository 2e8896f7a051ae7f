"""Generation time by KV cache and allocator, on a random model shaped like SmolLM2-135M (no
files needed): the default cache that grows every step against a static one allocated per batch.

    python benchmarks/bench_kv_cache.py
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python benchmarks/bench_kv_cache.py

Each line times one `generate` of 512 left-padded prompts and 100 new tokens. A new prompt length
is what the second batch of a prediction run brings.
"""

import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                  tie_word_embeddings=True, rope_theta=100000.0)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()


def inputs(n, length):
    ids = torch.randint(10, 49000, (n, length), device="cuda")
    mask = torch.ones(n, length, dtype=torch.long, device="cuda")
    pad = torch.randint(0, length // 3, (n,))
    for i, p in enumerate(pad.tolist()):
        mask[i, :p] = 0
        ids[i, :p] = 0
    return ids, mask


def run(tag, n=512, length=560, new=100, **kw):
    ids, mask = inputs(n, length)
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0, **kw)
    torch.cuda.synchronize()
    print(f"{tag}: {time.perf_counter() - t:.2f} s", flush=True)


run("tiny warmup", n=2, length=16, new=4)
run("dynamic 1st")
run("dynamic 2nd")
run("dynamic 3rd, other shape", length=400)
try:
    run("static, no compile", cache_implementation="static", disable_compile=True)
    run("static 2nd", cache_implementation="static", disable_compile=True)
except Exception as e:
    print("static failed:", repr(e)[:300])
