"""Each Lambda function's IAM policy grants exactly what its code calls, on the stage's own resources.

Users run `make test` both on the committed policies (placeholders that name nothing) and after
`make config` has recorded a stage (the stack's region, account and key), so the file tests run
on the project's `.chalice` as it is and on a copy recorded from a faked deployed stack.

The call tests run each handler as Lambda would (Chalice's test client, moto, the fake model, the
management API answered inside botocore), record every AWS call it makes, and evaluate each
against the function's own policy: every call must be allowed, and every grant (but those Lambda
itself uses: the table key through DynamoDB, the log group, the queue) must be used by a call.
The evaluation is written here: no Python library evaluates IAM requests offline, and moto's
IAM enforcement knows none of DynamoDB's condition keys. It knows the operators the policies use,
and refuses any other, so a policy cannot pass by a condition it does not understand.
"""

import contextlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.client
import pytest
from botocore.stub import Stubber

from chalicelib import services
from chalicelib.errors import Unauthorized
from chalicelib.table import OWNER_ATTRIBUTE, PARTITION_KEY
from infrastructure import function_policies, record_outputs, stack_names
from infrastructure.function_policies import UNSET, Deployment
from local.identity import USER
from tests import fake_cloudformation
from tests.test_async_turns import DOMAIN, STAGE, chat, turns  # noqa: F401 (a fixture)
from tests.test_auth import id_claims, sign
from tests.test_auth_app import connect_event, disconnect_event, key, signed_in  # noqa: F401 (fixtures)
from tests.test_rate_limit import two_a_minute  # noqa: F401 (a fixture)

CHALICE = Path(__file__).resolve().parent.parent / ".chalice"
# A region and account `make config` may have written into the project's own files.
RECORDED_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
RECORDED_ACCOUNT = re.compile(r"\d{12}")
# The grants Lambda uses on the function's behalf, never its code.
PLATFORM_GRANTS = {"DecryptTableThroughDynamoDB", "Logs", "ConsumeTurns"}


@dataclass(frozen=True)
class ChaliceProject:
    """A `.chalice` folder, and where its policies should say each stage is deployed."""

    path: Path
    recorded: Deployment | None  # None: the committed placeholders, or whatever `make config` recorded

    @property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def policy(self, stage: str, handler: str) -> dict:
        name = self.config["stages"][stage]["lambda_functions"][handler]["iam_policy_file"]
        return json.loads((self.path / name).read_text())

    def deployment(self, stage: str) -> Deployment:
        """What the stage's policies name: the recorded deployment, else the placeholders, else
        (make config has run on the project) what they name, which must look like AWS's."""
        if self.recorded:
            return self.recorded
        by_sid = {s["Sid"]: s for s in self.policy(stage, "websocket_message")["Statement"]}
        (key_arn,) = by_sid["DecryptTableThroughDynamoDB"]["Resource"]
        _, partition, _, region, account, key_resource = key_arn.split(":", 5)
        api = by_sid["ManageConnections"]["Resource"][0].split(":", 5)[5].split("/")[0]
        named = Deployment(partition, region, account, key_resource.removeprefix("key/"), api)
        if named != Deployment.unrecorded():
            assert RECORDED_REGION.fullmatch(region) and RECORDED_ACCOUNT.fullmatch(account), named
        return named


def recorded_copy(directory: Path) -> ChaliceProject:
    """The project's `.chalice` copied, with each deployed stage recorded as `make config` does."""
    directory.mkdir()
    for path in CHALICE.glob("*.json"):
        shutil.copy(path, directory)
    where = Deployment("aws", fake_cloudformation.REGION, fake_cloudformation.ACCOUNT, fake_cloudformation.TABLE_KEY_ID)
    cloudformation = boto3.client("cloudformation", region_name=fake_cloudformation.REGION)
    with Stubber(cloudformation) as stubber:
        for stage in record_outputs.DEPLOYED_STAGES:
            outputs = fake_cloudformation.stack_outputs(stage)
            fake_cloudformation.add_deployed_stack(stubber, outputs, stack_names.stack_name(stage))
            record_outputs.record(cloudformation, stage, directory)
        stubber.assert_no_pending_responses()
    return ChaliceProject(directory, where)


@pytest.fixture(params=["committed", "recorded"])
def project(request, tmp_path) -> ChaliceProject:
    if request.param == "committed":
        return ChaliceProject(CHALICE, recorded=None)
    # Not tmp_path/.chalice: the test client reads its stages from tmp_path (see conftest's `api`).
    (tmp_path / "recorded").mkdir()
    return recorded_copy(tmp_path / "recorded" / ".chalice")


# --- The files ---------------------------------------------------------------------------------


def test_each_function_of_each_deployed_stage_has_a_policy_of_its_own(project):
    config = project.config
    assert config["autogen_policy"] is False
    assert sorted(config["stages"]) == sorted([*record_outputs.DEPLOYED_STAGES, "local"])
    for stage in record_outputs.DEPLOYED_STAGES:
        # No stage-wide file: a function the config does not name has no policy to fall back on.
        assert "iam_policy_file" not in config["stages"][stage]
        files = {handler: values.get("iam_policy_file")
                 for handler, values in config["stages"][stage]["lambda_functions"].items()}
        assert files == {handler: f"policy-{stage}-{handler}.json" for handler in stack_names.HANDLERS}
    expected = {function_policies.policy_file(stage, handler)
                for stage in record_outputs.DEPLOYED_STAGES for handler in stack_names.HANDLERS}
    assert {path.name for path in project.path.glob("policy-*.json")} == expected


@pytest.mark.parametrize("stage", record_outputs.DEPLOYED_STAGES)
def test_each_policy_is_the_render_of_function_policies_for_where_the_stage_is(project, stage):
    where = project.deployment(stage)
    for handler in stack_names.HANDLERS:
        assert project.policy(stage, handler) == function_policies.policy(stage, handler, where), (
            f"{handler}: run `python -m infrastructure.record_outputs --placeholders` after changing "
            "infrastructure/function_policies.py (and `make config` again for a recorded stage)"
        )


def test_the_committed_policies_are_the_placeholder_render(tmp_path):
    """Writing the placeholders again changes nothing in a fresh checkout, and what make config
    recorded in one that has run it is only the placeholders' values."""
    copy = tmp_path / ".chalice"
    shutil.copytree(CHALICE, copy, ignore=shutil.ignore_patterns("deployed", "deployments"))
    record_outputs.write_placeholders(copy)

    for stage in record_outputs.DEPLOYED_STAGES:
        committed = ChaliceProject(CHALICE, None)
        recorded = committed.deployment(stage)
        for handler in stack_names.HANDLERS:
            placeholders = json.loads((copy / function_policies.policy_file(stage, handler)).read_text())
            assert placeholders == function_policies.policy(stage, handler, Deployment.unrecorded())
            if recorded == Deployment.unrecorded():
                assert committed.policy(stage, handler) == placeholders
    assert json.loads((copy / "config.json").read_text()) == json.loads((CHALICE / "config.json").read_text())


@pytest.mark.parametrize("stage", record_outputs.DEPLOYED_STAGES)
def test_no_policy_leaves_a_region_account_or_api_to_a_wildcard(project, stage):
    for handler in stack_names.HANDLERS:
        for statement in project.policy(stage, handler)["Statement"]:
            assert statement["Effect"] == "Allow" and "*" not in statement["Action"], statement
            for arn in statement["Resource"]:
                _, partition, service, region, account, resource = arn.split(":", 5)
                assert "*" not in (partition, service, region, account) and "" not in (region, account), arn
                if service == "execute-api":  # the API, its stage and method: only the connection is any
                    assert re.fullmatch(r"[\w-]+/api/(POST|DELETE)/@connections/\*", resource), arn
                else:  # only a log group's streams are any
                    assert "*" not in resource or resource.endswith(":*") and service == "logs", arn


def test_until_make_config_every_resource_is_a_placeholder_that_names_nothing():
    for stage in record_outputs.DEPLOYED_STAGES:
        for handler in stack_names.HANDLERS:
            for statement in function_policies.policy(stage, handler, Deployment.unrecorded())["Statement"]:
                for arn in statement["Resource"]:
                    _, _, _, region, account, resource = arn.split(":", 5)
                    assert region == account == UNSET, arn


# --- What each function may do -----------------------------------------------------------------


def granted(policy: dict) -> dict[str, set[str]]:
    """Action -> the Sids that grant it."""
    actions: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        for action in statement["Action"]:
            actions.setdefault(action, set()).add(statement["Sid"])
    return actions


@pytest.mark.parametrize("stage", record_outputs.DEPLOYED_STAGES)
def test_each_function_holds_only_its_own_powers(project, stage):
    where = project.deployment(stage)
    policies = {handler: project.policy(stage, handler) for handler in stack_names.HANDLERS}
    actions = {handler: set(granted(policy)) for handler, policy in policies.items()}
    platform = {"kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents"}

    # $connect and $disconnect: one write each, on connection items alone.
    assert actions["websocket_connect"] == {"dynamodb:PutItem", *platform}
    assert actions["websocket_disconnect"] == {"dynamodb:DeleteItem", *platform}
    for handler in ("websocket_connect", "websocket_disconnect"):
        (items,) = [s for s in policies[handler]["Statement"] if s["Action"][0].startswith("dynamodb:")]
        assert items["Condition"]["ForAllValues:StringLike"] == {"dynamodb:LeadingKeys": ["~connection/*"]}
        assert items["Condition"]["Null"] == {"dynamodb:LeadingKeys": "false"}
    # Only the worker streams from the model and reads the queue; the REST handler never posts
    # to a connection, and only the REST handler lists sessions and deletes them.
    holders: dict[str, set[str]] = {}
    for handler, held in actions.items():
        for action in held:
            holders.setdefault(action, set()).add(handler)
    assert holders["sagemaker:InvokeEndpointWithResponseStream"] == {"turn_worker"}
    assert holders["sagemaker:InvokeEndpoint"] == {"api_handler", "turn_worker"}
    assert holders["sqs:ReceiveMessage"] == {"turn_worker"}
    assert holders["execute-api:ManageConnections"] == {"websocket_message", "turn_worker"}
    assert holders["sns:Publish"] == {"api_handler", "websocket_message"}
    assert holders["dynamodb:BatchWriteItem"] == {"api_handler"}
    # A turn over the rate limit withdraws its claim.
    assert holders["dynamodb:DeleteItem"] == {"api_handler", "websocket_message", "websocket_disconnect"}
    every = set().union(*actions.values())
    assert not any(action.endswith("*") for action in every) and "logs:CreateLogGroup" not in every
    # Every function: its own log group, and the table's key only through DynamoDB, for this table.
    for handler, policy in policies.items():
        by_sid = {s["Sid"]: s for s in policy["Statement"]}
        group = stack_names.function_log_group_name(stage, handler)
        assert by_sid["Logs"]["Resource"] == [where.arn("logs", f"log-group:{group}:*")]
        assert by_sid["DecryptTableThroughDynamoDB"]["Condition"] == {"StringEquals": {
            "kms:ViaService": f"dynamodb.{where.region}.amazonaws.com",
            "kms:EncryptionContext:aws:dynamodb:tableName": stack_names.table_name(stage),
        }}


# --- Every call each handler makes, evaluated against its own policy ---------------------------


@dataclass(frozen=True)
class Call:
    """An AWS request as IAM sees it."""

    action: str
    resource: str
    leading_keys: tuple[str, ...] = ()


class Recorder:
    """Every botocore call made while `recording` is set."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, str, dict, str]] = []
        self.recording = False
        original = botocore.client.BaseClient._make_api_call

        def make_api_call(client, operation, params):
            if self.recording:
                self.calls.append((client.meta.service_model.service_name, operation, params, client.meta.endpoint_url))
            return original(client, operation, params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)

    def __enter__(self):
        self.recording = True

    def __exit__(self, *_):
        self.recording = False


def _leading_keys(operation: str, params: dict) -> tuple[str, ...]:
    """The partition key values of a DynamoDB request (of the index, for an index Query)."""
    if operation in ("GetItem", "UpdateItem", "DeleteItem"):
        return (params["Key"][PARTITION_KEY]["S"],)
    if operation == "PutItem":
        return (params["Item"][PARTITION_KEY]["S"],)
    if operation == "BatchWriteItem":
        (requests,) = params["RequestItems"].values()
        return tuple(
            (request.get("DeleteRequest", {}).get("Key") or request["PutRequest"]["Item"])[PARTITION_KEY]["S"]
            for request in requests
        )
    if operation == "Query":
        attribute = OWNER_ATTRIBUTE if "IndexName" in params else PARTITION_KEY
        (name,) = [n for n, a in params["ExpressionAttributeNames"].items() if a == attribute]
        value = re.search(rf"{name} = (:\w+)", params["KeyConditionExpression"]).group(1)
        return (params["ExpressionAttributeValues"][value]["S"],)
    raise AssertionError(f"no IAM mapping for dynamodb:{operation}")


def as_iam(call, stage: str, where: Deployment) -> list[Call]:
    """The requests IAM authorizes for the call, on the stage's resources of the same kind (the
    tests' table, topic and endpoint have names of their own)."""
    service, operation, params, endpoint_url = call
    if service == "dynamodb":
        resource = function_policies.table_arn(stage, where)
        if "IndexName" in params:
            resource = f"{resource}/index/{params['IndexName']}"
        return [Call(f"dynamodb:{operation}", resource, _leading_keys(operation, params))]
    if service == "sns":
        return [Call(f"sns:{operation}", function_policies.topic_arn(stage, where))]
    if service == "sqs":
        return [Call(f"sqs:{operation}", function_policies.queue_arn(stage, where))]
    if service == "sagemaker-runtime":
        endpoint = function_policies.endpoint_arn(stage, where)
        # The API reference: a stream "must allow the sagemaker:InvokeEndpoint action"; the
        # stream's own name too, should IAM ever check it (function_policies.invoke_model).
        return [Call(f"sagemaker:{name}", endpoint) for name in dict.fromkeys(("InvokeEndpoint", operation))]
    if service == "apigatewaymanagementapi":
        assert endpoint_url == f"https://{DOMAIN}/{STAGE}"
        method = {"PostToConnection": "POST", "DeleteConnection": "DELETE", "GetConnection": "GET"}[operation]
        connection = params["ConnectionId"]
        api_path = f"{where.websocket_api_id}/{stack_names.API_GATEWAY_STAGE}/{method}/@connections/{connection}"
        return [Call("execute-api:ManageConnections", where.arn("execute-api", api_path))]
    raise AssertionError(f"no IAM mapping for {service}:{operation}")


def _like(pattern: str, value: str) -> bool:
    """IAM's StringLike: `*` any run of characters, `?` any one."""
    return re.fullmatch(".*".join(".".join(map(re.escape, part.split("?"))) for part in pattern.split("*")), value) \
        is not None


def _condition_holds(condition: dict, call: Call) -> bool:
    for operator, keys in condition.items():
        for context_key, values in keys.items():
            if context_key != "dynamodb:LeadingKeys":
                return False  # no call of the app's carries another key (kms: is DynamoDB's own)
            values = values if isinstance(values, list) else [values]
            if operator == "ForAllValues:StringLike":
                holds = all(any(_like(v, k) for v in values) for k in call.leading_keys)
            elif operator == "ForAllValues:StringNotLike":
                holds = all(not any(_like(v, k) for v in values) for k in call.leading_keys)
            elif operator == "Null":
                holds = (values == ["true"]) == (not call.leading_keys)
            else:
                raise AssertionError(f"the evaluation does not know {operator}")
            if not holds:
                return False
    return True


def allowing(policy: dict, call: Call) -> set[str]:
    """The Sids of the statements that allow the call."""
    return {
        statement["Sid"]
        for statement in policy["Statement"]
        if call.action in statement["Action"]
        and any(_like(pattern, call.resource) for pattern in statement["Resource"])
        and _condition_holds(statement.get("Condition", {}), call)
    }


def json_post(api, body: dict):
    return api.http.post("/chat", headers={"content-type": "application/json"}, body=json.dumps(body))


def three_a_minute(request) -> None:
    """The rate limit at three turns a minute, early in a fixed minute (before the settings are read)."""
    request.getfixturevalue("two_a_minute")
    request.getfixturevalue("settings_env").setenv("TURNS_PER_MINUTE", "3")


def signed_in_connection(connection: str) -> None:
    """The connection bound to USER, as `$connect` binds it."""
    services.connections().open(connection, USER, token_expires_at=time.time() + 600)


def run_api_handler(request, recorder):
    """Every route: a turn synchronous, one that replaces it (regenerate), one asynchronous, one
    over the rate limit, the listings and the search, rename, feedback given and taken back, the
    export, a turn's status, deletion, and the two routes that call nothing."""
    api = request.getfixturevalue("api")
    request.getfixturevalue("turns")
    three_a_minute(request)
    json_headers = {"content-type": "application/json"}
    with recorder:
        statuses = [response.status_code for response in (
            json_post(api, {"sessionid": "s", "query": "hello", "turn": "t-1"}),
            api.http.get("/chat?sessionid=s&query=hello%20again&turn=t-2&replaces=t-1"),
            json_post(api, {"sessionid": "s", "query": "later", "turn": "t-3", "async": True}),
            json_post(api, {"sessionid": "s", "query": "again", "turn": "t-4"}),  # the fourth this minute
            api.http.get("/sessions"),
            api.http.get("/sessions?q=hello"),
            api.http.patch("/sessions/s", headers=json_headers, body=json.dumps({"title": "Greetings"})),
            api.http.put("/sessions/s/turns/t-2/feedback", headers=json_headers, body=json.dumps({"rating": "up"})),
            api.http.delete("/sessions/s/turns/t-2/feedback"),
            api.http.get("/sessions/s/messages"),
            api.http.get("/sessions/s/export?format=json"),
            api.http.get("/sessions/s/turns/t-3"),
            api.http.delete("/sessions/s"),
            api.http.get("/config"),
            api.http.get("/"),
        )]
    assert statuses == [200, 200, 202, 429, *[200] * 11]


def run_websocket_connect(request, recorder):
    client, private_key = request.getfixturevalue("signed_in"), request.getfixturevalue("key")
    token = sign(private_key, {"alg": "RS256", "kid": "k1"}, id_claims(sub=USER))
    with recorder:
        answer = client.lambda_.invoke("websocket_connect", connect_event("c1=", {"token": token})).payload
    assert answer["statusCode"] == 200


def run_websocket_disconnect(request, recorder):
    api = request.getfixturevalue("api")
    signed_in_connection("c1=")
    with recorder:
        api.lambda_.invoke("websocket_disconnect", disconnect_event("c1="))
    with pytest.raises(Unauthorized):
        services.connections().owner("c1=")


def message_event(connection: str, body: dict) -> dict:
    return {
        "requestContext": {"routeKey": "$default", "eventType": "MESSAGE", "connectionId": connection,
                           "domainName": DOMAIN, "stage": STAGE, "apiId": "abc123"},
        "body": json.dumps(body), "isBase64Encoded": False,
    }


def work(api, recorder=None) -> int:
    """Run the worker on every turn in the queue, as Lambda's event source mapping does."""
    sqs = boto3.client("sqs")
    queue_url = sqs.get_queue_url(QueueName="turns")["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        with recorder or contextlib.nullcontext():
            api.lambda_.invoke("turn_worker", api.events.generate_sqs_event(
                message_bodies=[message["Body"]], queue_name="turns"))
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages)


def run_websocket_message(request, recorder):
    """Turns over the socket: a new one, its retry while it is answered (the claim is read), one
    that replaces an answered turn (the last turn is read), one over the rate limit, and one on a
    connection no longer signed in (answered `error`, then closed)."""
    api, handed_over = request.getfixturevalue("api"), request.getfixturevalue("turns")
    request.getfixturevalue("two_a_minute")  # before the settings are first read
    signed_in_connection("conn-1")
    with recorder:
        api.lambda_.invoke("websocket_message", message_event("conn-1", chat(turn="t-1")))
        api.lambda_.invoke("websocket_message", message_event("conn-1", chat(turn="t-1")))
    work(api)
    with recorder:
        for turn in ("t-2", "t-3"):
            api.lambda_.invoke("websocket_message", message_event("conn-1", {**chat(turn=turn), "replaces": "t-1"}))
        api.lambda_.invoke("websocket_message", message_event("conn-2", chat(turn="t-4")))
    kinds = [(m["type"], m.get("error")) for m in handed_over.connections.received["conn-1"]
             if m["type"] in ("accepted", "error")]
    assert kinds == [("accepted", None), ("error", "turn_in_progress"), ("accepted", None), ("error", "rate_limited")]
    assert handed_over.connections.types("conn-2") == ["error"] and "conn-2" in handed_over.connections.closed


def run_turn_worker(request, recorder):
    """A turn streamed to its socket, one that replaces it, and an asynchronous REST turn answered whole."""
    api, handed_over = request.getfixturevalue("api"), request.getfixturevalue("turns")
    signed_in_connection("conn-1")
    api.lambda_.invoke("websocket_message", message_event("conn-1", chat(turn="t-1")))
    assert work(api, recorder) == 1
    api.lambda_.invoke("websocket_message", message_event("conn-1", {**chat(turn="t-2"), "replaces": "t-1"}))
    json_post(api, {"sessionid": "s", "query": "later", "turn": "t-3", "async": True})
    assert work(api, recorder) == 2
    assert handed_over.connections.types("conn-1").count("done") == 2


SCENARIOS = {
    "api_handler": run_api_handler,
    "websocket_connect": run_websocket_connect,
    "websocket_disconnect": run_websocket_disconnect,
    "websocket_message": run_websocket_message,
    "turn_worker": run_turn_worker,
}


@pytest.mark.parametrize("handler", stack_names.HANDLERS)
def test_every_call_a_function_makes_is_allowed_by_its_policy_and_every_grant_is_used(
    handler, project, request, monkeypatch
):
    assert set(SCENARIOS) == set(stack_names.HANDLERS)
    recorder = Recorder(monkeypatch)
    SCENARIOS[handler](request, recorder)
    assert recorder.calls, "the scenario made no AWS call"

    for stage in record_outputs.DEPLOYED_STAGES:
        where, policy = project.deployment(stage), project.policy(stage, handler)
        used: dict[str, set[str]] = {}
        for call in (request for made in recorder.calls for request in as_iam(made, stage, where)):
            sids = allowing(policy, call)
            assert sids, f"{handler} ({stage}) may not {call}"
            for sid in sids:
                used.setdefault(sid, set()).add(call.action)
        for statement in policy["Statement"]:
            if statement["Sid"] not in PLATFORM_GRANTS:
                assert set(statement["Action"]) == used.get(statement["Sid"], set()), (
                    f"{handler} ({stage}): {statement['Sid']} grants more than the calls use"
                )


def test_a_call_outside_a_functions_key_range_is_refused():
    """The evaluation refuses what the policies leave out (so the test above can fail)."""
    where = Deployment("aws", "eu-west-1", "123456789012", "k", "w5x6y7z8")
    table = function_policies.table_arn("dev", where)
    connect = function_policies.policy("dev", "websocket_connect", where)
    rest = function_policies.policy("dev", "api_handler", where)
    worker = function_policies.policy("dev", "turn_worker", where)

    assert allowing(connect, Call("dynamodb:PutItem", table, ("~connection/c1=",))) == {"ConnectionItems"}
    assert not allowing(connect, Call("dynamodb:PutItem", table, (f"{USER}#s",)))
    assert not allowing(connect, Call("dynamodb:PutItem", table, ("~rate/x",)))
    assert not allowing(connect, Call("dynamodb:PutItem", table, ()))  # no key: Null refuses it
    assert not allowing(connect, Call("dynamodb:GetItem", table, ("~connection/c1=",)))
    assert not allowing(rest, Call("dynamodb:GetItem", table, ("~connection/c1=",)))
    assert not allowing(rest, Call("dynamodb:BatchWriteItem", table, (f"{USER}#s", "~connection/c1=#x")))
    assert not allowing(worker, Call("dynamodb:UpdateItem", table, (f"~rate/{USER}",)))
    assert not allowing(rest, Call("sagemaker:InvokeEndpointWithResponseStream",
                                   function_policies.endpoint_arn("dev", where)))
    assert not allowing(rest, Call("execute-api:ManageConnections",
                                   where.arn("execute-api", "w5x6y7z8/api/POST/@connections/c1=")))
    post = Call("execute-api:ManageConnections", where.arn("execute-api", "w5x6y7z8/api/POST/@connections/c1="))
    assert allowing(worker, post) == {"ManageConnections"}
    assert not allowing(worker, Call("execute-api:ManageConnections",
                                     where.arn("execute-api", "other-api/api/POST/@connections/c1=")))
    with pytest.raises(AssertionError, match="does not know"):
        _condition_holds({"StringEqualsIgnoreCase": {"dynamodb:LeadingKeys": "x"}}, Call("a", "b", ("x",)))
