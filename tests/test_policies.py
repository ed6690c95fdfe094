"""The hand-written IAM policies grant exactly what the code calls, on the stage's own resources."""

import json
from pathlib import Path

import pytest

CHALICE = Path(__file__).resolve().parent.parent / ".chalice"
CONFIG = json.loads((CHALICE / "config.json").read_text())
DEPLOYED_STAGES = [stage for stage, values in CONFIG["stages"].items() if "iam_policy_file" in values]


def statements(stage):
    policy = json.loads((CHALICE / CONFIG["stages"][stage]["iam_policy_file"]).read_text())
    return {statement["Sid"]: statement for statement in policy["Statement"]}


def test_policies_are_hand_written_for_dev_and_prod():
    assert CONFIG["autogen_policy"] is False
    assert DEPLOYED_STAGES == ["dev", "prod"]


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_each_statement_names_the_stage_resources_and_no_wildcard_resource(stage):
    env = CONFIG["stages"][stage]["environment_variables"]
    granted = statements(stage)

    assert set(granted) == {"InvokeChatModel", "ChatHistory", "PublishTurns", "ConsumeTurns", "Logs"}
    for statement in granted.values():
        assert statement["Effect"] == "Allow" and "*" not in statement["Resource"]
    assert granted["InvokeChatModel"]["Resource"] == [f"arn:aws:sagemaker:*:*:endpoint/{env['SAGEMAKER_ENDPOINT_NAME']}"]
    assert granted["ChatHistory"]["Resource"] == [f"arn:aws:dynamodb:*:*:table/{env['CHAT_TABLE_NAME']}"]
    turns = f"{CONFIG['app_name']}-{stage}-turns"
    assert granted["PublishTurns"]["Resource"] == [f"arn:aws:sns:*:*:{turns}"]
    assert granted["ConsumeTurns"]["Resource"] == [f"arn:aws:sqs:*:*:{turns}"]
    log_group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{CONFIG['app_name']}-{stage}"
    assert granted["Logs"]["Resource"] == [log_group, log_group + ":*"]


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_the_actions_are_exactly_the_calls_the_app_makes(stage, api, dynamodb_calls):
    api.http.get("/chat?sessionid=s&query=hello")
    api.http.get("/sessions/s/messages")
    api.http.delete("/sessions/s")
    granted = statements(stage)

    assert set(granted["ChatHistory"]["Action"]) == {f"dynamodb:{call}" for call in dynamodb_calls}
    assert granted["InvokeChatModel"]["Action"] == ["sagemaker:InvokeEndpoint"]
    assert set(granted["Logs"]["Action"]) == {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
