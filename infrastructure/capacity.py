"""How many generations one copy of the model serves at once, and so how many turn workers a stage
runs: the worker's concurrency is the endpoint's most copies times that (docs/capacity.md).

The KV-cache arithmetic for Llama 2 7B in fp16 on one NVIDIA A10G (24 GB, the GPU of every g5
size below 12xlarge):
- a token's KV cache: K and V, 32 layers, 4,096 wide, 2 bytes each: 2 x 32 x 4096 x 2 = 512 KiB;
- the weights: 6.74e9 parameters x 2 bytes = 13.5 GB (12.6 GiB) of the 22.2 GiB CUDA lets a
  process use;
- what is left, less the activations of a prefill and CUDA's own, holds the KV cache: TGI measures
  it at start-up (its warm-up) and reports "max batch total tokens" 16,224 for this model on one
  A10G (huggingface/text-generation-inference#653), 7.9 GiB: `A10G_LLAMA2_7B_KV_CACHE_TOKENS`;
- TGI admits a request only while the batch's prompts plus their `max_new_tokens` fit in that
  budget (backends/v3/src/queue.rs, TGI 2.3): a turn of the typical prompt (`TYPICAL_PROMPT_TOKENS`)
  asking for MAX_NEW_TOKENS (512) reserves 2,012 tokens, so 16,224 // 2,012 = 8 generations run
  at once; full-context ones (4,096 tokens) only 3.

The other documented models (docs/serving.md) use grouped-query attention: 8 key/value heads of 128
instead of 32, so a token's KV cache is 128 KiB. Their KV budget on an A10G is computed, not
measured: what the container may use, less their weights, less what TGI's measure above leaves
for CUDA and a prefill's activations (1.7 GiB).

vLLM (the other container) takes 0.9 of the GPU (its --gpu-memory-utilization default), and
allocates KV blocks as tokens come instead of reserving `max_new_tokens`: a typical turn holds its
prompt and a typical answer (vllm/core/scheduler.py; preempted when the blocks run out).

No CDK here: the cost model, the fake model and the tests read these facts without starting jsii.
"""

from dataclasses import dataclass

FP16_BYTES = 2
GIB = 2**30


@dataclass(frozen=True)
class Weights:
    """What sizes a model's memory: its parameters, and its KV cache's layers and width (key/value
    heads x head size), from each model's config.json on the Hugging Face Hub."""

    parameters: float
    layers: int
    kv_width: int

    @property
    def bytes(self) -> float:
        return self.parameters * FP16_BYTES

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, every layer, fp16."""
        return 2 * self.layers * self.kv_width * FP16_BYTES


# The documented models (chalicelib/token_bounds.py MODELS) by their Hugging Face id.
MODEL_WEIGHTS = {
    "meta-llama/Llama-2-7b-chat-hf": Weights(6.74e9, layers=32, kv_width=32 * 128),
    "meta-llama/Llama-3.1-8B-Instruct": Weights(8.03e9, layers=32, kv_width=8 * 128),
    "mistralai/Mistral-7B-Instruct-v0.3": Weights(7.25e9, layers=32, kv_width=8 * 128),
}
LLAMA2_7B = MODEL_WEIGHTS["meta-llama/Llama-2-7b-chat-hf"]
LLAMA2_7B_KV_BYTES_PER_TOKEN = LLAMA2_7B.kv_bytes_per_token
# TGI's own measure of the KV cache it can hold for Llama 2 7B fp16 on one A10G
# (text-generation-inference#653: "it overwrites the max batch total tokens to 16224").
A10G_LLAMA2_7B_KV_CACHE_TOKENS = 16_224
# An A10G's memory (nvidia-smi: 23,028 MiB), what CUDA lets one process use of it, and what TGI's
# measure leaves for CUDA's own and a prefill's activations beside Llama 2's weights and KV cache.
A10G_MEMORY_BYTES = 23_028 * 2**20
A10G_USABLE_BYTES = 22.2 * GIB
A10G_RESERVED_BYTES = (
    A10G_USABLE_BYTES - LLAMA2_7B.bytes - A10G_LLAMA2_7B_KV_CACHE_TOKENS * LLAMA2_7B_KV_BYTES_PER_TOKEN
)
# What each container (the stack's `serving`) takes of the GPU: TGI all CUDA lets it, vLLM 0.9.
CONTAINER_BYTES = {"tgi": A10G_USABLE_BYTES, "vllm": 0.9 * A10G_MEMORY_BYTES}
# The instance types whose one GPU (a copy each) is an A10G.
A10G_INSTANCE_TYPES = tuple(f"ml.g5.{size}" for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge"))


def a10g_kv_cache_tokens(model_id: str, serving: str = "tgi") -> int:
    """The KV cache tokens one A10G holds beside the model's weights (Llama 2's under TGI as TGI
    measured it)."""
    weights = MODEL_WEIGHTS[model_id]
    room = CONTAINER_BYTES[serving] - A10G_RESERVED_BYTES - weights.bytes
    return int(room // weights.kv_bytes_per_token)


# A typical turn: its prompt holds the system prompt and a few earlier turns (conservative: the
# turns of LMSYS-Chat-1M, arXiv:2309.11998, average 69.5 prompt and 214.5 answer tokens, so five
# turns of history come to about 1,500), and its answer about 250 tokens. The cost model
# (infrastructure/cost.py) prices turns of this size.
TYPICAL_PROMPT_TOKENS = 1500
TYPICAL_ANSWER_TOKENS = 250
# Lambda's SQS event source runs from 2 to 1,000 functions at once (ScalingConfig.MaximumConcurrency).
MIN_EVENT_SOURCE_CONCURRENCY = 2
MAX_EVENT_SOURCE_CONCURRENCY = 1000


def generations_per_copy(kv_cache_tokens: int, max_new_tokens: int, prompt_tokens: int = TYPICAL_PROMPT_TOKENS) -> int:
    """How many typical turns one copy generates at once: as many as its KV cache holds, each
    reserving its prompt and `max_new_tokens` (TGI's admission rule)."""
    return kv_cache_tokens // (prompt_tokens + max_new_tokens)


def default_generations_per_copy(instance_type: str, model_id: str, max_new_tokens: int,
                                 serving: str = "tgi") -> int | None:
    """The default for an instance type whose KV cache is known, else None. vLLM's turns hold
    what they generate, not `max_new_tokens`."""
    if instance_type not in A10G_INSTANCE_TYPES:
        return None
    held = max_new_tokens if serving == "tgi" else min(max_new_tokens, TYPICAL_ANSWER_TOKENS)
    return generations_per_copy(a10g_kv_cache_tokens(model_id, serving), held)


def worker_concurrency(max_copies: int, generations: int) -> int:
    """The turn worker's concurrency (its reserved concurrency and its SQS event source's maximum):
    what the endpoint generates at once when scaled out to `max_copies`."""
    return max(MIN_EVENT_SOURCE_CONCURRENCY, max_copies * generations)
