"""`make deploy`'s check of the stage's log groups, against moto (in process, fake credentials):
a group the stack would create that exists outside it (made by Lambda or SageMaker for a stage
deployed before the stack made them) refuses the deploy before anything is created, or is
deleted when the operator says so; groups the stack owns pass. And `make destroy` names such a
group left behind."""

import json

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from moto import mock_aws

from deploy import deploy, destroy
from infrastructure import stack_names
from infrastructure.chatbot_stack import ChatbotConfig
from infrastructure.log_groups import log_group_names

STAGE = "dev"
STACK = stack_names.stack_name(STAGE)


@pytest.fixture
def session(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.Session()


@pytest.fixture
def config() -> ChatbotConfig:
    return ChatbotConfig.from_context(deploy._Context({"stage": STAGE}))


@pytest.fixture
def answers(monkeypatch):
    """The operator's answers to confirm(), in order; a question nobody expected fails the test."""
    given, asked = [], []

    def answer(question):
        asked.append(question)
        assert given, f"unexpected question: {question}"
        return given.pop(0)

    monkeypatch.setattr("builtins.input", answer)
    return given, asked


def groups(session) -> set[str]:
    pages = session.client("logs").get_paginator("describe_log_groups").paginate()
    return {group["logGroupName"] for page in pages for group in page["logGroups"]}


def stage_groups(config: ChatbotConfig) -> dict[str, str]:
    return log_group_names(STAGE, inference_component=config.serves_through_inference_component)


def deploy_stack(session, resources: dict) -> None:
    session.client("cloudformation").create_stack(
        StackName=STACK, TemplateBody=json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}))


def test_a_fresh_account_passes(session, config, answers):
    assert deploy.check_log_groups(session, config, yes=False) == (
        f"log groups: none yet (the stack creates its {len(stage_groups(config))})")
    assert groups(session) == set() and answers[1] == []


def test_groups_the_deployed_stack_owns_pass(session, config, answers):
    names = stage_groups(config)
    deploy_stack(session, {group_id: {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete",
                                      "Properties": {"LogGroupName": name, "RetentionInDays": 30}}
                           for group_id, name in names.items()})
    assert groups(session) == set(names.values())

    assert deploy.check_log_groups(session, config, yes=True) == (
        f"log groups: {len(names)} of {len(names)} exist, all the stack's own")
    assert groups(session) == set(names.values()) and answers[1] == []


def test_another_stage_or_app_is_not_this_stage(session, config, answers):
    for name in (stack_names.function_log_group_name(STAGE, "turn_worker") + "2",
                 stack_names.function_log_group_name("dev2", "api_handler")):
        session.client("logs").create_log_group(logGroupName=name)

    assert deploy.check_log_groups(session, config, yes=True).startswith("log groups: none yet")


def test_groups_of_an_earlier_release_refuse_the_deploy_before_anything_is_created(session, config, answers,
                                                                                   monkeypatch, capsys):
    """A stage of an earlier release: its stack without log groups, and the groups Lambda and
    SageMaker made. With YES=1 nothing is asked and nothing deleted."""
    deploy_stack(session, {"Queue": {"Type": "AWS::SQS::Queue",
                                     "Properties": {"QueueName": stack_names.turns_queue_name(STAGE)}}})
    made_outside = sorted([stack_names.function_log_group_name(STAGE, "websocket_message"),
                           stack_names.endpoint_log_group_name(STAGE)])
    for name in made_outside:
        session.client("logs").create_log_group(logGroupName=name)
    monkeypatch.setenv("HF_TOKEN", "hf_offline")
    # The checks this test is not about: node and the CDK CLI; Service Quotas, which moto lacks.
    monkeypatch.setattr(deploy, "check_tools", lambda: "the tools")
    monkeypatch.setattr(deploy, "check_quota", lambda session, config: "the quota")
    monkeypatch.setattr(deploy, "run", lambda *args, **kwargs: pytest.fail(f"a step ran: {args}"))

    assert deploy.deploy(STAGE, "", yes=True, admin_email=None, run_smoke=False) == 2

    refusal = (f"make deploy: refused: the log groups {', '.join(made_outside)} exist outside the stack {STACK} "
               "(Lambda or SageMaker made them before the stack did) and cdk deploy would fail on them after a "
               "long update: export what you must keep, then delete them (`for group in "
               f"{' '.join(made_outside)}; do aws logs delete-log-group --log-group-name $group; done`), "
               "or run make deploy without YES=1, which offers to\n")
    assert refusal in capsys.readouterr().out
    assert answers[1] == []
    assert groups(session) == set(made_outside)
    assert session.client("secretsmanager").list_secrets()["SecretList"] == []
    assert [s["StackName"] for s in session.client("cloudformation").describe_stacks()["Stacks"]] == [STACK]


def test_the_operator_may_keep_them_and_is_refused(session, config, answers):
    name = stack_names.inference_component_log_group_name(STAGE)
    session.client("logs").create_log_group(logGroupName=name)
    answers[0].append("n")

    with pytest.raises(deploy.Refused, match=f"the log groups {name} exist outside the stack {STACK} .*done`\\)$"):
        deploy.check_log_groups(session, config, yes=False)
    assert groups(session) == {name} and len(answers[1]) == 1


def test_the_operator_may_delete_them(session, config, answers):
    """Only what the stack would create and does not own is deleted."""
    names = stage_groups(config)
    owned, outside = names["Endpoint"], names["turn_worker"]
    deploy_stack(session, {"Endpoint": {"Type": "AWS::Logs::LogGroup",
                                        "Properties": {"LogGroupName": owned}}})
    unrelated = "/aws/lambda/another-app"
    for name in (outside, unrelated):
        session.client("logs").create_log_group(logGroupName=name)
    answers[0].append("y")

    assert deploy.check_log_groups(session, config, yes=False) == (
        f"log groups {outside}: deleted (they were outside the stack, which creates them)")
    (question,) = answers[1]
    assert outside in question and owned not in question and "export" in question
    assert groups(session) == {owned, unrelated}


def test_destroy_names_the_groups_left_that_would_stop_the_next_deploy(session):
    left = stack_names.inference_component_log_group_name(STAGE)
    for name in (left, stack_names.function_log_group_name("dev2", "api_handler")):
        session.client("logs").create_log_group(logGroupName=name)

    assert destroy.kept(session, STAGE) == [f"  the log group {left} (it would stop the stage's next deploy): "
                                            f"aws logs delete-log-group --log-group-name {left}"]


def test_a_stack_mid_change_is_waited_for_before_its_groups_are_judged(session, config, answers, monkeypatch):
    """An interrupted deploy left the stack updating: the group it is creating exists before the
    stack's resource has a PhysicalResourceId. Nothing is asked or deleted; the check waits."""
    name = stage_groups(config)["turn_worker"]
    deploy_stack(session, {"Queue": {"Type": "AWS::SQS::Queue",
                                     "Properties": {"QueueName": stack_names.turns_queue_name(STAGE)}}})
    session.client("logs").create_log_group(logGroupName=name)
    updating = [True]

    def reported_mid_update(parsed, **_):
        if updating[0]:
            parsed["Stacks"][0]["StackStatus"] = "UPDATE_IN_PROGRESS"

    def cloudformation_finishes(seconds):
        """The update ends: the stack owns the group it was creating."""
        assert updating[0], "waited after the update ended"
        session.client("logs").delete_log_group(logGroupName=name)  # moto creates it anew, as the stack's
        session.client("cloudformation").update_stack(StackName=STACK, TemplateBody=json.dumps({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {"turn_worker": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": name}}}}))
        updating[0] = False

    session.events.register("after-call.cloudformation.DescribeStacks", reported_mid_update)
    monkeypatch.setattr(deploy.time, "sleep", cloudformation_finishes)

    assert deploy.check_log_groups(session, config, yes=True) == (
        f"log groups: 1 of {len(stage_groups(config))} exist, all the stack's own")
    assert not updating[0] and groups(session) == {name} and answers[1] == []


def test_a_group_that_cannot_be_deleted_is_refused_in_a_sentence(session, config, answers):
    """The network fails (a BotoCoreError, not an AWS error) while deleting: a refusal, no traceback."""
    name = stage_groups(config)["turn_worker"]
    session.client("logs").create_log_group(logGroupName=name)
    answers[0].append("y")

    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="https://logs.us-east-1.amazonaws.com/")

    session.events.register("before-send.logs.DeleteLogGroup", unreachable)

    with pytest.raises(deploy.Refused, match=f"^could not delete the log group {name} \\(Could not connect"):
        deploy.check_log_groups(session, config, yes=False)
    assert groups(session) == {name}
