"""`record_outputs` against a stubbed CloudFormation `describe_stacks`, on a copy of `.chalice`."""

import json
import shutil
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from infrastructure import function_policies, record_outputs, stack_names
from infrastructure.function_policies import Deployment
from tests.fake_cloudformation import add_deployed_stack

ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "llama2-chatbot-dev"
STACK = {"StackName": STACK_NAME}
ENDPOINT_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/llama2-chatbot-dev"
TABLE_ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/llama2-chatbot-dev-chat"
TABLE_KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:llama2-chatbot-dev-turns"
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:llama2-chatbot-dev-turns"
OUTPUTS = {
    "EndpointName": "llama2-chatbot-dev",
    "EndpointArn": ENDPOINT_ARN,
    "TableName": "llama2-chatbot-dev-chat",
    "TableArn": TABLE_ARN,
    "TableKeyArn": TABLE_KEY_ARN,
    "MaxInputTokens": "3000",
    "MaxTotalTokens": "4000",
    "MaxNewTokens": "400",
    "Serving": "vllm",
    "ModelId": "meta-llama/Llama-3.1-8B-Instruct",
    "TurnsTopicArn": TOPIC_ARN,
    "TurnsQueueName": "llama2-chatbot-dev-turns",
    "TurnsQueueArn": QUEUE_ARN,
    "TurnsDeadLetterQueueName": "llama2-chatbot-dev-turns-dlq",
    "TurnsDeadLetterQueueArn": "arn:aws:sqs:eu-west-1:123456789012:llama2-chatbot-dev-turns-dlq",
    "WorkerTimeoutSeconds": "300",
    "WorkerConcurrency": "8",
    "UserPoolId": "eu-west-1_AbCdEfGhI",
    "UserPoolArn": "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbCdEfGhI",
    "UserPoolClientId": "1example23456789example0ab",
}


@pytest.fixture
def chalice_dir(tmp_path):
    """The project's own config and policies, copied: the command must handle their real shape."""
    copy = tmp_path / ".chalice"
    copy.mkdir()
    for path in (ROOT / ".chalice").glob("*.json"):
        shutil.copy(path, copy)
    return copy


@pytest.fixture
def stubber(monkeypatch):
    client = boto3.client("cloudformation", region_name="eu-west-1")
    monkeypatch.setattr(record_outputs.boto3, "client", lambda service, region_name: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def run(chalice_dir: Path, stage: str = "dev") -> int:
    return record_outputs.main(["--stage", stage, "--chalice-dir", str(chalice_dir), "--region", "eu-west-1"])


def snapshot(chalice_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in chalice_dir.iterdir()}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_writes_the_outputs_into_the_stages_environment(stubber, chalice_dir):
    before = load(chalice_dir / "config.json")
    add_deployed_stack(stubber, OUTPUTS, STACK_NAME)

    assert run(chalice_dir) == 0

    after = load(chalice_dir / "config.json")
    assert after["stages"]["dev"]["environment_variables"] == {
        "SAGEMAKER_ENDPOINT_NAME": "llama2-chatbot-dev",
        "CHAT_TABLE_NAME": "llama2-chatbot-dev-chat",
        "MAX_INPUT_TOKENS": "3000",
        "MAX_TOTAL_TOKENS": "4000",
        "MAX_NEW_TOKENS": "400",
        "SERVING": "vllm",
        "MODEL_ID": "meta-llama/Llama-3.1-8B-Instruct",
        "TURNS_TOPIC_ARN": TOPIC_ARN,
        "TURNS_QUEUE_NAME": "llama2-chatbot-dev-turns",
        "USER_POOL_ID": "eu-west-1_AbCdEfGhI",
        "USER_POOL_ARN": "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbCdEfGhI",
        "USER_POOL_CLIENT_ID": "1example23456789example0ab",
        "WORKER_TIMEOUT_SECONDS": "300",
        "WORKER_CONCURRENCY": "8",
        "STAGE": "dev",
    }
    assert after["stages"]["dev"]["lambda_functions"]["turn_worker"]["lambda_timeout"] == 300
    after["stages"]["dev"]["lambda_functions"]["turn_worker"]["lambda_timeout"] = 600  # as committed
    for config in (before, after):
        config["stages"]["dev"].pop("environment_variables")
    assert after == before


@pytest.mark.parametrize(("output", "variable", "setting", "value"), [
    ("WorkerTimeoutSeconds", "WORKER_TIMEOUT_SECONDS", "lambda_timeout", 600),
    # The endpoint scaled out to 3 instances of 8 generations: 24 workers, reserved.
    ("WorkerConcurrency", "WORKER_CONCURRENCY", "reserved_concurrency", 24),
])
def test_gives_the_worker_function_the_stacks_timeout_and_concurrency(stubber, chalice_dir, output, variable,
                                                                       setting, value):
    add_deployed_stack(stubber, {**OUTPUTS, output: str(value)}, STACK_NAME)

    assert run(chalice_dir) == 0

    stage = load(chalice_dir / "config.json")["stages"]["dev"]
    assert stage["lambda_functions"]["turn_worker"][setting] == value
    assert stage["environment_variables"][variable] == str(value)


def test_writes_each_functions_policy_for_the_stacks_region_account_and_table_key(stubber, chalice_dir):
    prod = {name: load(chalice_dir / name) for name in (f.name for f in chalice_dir.glob("policy-prod-*.json"))}
    add_deployed_stack(stubber, OUTPUTS, STACK_NAME)

    assert run(chalice_dir) == 0

    where = Deployment("aws", "eu-west-1", "123456789012", table_key_id="1234abcd-12ab-34cd-56ef-1234567890ab")
    functions = load(chalice_dir / "config.json")["stages"]["dev"]["lambda_functions"]
    for handler in stack_names.HANDLERS:
        assert functions[handler]["iam_policy_file"] == f"policy-dev-{handler}.json"
        assert load(chalice_dir / f"policy-dev-{handler}.json") == function_policies.policy("dev", handler, where)
    text = "".join((chalice_dir / f"policy-dev-{handler}.json").read_text() for handler in stack_names.HANDLERS)
    assert ENDPOINT_ARN in text and TABLE_ARN in text and TOPIC_ARN in text and QUEUE_ARN in text
    assert TABLE_KEY_ARN in text and function_policies.UNSET in text  # the WebSocket API is not known yet
    assert {name: load(chalice_dir / name) for name in prod} == prod


def test_running_again_changes_nothing_more(stubber, chalice_dir):
    add_deployed_stack(stubber, OUTPUTS, STACK_NAME)
    add_deployed_stack(stubber, OUTPUTS, STACK_NAME)
    assert run(chalice_dir) == 0
    first = snapshot(chalice_dir)

    assert run(chalice_dir) == 0

    assert snapshot(chalice_dir) == first


def test_a_missing_stack_is_reported_and_no_file_changes(stubber, chalice_dir, capsys):
    stubber.add_client_error(
        "describe_stacks",
        service_error_code="ValidationError",
        service_message="Stack with id llama2-chatbot-dev does not exist",
        http_status_code=400,
        expected_params=STACK,
    )
    before = snapshot(chalice_dir)

    assert run(chalice_dir) == 1

    error = capsys.readouterr().err
    assert "Stack with id llama2-chatbot-dev does not exist (region eu-west-1)" in error
    assert "cdk deploy" in error
    assert snapshot(chalice_dir) == before


def test_a_stack_without_the_outputs_is_reported_and_no_file_changes(stubber, chalice_dir, capsys):
    add_deployed_stack(stubber, {"EndpointName": "llama2-chatbot-dev"}, STACK_NAME)
    before = snapshot(chalice_dir)

    assert run(chalice_dir) == 1

    missing = (
        "TableName, MaxInputTokens, MaxTotalTokens, MaxNewTokens, Serving, ModelId, TurnsTopicArn, TurnsQueueName, "
        "UserPoolId, UserPoolArn, UserPoolClientId, WorkerTimeoutSeconds, WorkerConcurrency, EndpointArn, TableArn, "
        "TableKeyArn, "
        "TurnsQueueArn"
    )
    assert f"(CREATE_COMPLETE) lacks the outputs {missing}" in capsys.readouterr().err
    assert snapshot(chalice_dir) == before


def test_a_stage_missing_from_the_config_is_reported_and_no_file_changes(stubber, chalice_dir, capsys):
    add_deployed_stack(stubber, OUTPUTS, "llama2-chatbot-qa")
    before = snapshot(chalice_dir)

    assert run(chalice_dir, stage="qa") == 1

    assert "stage 'qa' is not in config.json" in capsys.readouterr().err
    assert snapshot(chalice_dir) == before


def test_a_stack_naming_a_resource_otherwise_than_the_policies_is_reported_and_no_file_changes(
    stubber, chalice_dir, capsys
):
    add_deployed_stack(stubber, {**OUTPUTS, "TurnsQueueArn": QUEUE_ARN + "-v2"}, STACK_NAME)
    before = snapshot(chalice_dir)

    assert run(chalice_dir) == 1

    assert f"the stack's TurnsQueueArn is {QUEUE_ARN}-v2, not {QUEUE_ARN}" in capsys.readouterr().err
    assert snapshot(chalice_dir) == before


def test_the_inference_component_is_recorded_when_the_stack_has_one_and_removed_when_not(stubber, chalice_dir):
    add_deployed_stack(stubber, {**OUTPUTS, "InferenceComponentName": "llama2-chatbot-dev-model"}, STACK_NAME)
    add_deployed_stack(stubber, OUTPUTS, STACK_NAME)

    assert run(chalice_dir) == 0
    environment = load(chalice_dir / "config.json")["stages"]["dev"]["environment_variables"]
    assert environment["SAGEMAKER_INFERENCE_COMPONENT_NAME"] == "llama2-chatbot-dev-model"

    assert run(chalice_dir) == 0
    environment = load(chalice_dir / "config.json")["stages"]["dev"]["environment_variables"]
    assert "SAGEMAKER_INFERENCE_COMPONENT_NAME" not in environment


def test_after_the_first_chalice_deploy_the_websocket_api_is_recorded(stubber, chalice_dir):
    """`chalice deploy` records the WebSocket API it created; `make config` then gives its URL
    to the page (WEBSOCKET_URL) and its connections alone to the functions that post to them."""
    (chalice_dir / "deployed").mkdir()
    (chalice_dir / "deployed" / "dev.json").write_text(json.dumps({"resources": [
        {"name": "api_handler", "resource_type": "lambda_function",
         "lambda_arn": "arn:aws:lambda:eu-west-1:123456789012:function:llama2-chatbot-dev"},
        {"name": "websocket_api", "resource_type": "websocket_api", "websocket_api_id": "w5x6y7z8",
         "websocket_api_url": "wss://w5x6y7z8.execute-api.eu-west-1.amazonaws.com/api/"},
    ], "schema_version": "2.0", "backend": "api"}))
    add_deployed_stack(stubber, OUTPUTS, STACK_NAME)

    assert run(chalice_dir) == 0

    environment = load(chalice_dir / "config.json")["stages"]["dev"]["environment_variables"]
    assert environment["WEBSOCKET_URL"] == "wss://w5x6y7z8.execute-api.eu-west-1.amazonaws.com/api"
    connections = {
        handler: [s["Resource"] for s in load(chalice_dir / f"policy-dev-{handler}.json")["Statement"]
                  if s["Action"] == ["execute-api:ManageConnections"]]
        for handler in stack_names.HANDLERS
    }
    api = "arn:aws:execute-api:eu-west-1:123456789012:w5x6y7z8/api"
    assert connections == {"api_handler": [], "websocket_connect": [], "websocket_disconnect": [],
                           "websocket_message": [[f"{api}/POST/@connections/*", f"{api}/DELETE/@connections/*"]],
                           "turn_worker": [[f"{api}/POST/@connections/*"]]}
