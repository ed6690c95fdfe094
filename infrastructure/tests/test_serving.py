"""The stack with each serving container (TGI, vLLM) and each documented model: the image, the
container's environment and token limits, the host AMI, what `make config` records, cdk-nag clean."""

import json
import re
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks
from templates import build, only

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TOTAL_TOKENS
from chalicelib.token_bounds import MODELS
from infrastructure.chatbot_stack import (
    IMAGES,
    MODEL_DEFAULTS,
    VLLM_IMAGE_REPOSITORY,
    VLLM_IMAGE_TAG,
    ChatbotConfig,
)
from local import vllm as local_vllm

ROOT = Path(__file__).resolve().parents[2]
HF_TOKEN = "{{resolve:secretsmanager:llama2-chatbot/hf-token:SecretString:::}}"
# The limits recommended for each documented model on one A10G (docs/serving.md).
LIMITS = {
    "meta-llama/Llama-2-7b-chat-hf": (DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS),
    "meta-llama/Llama-3.1-8B-Instruct": (7680, 8192),
    "mistralai/Mistral-7B-Instruct-v0.3": (7680, 8192),
}
CASES = [(serving, model_id) for serving in IMAGES for model_id in MODELS]
CASE_IDS = [f"{serving}-{model_id.split('/')[1]}" for serving, model_id in CASES]


def configured(**context) -> ChatbotConfig:
    return ChatbotConfig.from_context(cdk.App(context=context).node)


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def case(request):
    serving, model_id = request.param
    config = configured(serving=serving, model_id=model_id)
    stack = build(config)
    return config, stack, Template.from_stack(stack)


def test_every_documented_model_has_its_recommended_limits():
    assert LIMITS.keys() == MODELS.keys()
    assert all(LIMITS[model_id] == (limits["max_input_tokens"], limits["max_total_tokens"])
               for model_id, limits in MODEL_DEFAULTS.items())


def test_the_model_runs_the_containers_pinned_image_from_the_regions_registry(case):
    config, _, template = case
    image = IMAGES[config.serving]
    _, model = only(template, "AWS::SageMaker::Model")
    parts = model["Properties"]["PrimaryContainer"]["Image"]["Fn::Join"][1]
    assert parts[0] == {"Fn::FindInMap": [f"{image.name}ImageRegistry", {"Ref": "AWS::Region"}, "account"]}
    assert parts[-1] == f"/{image.repository}:{image.tag}"
    mapping = template.to_json()["Mappings"][f"{image.name}ImageRegistry"]
    assert mapping.keys() == image.registry_accounts.keys() and mapping["us-east-1"] == {"account": "763104351884"}


@pytest.mark.parametrize("serving, model_id", CASES, ids=CASE_IDS)
def test_the_stacks_description_names_the_model_and_the_container_it_deploys(serving, model_id):
    description = configured(serving=serving, model_id=model_id, stage="prod").description
    assert description.startswith(f"Chatbot (prod): {MODELS[model_id].display_name} in {IMAGES[serving].label} ")
    assert ("Llama 2" in description) == (model_id == "meta-llama/Llama-2-7b-chat-hf")
    assert ("TGI" in description) == (serving == "tgi")


def test_the_vllm_image_is_the_release_whose_rules_local_vllm_follows():
    """Pinning another vLLM image fails here until local/vllm.py's rules and docs/serving.md are
    read anew from that release: the tag names it (AWS DLC tags begin with the vLLM version)."""
    release = re.fullmatch(r"(\d+\.\d+\.\d+)-gpu-py\d+-cu\d+-ubuntu[\d.]+-sagemaker", VLLM_IMAGE_TAG)[1]
    followed = re.search(r"Read from vLLM (\S+), the version of the pinned image \(upstream "
                         r"`vllm/vllm-openai:v([^`]+)`", local_vllm.__doc__)
    assert followed and followed.groups() == (release, release)
    serving = (ROOT / "docs" / "serving.md").read_text()
    assert f"`{VLLM_IMAGE_REPOSITORY}:{VLLM_IMAGE_TAG}` (upstream `vllm/vllm-openai:v{release}`)" in serving


def test_the_containers_environment_carries_the_model_the_limits_and_the_token_by_reference(case):
    config, _, template = case
    max_input, max_total = LIMITS[config.model_id]
    _, model = only(template, "AWS::SageMaker::Model")
    environment = model["Properties"]["PrimaryContainer"]["Environment"]
    if config.serving == "vllm":
        assert environment == {
            "SM_VLLM_MODEL": config.model_id,
            "SM_VLLM_TENSOR_PARALLEL_SIZE": "1",
            "SM_VLLM_MAX_MODEL_LEN": str(max_total),
            "SM_VLLM_MAX_NUM_BATCHED_TOKENS": str(max_total),
            "HF_TOKEN": HF_TOKEN,
        }
    else:
        assert environment == {
            "HF_MODEL_ID": config.model_id,
            "SM_NUM_GPUS": "1",
            "MAX_INPUT_TOKENS": str(max_input),
            "MAX_TOTAL_TOKENS": str(max_total),
            "HF_TOKEN": HF_TOKEN,
        }


def test_the_outputs_tell_make_config_the_container_the_model_and_the_limits(case):
    config, _, template = case
    max_input, max_total = LIMITS[config.model_id]
    outputs = {key: value["Value"] for key, value in template.to_json()["Outputs"].items()}
    assert (outputs["Serving"], outputs["ModelId"]) == (config.serving, config.model_id)
    assert (outputs["MaxInputTokens"], outputs["MaxTotalTokens"], outputs["MaxNewTokens"]) == (
        str(max_input), str(max_total), str(DEFAULT_MAX_NEW_TOKENS))


def test_only_the_cuda_13_vllm_image_names_a_host_ami(case):
    config, _, template = case
    _, endpoint_config = only(template, "AWS::SageMaker::EndpointConfig")
    (variant,) = endpoint_config["Properties"]["ProductionVariants"]
    expected = "al2-ami-sagemaker-inference-gpu-3-1" if config.serving == "vllm" else None
    assert variant.get("InferenceAmiVersion") == expected


def test_the_execution_role_may_pull_only_the_containers_repository(case):
    config, _, template = case
    _, role = only(template, "AWS::IAM::Role")
    (policy,) = role["Properties"]["Policies"]
    pull = next(s for s in policy["PolicyDocument"]["Statement"] if s["Sid"] == "PullModelImage")
    assert json.dumps(pull["Resource"]).endswith(f':repository/{IMAGES[config.serving].repository}"]]}}')


def test_aws_solutions_checks_find_nothing_unacknowledged(case):
    _, stack, _ = case
    report = AwsSolutionsChecks().validate_scope(stack)
    assert [violation.rule_name for violation in report.violations] == []


@pytest.mark.parametrize("serving", IMAGES)
def test_scaled_to_zero_the_inference_component_serves_the_container_on_its_ami(serving):
    template = Template.from_stack(build(configured(serving=serving, scale_to_zero="true")))
    model_id, _ = only(template, "AWS::SageMaker::Model")
    _, component = only(template, "AWS::SageMaker::InferenceComponent")
    assert component["Properties"]["Specification"]["ModelName"] == {"Fn::GetAtt": [model_id, "ModelName"]}
    _, endpoint_config = only(template, "AWS::SageMaker::EndpointConfig")
    (variant,) = endpoint_config["Properties"]["ProductionVariants"]
    assert variant.get("InferenceAmiVersion") == IMAGES[serving].inference_ami_version
    assert "InferenceComponentName" in template.to_json()["Outputs"]


def test_a_pinned_region_without_the_containers_registry_is_refused():
    with pytest.raises(ValueError, match=r"no vllm image registry known for region cn-north-1; supported: af-south-1"):
        build(configured(serving="vllm"), env=cdk.Environment(region="cn-north-1"))
    pinned = Template.from_stack(build(configured(serving="vllm"), env=cdk.Environment(region="eu-central-2")))
    _, model = only(pinned, "AWS::SageMaker::Model")
    assert model["Properties"]["PrimaryContainer"]["Image"]["Fn::Join"][1][0].startswith("380420809688.dkr.ecr.")


@pytest.mark.parametrize("context, message", [
    ({"serving": "lmi"}, r"serving='lmi': one of tgi, vllm"),
    ({"model_id": "meta-llama/Llama-3.2-1B-Instruct"}, r"model_id='meta-llama/Llama-3.2-1B-Instruct': one of the"),
])
def test_an_unknown_container_or_model_is_refused_before_synth(context, message):
    with pytest.raises(ValueError, match=message):
        configured(**context)


def test_context_limits_override_the_models_recommended_ones():
    config = configured(model_id="meta-llama/Llama-3.1-8B-Instruct", max_total_tokens="16384",
                        max_input_tokens="15360")
    assert (config.max_input_tokens, config.max_total_tokens) == (15360, 16384)
