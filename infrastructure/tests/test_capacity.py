"""Capacity that follows the endpoint: what one copy generates at once (the KV-cache arithmetic),
and the worker's concurrency the stack derives from it and outputs, for one and several instances."""

import json
import re
from pathlib import Path

import pytest
from aws_cdk.assertions import Template
from templates import build

from chalicelib.settings import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TOTAL_TOKENS
from chalicelib.token_bounds import MODELS
from infrastructure import capacity, stack_names
from infrastructure.chatbot_stack import ChatbotConfig

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30
LLAMA2 = "meta-llama/Llama-2-7b-chat-hf"


def test_the_kv_cache_arithmetic_of_llama2_7b_on_an_a10g():
    weights = 6.74e9 * 2
    kv_cache = capacity.A10G_LLAMA2_7B_KV_CACHE_TOKENS * capacity.LLAMA2_7B_KV_BYTES_PER_TOKEN
    assert capacity.LLAMA2_7B_KV_BYTES_PER_TOKEN == 512 * 1024
    # What TGI measured fits what CUDA lets a process use on the A10G (22.2 GiB), beside the weights.
    assert (weights + kv_cache) / GIB == pytest.approx(20.5, abs=0.1) and kv_cache / GIB == pytest.approx(7.9, abs=0.05)
    # A typical turn (1,500 prompt tokens and MAX_NEW_TOKENS) reserves 2,012 tokens: 8 at once.
    assert capacity.default_generations_per_copy("ml.g5.2xlarge", LLAMA2, DEFAULT_MAX_NEW_TOKENS) == 8
    assert capacity.generations_per_copy(capacity.A10G_LLAMA2_7B_KV_CACHE_TOKENS, 0, DEFAULT_MAX_TOTAL_TOKENS) == 3
    # Fewer new tokens asked for, more turns at once.
    assert capacity.default_generations_per_copy("ml.g5.2xlarge", LLAMA2, 256) == 9
    assert capacity.default_generations_per_copy("ml.g6.2xlarge", LLAMA2, DEFAULT_MAX_NEW_TOKENS) is None


def test_every_documented_model_has_its_weights_and_grouped_query_attention_fits_more_turns():
    assert set(capacity.MODEL_WEIGHTS) == set(MODELS)
    # Llama 3.1 8B and Mistral 7B v0.3: 8 KV heads of 128, a quarter of Llama 2's KV cache a token.
    for model_id in ("meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3"):
        assert capacity.MODEL_WEIGHTS[model_id].kv_bytes_per_token == 128 * 1024
    # Computed from what TGI's measure leaves for CUDA and activations beside Llama 2 (1.7 GiB).
    assert capacity.A10G_RESERVED_BYTES / GIB == pytest.approx(1.72, abs=0.01)
    generations = {model_id: capacity.default_generations_per_copy("ml.g5.2xlarge", model_id, DEFAULT_MAX_NEW_TOKENS)
                   for model_id in MODELS}
    assert generations == {"meta-llama/Llama-2-7b-chat-hf": 8, "meta-llama/Llama-3.1-8B-Instruct": 22,
                           "mistralai/Mistral-7B-Instruct-v0.3": 28}


def test_docs_per_model_table_is_the_arithmetic_of_capacity_py():
    """docs/capacity.md's table of KV cache and generations at once, for every documented model
    (by its display name) and both containers, with the default MAX_NEW_TOKENS."""
    text = (ROOT / "docs" / "capacity.md").read_text()
    header = "| model | TGI: KV cache, generations at once | vLLM: KV cache, generations at once |"
    rows = re.search(re.escape(header) + r"\n\|.*?\n(.*?)(?=\n\n)", text, re.DOTALL)
    assert rows
    cell = r"([\d,]+) tokens( \(measured\))?, \*\*(\d+)\*\*"
    documented = {}
    for row in rows[1].splitlines():
        found = re.fullmatch(rf"\| ([^|]+) \| {cell} \| {cell} \|", row)
        assert found, row
        name, *cells = found.groups()
        documented[name] = [(int(cells[i].replace(",", "")), bool(cells[i + 1]), int(cells[i + 2])) for i in (0, 3)]

    computed = {model.display_name: [
        (capacity.a10g_kv_cache_tokens(model_id, serving), model_id == LLAMA2 and serving == "tgi",
         capacity.default_generations_per_copy("ml.g5.2xlarge", model_id, DEFAULT_MAX_NEW_TOKENS, serving))
        for serving in ("tgi", "vllm")] for model_id, model in MODELS.items()}
    assert documented == computed


def test_vllm_takes_less_of_the_gpu_but_holds_only_what_a_turn_generates():
    """0.9 of the A10G's 23,028 MiB: Llama 2 keeps 12,208 tokens; a typical turn holds its 1,500
    prompt tokens and a 250-token answer, not MAX_NEW_TOKENS."""
    llama2 = "meta-llama/Llama-2-7b-chat-hf"
    assert capacity.a10g_kv_cache_tokens(llama2, "vllm") == 12_208
    assert capacity.default_generations_per_copy("ml.g5.2xlarge", llama2, DEFAULT_MAX_NEW_TOKENS, "vllm") == 6
    assert ChatbotConfig(serving="vllm").worker_concurrency == 6


def test_the_worker_runs_what_the_endpoint_serves_at_its_most_copies_and_an_event_source_at_least_2():
    assert capacity.worker_concurrency(1, 8) == 8
    assert capacity.worker_concurrency(3, 8) == 24
    assert capacity.worker_concurrency(1, 1) == 2


def outputs(config: ChatbotConfig) -> dict:
    return {key: output["Value"] for key, output in Template.from_stack(build(config)).to_json()["Outputs"].items()}


@pytest.mark.parametrize(("config", "workers"), [
    (ChatbotConfig(), 8),
    (ChatbotConfig(autoscaling=True, autoscaling_max_instances=3), 24),
    (ChatbotConfig(instance_count=2), 16),
    (ChatbotConfig(generations_per_copy=5, autoscaling=True, autoscaling_max_instances=4), 20),
    (ChatbotConfig(scale_to_zero=True, autoscaling=True, autoscaling_max_instances=3), 24),
    (ChatbotConfig(max_new_tokens=256), 9),
], ids=["one-instance", "autoscaling-to-3", "two-instances", "5-generations-up-to-4", "copies-up-to-3", "256-new"])
def test_the_stack_outputs_the_workers_concurrency_for_its_most_instances(config, workers):
    assert config.worker_concurrency == workers
    assert outputs(config)[stack_names.WORKER_CONCURRENCY_OUTPUT] == str(workers)


def test_scaling_keeps_copies_at_a_share_of_what_one_serves():
    config = ChatbotConfig(generations_per_copy=12, autoscaling=True, autoscaling_max_instances=2,
                           autoscaling_concurrency_percent=50)
    template = Template.from_stack(build(config))
    (policy,) = template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    assert policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 6


def test_make_runs_workers_are_those_of_a_stage_with_one_default_instance():
    """The load test measures make run as a deployed stage of one ml.g5.2xlarge serves (its own
    token limits are smaller, for the local model: the workers are the deployed stage's)."""
    local = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["local"]
    assert int(local["environment_variables"]["WORKER_CONCURRENCY"]) == ChatbotConfig().worker_concurrency == 8
