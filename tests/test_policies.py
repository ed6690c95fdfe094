"""The hand-written IAM policies grant exactly what the code calls, on the stage's own resources.

Users run `make test` both on the committed template (region and account `*`) and after
`make config` has recorded a stage (the stack's region and account), so every test runs on the
project's `.chalice` as it is and on a copy recorded from a faked deployed stack.
"""

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib import services
from chalicelib.table import SESSIONS_INDEX
from infrastructure import record_outputs, stack_names
from tests import fake_cloudformation

CHALICE = Path(__file__).resolve().parent.parent / ".chalice"
TEMPLATE = ("*", "*")
# A region and account `make config` may have written into the project's own files.
RECORDED_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
RECORDED_ACCOUNT = re.compile(r"\d{12}")


@dataclass(frozen=True)
class ChaliceProject:
    """A `.chalice` folder, and the region and account its policies should name for each stage."""

    path: Path
    recorded: tuple[str, str] | None  # None: the template, or whatever `make config` recorded

    @property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def deployed_stages(self) -> list[str]:
        return [stage for stage, values in self.config["stages"].items() if "iam_policy_file" in values]

    def statements(self, stage: str) -> dict[str, dict]:
        policy = json.loads((self.path / self.config["stages"][stage]["iam_policy_file"]).read_text())
        return {statement["Sid"]: statement for statement in policy["Statement"]}

    def region_and_account(self, stage: str) -> tuple[str, str]:
        if self.recorded:
            return self.recorded
        _, _, _, region, account, _ = self.statements(stage)["InvokeChatModel"]["Resource"][0].split(":", 5)
        if (region, account) != TEMPLATE:
            assert RECORDED_REGION.fullmatch(region) and RECORDED_ACCOUNT.fullmatch(account), (region, account)
        return region, account


def recorded_copy(directory: Path) -> ChaliceProject:
    """The project's `.chalice` copied, with each deployed stage recorded as `make config` does."""
    directory.mkdir()
    for path in CHALICE.glob("*.json"):
        shutil.copy(path, directory)
    project = ChaliceProject(directory, (fake_cloudformation.REGION, fake_cloudformation.ACCOUNT))
    cloudformation = boto3.client("cloudformation", region_name=fake_cloudformation.REGION)
    with Stubber(cloudformation) as stubber:
        for stage in project.deployed_stages():
            outputs = fake_cloudformation.stack_outputs(stage)
            fake_cloudformation.add_deployed_stack(stubber, outputs, stack_names.stack_name(stage))
            record_outputs.record(cloudformation, stage, directory)
        stubber.assert_no_pending_responses()
    return project


@pytest.fixture(params=["committed", "recorded"])
def project(request, tmp_path) -> ChaliceProject:
    if request.param == "committed":
        return ChaliceProject(CHALICE, recorded=None)
    # Not tmp_path/.chalice: the test client reads its stages from tmp_path (see conftest's `api`).
    (tmp_path / "recorded").mkdir()
    return recorded_copy(tmp_path / "recorded" / ".chalice")


def test_policies_are_hand_written_for_dev_and_prod(project):
    assert project.config["autogen_policy"] is False
    assert project.deployed_stages() == ["dev", "prod"]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_statement_names_the_stage_resources_and_no_wildcard_resource(project, stage):
    env = project.config["stages"][stage]["environment_variables"]
    granted = project.statements(stage)
    where = ":".join(project.region_and_account(stage))

    assert env["SAGEMAKER_ENDPOINT_NAME"] == stack_names.endpoint_name(stage)
    assert env["CHAT_TABLE_NAME"] == stack_names.table_name(stage)
    assert set(granted) == {
        "InvokeChatModel", "ChatHistory", "ListSessions", "PublishTurns", "ConsumeTurns", "ManageConnections", "Logs"
    }
    for statement in granted.values():
        assert statement["Effect"] == "Allow" and "*" not in statement["Resource"]
    assert granted["InvokeChatModel"]["Resource"] == [
        f"arn:aws:sagemaker:{where}:endpoint/{env['SAGEMAKER_ENDPOINT_NAME']}"
    ]
    assert granted["ChatHistory"]["Resource"] == [f"arn:aws:dynamodb:{where}:table/{env['CHAT_TABLE_NAME']}"]
    assert granted["ListSessions"]["Resource"] == [
        f"arn:aws:dynamodb:{where}:table/{env['CHAT_TABLE_NAME']}/index/{SESSIONS_INDEX}"
    ]
    turns = stack_names.turns_queue_name(stage)
    assert granted["PublishTurns"]["Resource"] == [f"arn:aws:sns:{where}:{stack_names.turns_topic_name(stage)}"]
    assert granted["ConsumeTurns"]["Resource"] == [f"arn:aws:sqs:{where}:{turns}"]
    # Until `make config` records the WebSocket API `chalice deploy` created, any API's connections
    # in the stage; then that API's alone.
    (connections,) = granted["ManageConnections"]["Resource"]
    api = rf"(\*:\*:\*|{re.escape(where)}:[a-z0-9]+)"
    assert re.fullmatch(rf"arn:aws:execute-api:{api}/api/POST/@connections/\*", connections), connections
    log_groups = [f"arn:aws:logs:{where}:log-group:/aws/lambda/{name}" for name in stack_names.function_names(stage)]
    assert granted["Logs"]["Resource"] == [arn for group in log_groups for arn in (group, group + ":*")]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_actions_are_exactly_the_calls_the_app_makes(project, stage, api, dynamodb_calls):
    for response in (
        api.http.get("/chat?sessionid=s&query=hello"),
        api.http.get("/sessions/s/messages"),
        api.http.get("/sessions"),
        api.http.delete("/sessions/s"),
    ):
        assert response.status_code == 200, response.body
    # A WebSocket connection's binding to its user, as $connect, $default and $disconnect use it.
    connections = services.connections()
    connections.open("connection-1", "user-1", token_expires_at=time.time() + 600)
    connections.owner("connection-1")
    connections.close("connection-1")
    granted = project.statements(stage)

    assert set(granted["ChatHistory"]["Action"]) == {f"dynamodb:{call}" for call in dynamodb_calls}
    assert granted["ListSessions"]["Action"] == ["dynamodb:Query"]  # the index is only listed
    assert granted["InvokeChatModel"]["Action"] == [
        "sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"  # the worker streams
    ]
    assert granted["PublishTurns"]["Action"] == ["sns:Publish"]
    assert granted["ManageConnections"]["Action"] == ["execute-api:ManageConnections"]
    assert set(granted["Logs"]["Action"]) == {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
