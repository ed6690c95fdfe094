"""Every log group of a stage has a retention, made by the stack before anything writes to it."""

import pytest
from aws_cdk.assertions import Template
from templates import build

from infrastructure import stack_names
from infrastructure.chatbot_stack import ChatbotConfig

CONFIGURATIONS = {
    "default": ChatbotConfig(),
    "inference component": ChatbotConfig(scale_to_zero=True, autoscaling=True, alarm_email="ops@example.com"),
    "schedule, a year": ChatbotConfig(
        stage="prod", schedule_on_cron="0 8 ? * MON-FRI *", schedule_off_cron="0 19 ? * MON-FRI *",
        log_retention_days=365,
    ),
}


@pytest.fixture(scope="module", params=CONFIGURATIONS)
def configured(request) -> tuple[ChatbotConfig, Template]:
    config = CONFIGURATIONS[request.param]
    return config, Template.from_stack(build(config))


def test_the_functions_and_the_models_log_groups_keep_logs_for_the_retention(configured):
    config, template = configured
    groups = template.find_resources("AWS::Logs::LogGroup")
    names = {group["Properties"]["LogGroupName"] for group in groups.values()}

    expected = {stack_names.function_log_group_name(config.stage, handler) for handler in stack_names.HANDLERS}
    expected.add(stack_names.endpoint_log_group_name(config.stage))
    if config.serves_through_inference_component:
        expected.add(stack_names.inference_component_log_group_name(config.stage))
    assert names == expected
    assert {group["Properties"]["RetentionInDays"] for group in groups.values()} == {config.log_retention_days}
    # Operations logs, never a conversation: they go with the stack, so it can be deployed again.
    assert {(group["DeletionPolicy"], group["UpdateReplacePolicy"]) for group in groups.values()} == {
        ("Delete", "Delete")
    }


def test_the_model_starts_only_after_its_log_groups_exist(configured):
    config, template = configured
    groups = set(template.find_resources("AWS::Logs::LogGroup"))
    model = {**template.find_resources("AWS::SageMaker::Endpoint"),
             **template.find_resources("AWS::SageMaker::InferenceComponent")}
    assert len(model) == 1 + config.serves_through_inference_component
    for resource in model.values():
        assert groups <= set(resource["DependsOn"])


def test_no_construct_of_the_stack_makes_a_log_group_without_a_retention(configured):
    """A Lambda-backed construct (a custom resource, a log-retention helper) would write to a
    group of its own: any must name one of the stack's, which all have the retention."""
    _, template = configured
    groups = set(template.find_resources("AWS::Logs::LogGroup"))
    for function_id, function in template.find_resources("AWS::Lambda::Function").items():
        group = function["Properties"].get("LoggingConfig", {}).get("LogGroup", {})
        assert group.get("Ref") in groups, f"{function_id} writes to a log group the stack does not keep"
