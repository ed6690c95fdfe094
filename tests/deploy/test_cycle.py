"""The whole cycle, `make deploy`, then again, then `make destroy`, as an operator runs it from a
fresh clone, against moto's server as the AWS account (tests/deploy/moto_aws.py, which lists
every gap of moto it fills), with fake credentials; nothing reaches AWS.

What it proves: each prerequisite check refuses what it must and creates nothing; the first
deploy bootstraps, deploys the stack (every resource checked through its own service's API, not
only CloudFormation's word), records the outputs, deploys the app in two passes and creates the
first user; the second deploy changes nothing; destroy leaves no endpoint and keeps what it says.
What it cannot: moto runs no Lambda function and serves no API, so the smoke check does not run
against this stage (`SMOKE=0`); it runs against make run instead (tests/e2e/test_smoke.py).
Nor does moto start an instance, pull the TGI image or check IAM: the endpoint is InService at once.

Slow (about 8 minutes on a busy 2-core machine: three CDK synths and five Lambda uploads):
`-m "not slow"` skips it.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest

from deploy.package import vendor_is_current
from infrastructure import stack_names
from local.net import free_port
from tests.deploy.moto_aws import command as moto_command
from tests.servers import running

ROOT = Path(__file__).resolve().parents[2]
STAGE = "dev"
STACK = stack_names.stack_name(STAGE)
# The install markers' inputs: dated before the shared tools' markers, so make reuses them.
INSTALL_INPUTS = ["requirements-deploy.txt", "requirements-lambda.txt", "requirements-dev.txt",
                  "infrastructure/requirements.txt", "package.json", "package-lock.json"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The project's files as git has them (a fresh clone, with this branch's changes), sharing
    the installed tools and, when it is current, the built vendor/."""
    folder = tmp_path_factory.mktemp("clone") / "project"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    for tools in (".venv", "node_modules"):
        (folder / tools).symlink_to(ROOT / tools)
    for name in INSTALL_INPUTS:
        os.utime(folder / name, (946684800, 946684800))
    if vendor_is_current():
        shutil.copytree(ROOT / "vendor", folder / "vendor")
    return folder


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """moto's server, patched, and the environment that points every client at it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as output, running(moto_command(port), endpoint + "/moto-api/", stdout=output):
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
               "CDK_DISABLE_CLI_TELEMETRY": "true", "CDK_DISABLE_VERSION_CHECK": "true",
               "HOME": str(log.parent), "MOTO_LOG": str(log)}


def make(clone: Path, aws: dict, *words: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_TOKEN"))}
    result = subprocess.run(["make", "--no-print-directory", *words], cwd=clone, capture_output=True, text=True,
                            env={**environment, **aws, **env}, stdin=subprocess.DEVNULL, timeout=1800)
    print(result.stdout[-20000:], result.stderr[-5000:])
    return result


def client(aws: dict, service: str):
    return boto3.client(service, endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_DEFAULT_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def nothing_created(aws: dict) -> None:
    assert client(aws, "cloudformation").list_stacks()["StackSummaries"] == []
    assert client(aws, "secretsmanager").list_secrets()["SecretList"] == []


def test_each_prerequisite_refuses_before_anything_is_created(clone, aws):
    no_credentials = {**aws, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE":
                      "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
    refusals = {
        "no usable AWS credentials": make(clone, no_credentials, "deploy", "YES=1"),
        "region eu-central-2 has no tgi image": make(clone, {**aws, "AWS_DEFAULT_REGION": "eu-central-2",
                                                             "AWS_REGION": "eu-central-2"}, "deploy", "YES=1"),
        "the Hugging Face token secret llama2-chatbot/hf-token is not in us-east-1": make(
            clone, aws, "deploy", "YES=1"),
        "the stack's settings are not valid": make(clone, aws, "deploy", "YES=1", "CONTEXT=-c idle_minutes=0"),
    }

    for sentence, result in refusals.items():
        assert result.returncode != 0
        assert f"make deploy: refused: {sentence}" in result.stdout, result.stdout
        nothing_created(aws)

    # A stage of an earlier release: Lambda made a function's log group, which the stack now makes.
    made_by_lambda = stack_names.function_log_group_name(STAGE, stack_names.TURNS_WORKER_HANDLER)
    client(aws, "logs").create_log_group(logGroupName=made_by_lambda)
    refused = make(clone, aws, "deploy", "YES=1", HF_TOKEN="hf_offline")
    assert refused.returncode != 0
    assert f"make deploy: refused: the log groups {made_by_lambda} exist outside the stack {STACK}" in refused.stdout
    nothing_created(aws)
    client(aws, "logs").delete_log_group(logGroupName=made_by_lambda)


def test_deploy_deploy_again_destroy(clone, aws):
    first = make(clone, aws, "deploy", "YES=1", "SMOKE=0", "ADMIN_EMAIL=alice@example.com", HF_TOKEN="hf_offline")
    assert first.returncode == 0
    assert "hf_offline" not in first.stdout + first.stderr
    for step in ("log groups: none yet", "CDK environment aws://123456789012/us-east-1: bootstrapped",
                 f"stack {STACK}: created",
                 "make config: recorded", "chalice deploy: deployed", "user alice@example.com: created"):
        assert step in first.stdout
    assert first.stdout.count("$ ") >= 5 and first.stdout.count("chalice deploy --stage dev") == 2
    stage_files = {path: path.read_bytes() for path in (clone / ".chalice").glob("*.json")}
    really_there(aws, clone)

    second = make(clone, aws, "deploy", "YES=1", "SMOKE=0", "ADMIN_EMAIL=alice@example.com")
    assert second.returncode == 0
    for step in ("exist, all the stack's own", "bootstrapped already", f"stack {STACK}: unchanged",
                 "make config: unchanged", "not redeployed", "user alice@example.com: exists already"):
        assert step in second.stdout
    assert "chalice deploy --stage" not in second.stdout
    assert {path: path.read_bytes() for path in (clone / ".chalice").glob("*.json")} == stage_files

    destroyed = make(clone, aws, "destroy", "YES=1")
    assert destroyed.returncode == 0
    assert "no endpoint is left" in destroyed.stdout
    assert client(aws, "sagemaker").list_endpoints()["Endpoints"] == []
    assert client(aws, "lambda").list_functions()["Functions"] == []
    assert client(aws, "apigateway").get_rest_apis()["items"] == []
    stacks = client(aws, "cloudformation").list_stacks()["StackSummaries"]
    assert {s["StackName"]: s["StackStatus"] for s in stacks}[STACK] == "DELETE_COMPLETE"
    # Kept on purpose, and said so with the command that deletes each.
    assert client(aws, "dynamodb").describe_table(TableName=stack_names.table_name(STAGE))
    for kept in (f"the chat table {stack_names.table_name(STAGE)}", "aws cognito-idp delete-user-pool",
                 "the Hugging Face token secret llama2-chatbot/hf-token"):
        assert kept in destroyed.stdout


def really_there(aws: dict, clone: Path) -> None:
    """What the stack and chalice deploy made, through each service's own API."""
    outputs = {o["OutputKey"]: o["OutputValue"] for o in
               client(aws, "cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]}
    sagemaker = client(aws, "sagemaker")
    assert sagemaker.describe_endpoint(EndpointName=stack_names.endpoint_name(STAGE))["EndpointStatus"] == "InService"
    component = sagemaker.describe_inference_component(InferenceComponentName=outputs["InferenceComponentName"])
    assert component["EndpointName"] == stack_names.endpoint_name(STAGE)
    assert client(aws, "dynamodb").describe_table(TableName=outputs["TableName"])["Table"]["TableStatus"] == "ACTIVE"
    subscriptions = client(aws, "sns").list_subscriptions_by_topic(TopicArn=outputs["TurnsTopicArn"])["Subscriptions"]
    assert [s["Endpoint"] for s in subscriptions] == [outputs["TurnsQueueArn"]]
    cognito = client(aws, "cognito-idp")
    assert cognito.describe_user_pool_client(UserPoolId=outputs["UserPoolId"], ClientId=outputs["UserPoolClientId"])
    alarms = client(aws, "cloudwatch").describe_alarms(AlarmNamePrefix=STACK)["MetricAlarms"]
    assert len(alarms) >= 8
    # The app: five functions with the recorded settings, the REST API behind the stack's pool.
    environment = json.loads((clone / ".chalice" / "config.json").read_text())["stages"][STAGE]["environment_variables"]
    functions = {f["FunctionName"]: f for f in client(aws, "lambda").list_functions()["Functions"]}
    assert sorted(functions) == sorted(stack_names.function_names(STAGE))
    for function in functions.values():
        assert function["Environment"]["Variables"]["USER_POOL_ID"] == outputs["UserPoolId"]
        assert function["Environment"]["Variables"]["WEBSOCKET_URL"] == environment["WEBSOCKET_URL"]
    apigateway = client(aws, "apigateway")
    (api,) = apigateway.get_rest_apis()["items"]
    (authorizer,) = apigateway.get_authorizers(restApiId=api["id"])["items"]
    assert authorizer["providerARNs"] == [outputs["UserPoolArn"]]
    mappings = client(aws, "lambda").list_event_source_mappings()["EventSourceMappings"]
    assert [m["EventSourceArn"] for m in mappings] == [outputs["TurnsQueueArn"]]
