"""How many generations one copy of the model serves at once, and so how many turn workers a stage
runs: the worker's concurrency is the endpoint's most copies times that (docs/capacity.md).

The KV-cache arithmetic for Llama 2 7B in fp16 on one NVIDIA A10G (24 GB, the GPU of every g5
size below 12xlarge):
- a token's KV cache: K and V, 32 layers, 4,096 wide, 2 bytes each: 2 x 32 x 4096 x 2 = 512 KiB;
- the weights: 6.74e9 parameters x 2 bytes = 13.5 GB (12.6 GiB) of the 22.2 GiB CUDA lets a
  process use;
- what is left, less the activations of a prefill and CUDA's own, holds the KV cache: TGI measures
  it at start-up (its warm-up) and reports "max batch total tokens" 16,224 for this model on one
  A10G (huggingface/text-generation-inference#653), 7.9 GiB: `KV_CACHE_TOKENS`;
- TGI admits a request only while the batch's prompts plus their `max_new_tokens` fit in that
  budget (backends/v3/src/queue.rs, TGI 2.3): a turn of the typical prompt (`TYPICAL_PROMPT_TOKENS`)
  asking for MAX_NEW_TOKENS (512) reserves 2,012 tokens, so 16,224 // 2,012 = 8 generations run
  at once; full-context ones (4,096 tokens) only 3.

No CDK here: the cost model, the fake model and the tests read these facts without starting jsii.
"""

# K and V, 32 layers, a hidden size of 4,096, fp16.
LLAMA2_7B_KV_BYTES_PER_TOKEN = 2 * 32 * 4096 * 2
# TGI's own measure of the KV cache it can hold for Llama 2 7B fp16 on one A10G
# (text-generation-inference#653: "it overwrites the max batch total tokens to 16224").
A10G_LLAMA2_7B_KV_CACHE_TOKENS = 16_224
# The KV cache tokens one copy of the model holds, per instance type (one GPU a copy).
KV_CACHE_TOKENS = {
    f"ml.g5.{size}": A10G_LLAMA2_7B_KV_CACHE_TOKENS for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")
}
# A typical turn: its prompt holds the system prompt and a few earlier turns (conservative: the
# turns of LMSYS-Chat-1M, arXiv:2309.11998, average 69.5 prompt and 214.5 answer tokens, so five
# turns of history come to about 1,500), and its answer about 250 tokens. The cost model
# (infrastructure/cost.py) prices turns of this size.
TYPICAL_PROMPT_TOKENS = 1500
TYPICAL_ANSWER_TOKENS = 250
# Lambda's SQS event source runs at least 2 functions at once (ScalingConfig.MaximumConcurrency).
MIN_EVENT_SOURCE_CONCURRENCY = 2


def generations_per_copy(kv_cache_tokens: int, max_new_tokens: int, prompt_tokens: int = TYPICAL_PROMPT_TOKENS) -> int:
    """How many typical turns one copy generates at once: as many as its KV cache holds, each
    reserving its prompt and `max_new_tokens` (TGI's admission rule)."""
    return kv_cache_tokens // (prompt_tokens + max_new_tokens)


def default_generations_per_copy(instance_type: str, max_new_tokens: int) -> int | None:
    """The default for an instance type whose KV cache is known, else None."""
    if instance_type not in KV_CACHE_TOKENS:
        return None
    return generations_per_copy(KV_CACHE_TOKENS[instance_type], max_new_tokens)


def worker_concurrency(max_copies: int, generations: int) -> int:
    """The turn worker's concurrency (its reserved concurrency and its SQS event source's maximum):
    what the endpoint generates at once when scaled out to `max_copies`."""
    return max(MIN_EVENT_SOURCE_CONCURRENCY, max_copies * generations)
