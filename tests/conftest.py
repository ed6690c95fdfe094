"""Fixtures shared by the tests: fake AWS credentials, moto's DynamoDB, a fake model."""

import json
import os
import uuid

# Never reach AWS: fake credentials, no instance metadata, no local overrides.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)
for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
    os.environ.pop(variable, None)

import boto3  # noqa: E402
import pytest  # noqa: E402
from chalice.config import Config  # noqa: E402
from chalice.local import LocalGateway  # noqa: E402
from chalice.test import Client, FunctionNotFoundError, InvokeResponse, TestHTTPClient, TestLambdaClient  # noqa: E402
from moto import mock_aws  # noqa: E402

from chalicelib import clients, services, table  # noqa: E402
from chalicelib.settings import get_settings  # noqa: E402
from chalicelib.table import SUMMARY_KEY, session_key  # noqa: E402
from local import lambda_runtime  # noqa: E402
from local.fake_model import FakeEndpoint  # noqa: E402
from local.identity import USER, signed_in  # noqa: E402
from local.net import free_port  # noqa: E402
from local.table import ensure_table  # noqa: E402
from tests.servers import dynalite, running  # noqa: E402

TABLE_NAME = "chat-test"


@pytest.fixture
def settings_env(monkeypatch):
    """The app's settings for a test; tests may override variables before first use."""
    monkeypatch.setenv("SAGEMAKER_ENDPOINT_NAME", "llama2-test")
    monkeypatch.setenv("CHAT_TABLE_NAME", TABLE_NAME)
    # Tests of other things ask many turns quickly; the rate limit's tests set their own.
    monkeypatch.setenv("TURNS_PER_MINUTE", "1000")
    get_settings.cache_clear()
    services.forget_all()
    yield monkeypatch
    get_settings.cache_clear()
    services.forget_all()


@pytest.fixture
def dynamodb(request, settings_env):
    """The chat table in moto's in-process DynamoDB, or (parametrized indirectly with
    "dynalite") in a real local server, which pages and locks like DynamoDB does."""
    if getattr(request, "param", "moto") == "dynalite":
        settings_env.setenv("AWS_ENDPOINT_URL_DYNAMODB", request.getfixturevalue("dynalite_url"))
        settings_env.setenv("CHAT_TABLE_NAME", f"chat-{uuid.uuid4().hex}")
        client = boto3.client("dynamodb")
        ensure_table(client, os.environ["CHAT_TABLE_NAME"])
        yield client
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(**table.create_table_request(TABLE_NAME))
        yield client


@pytest.fixture
def endpoint(settings_env, monkeypatch):
    settings = get_settings()
    fake = FakeEndpoint(settings.max_input_tokens, settings.max_total_tokens)
    get_settings.cache_clear()  # tests may still change the environment

    def client_with_fake(read_timeout):
        client = make_client(read_timeout)
        fake.attach(client)
        return client

    make_client = clients.sagemaker_runtime
    monkeypatch.setattr(clients, "sagemaker_runtime", client_with_fake)
    return fake


class SignedInHTTPClient(TestHTTPClient):
    """The test client's HTTP requests, signed in as `sub` (None: signed out) unless a request
    brings its own Authorization header."""

    def __init__(self, app, config, sub: str | None):
        super().__init__(app, config)
        self.sub = sub

    def request(self, method, path, headers=None, body=b""):
        own = signed_in(self.sub) if self.sub is not None else {}
        return super().request(method, path, headers={**own, **(headers or {})}, body=body)

    def as_user(self, sub: str | None) -> "SignedInHTTPClient":
        return SignedInHTTPClient(self._app, self._config, sub)


class FunctionClient(TestLambdaClient):
    """Invokes a function with the context Lambda gives it for its timeout, where Chalice's test
    client gives every function 3 s: the worker's deadline is what its context has left. As
    deployed, the worker's timeout is WORKER_TIMEOUT_SECONDS (`make config`); the others have
    Chalice's default."""

    def invoke(self, function_name, payload=None):
        if function_name not in self._app.handler_map:
            raise FunctionNotFoundError(function_name)
        limits = lambda_runtime.FunctionLimits()
        if function_name == "turn_worker":
            limits = lambda_runtime.FunctionLimits(timeout_seconds=get_settings().worker_timeout_seconds)
        return InvokeResponse(payload=lambda_runtime.invoke(self._app, function_name, payload or {}, "test", limits))


class SignedInClient(Client):
    @property
    def http(self) -> SignedInHTTPClient:
        if self._http_client is None:
            self._http_client = SignedInHTTPClient(self._app, self._chalice_config, USER)
        return self._http_client

    @property
    def lambda_(self) -> FunctionClient:
        if self._lambda_client is None:
            self._lambda_client = FunctionClient(self._app, self._chalice_config)
        return self._lambda_client


@pytest.fixture
def api(dynamodb, endpoint, tmp_path):
    """Chalice's test client, its HTTP requests signed in as USER (`api.http.as_user(...)` for
    another user). It is given no project folder, so the environment the tests set is what the
    app sees (a stage's variables would replace it)."""
    from app import app

    with SignedInClient(app, project_dir=str(tmp_path)) as client:
        yield client


@pytest.fixture(scope="session")
def dynalite_url():
    """A real local DynamoDB (in memory) for tests that need one: moto is not thread-safe."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(dynalite(port) + ["--createTableMs", "0", "--deleteTableMs", "0"], url):
        yield url


@pytest.fixture
def gateway(settings_env, endpoint, dynalite_url):
    """Requests from many threads at once, as `chalice local` serves them: Chalice's
    LocalGateway, with a fresh table in dynalite. (The test client swaps os.environ
    around each request, which is not safe from threads.)"""
    from app import app

    settings_env.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynalite_url)
    settings_env.setenv("CHAT_TABLE_NAME", f"chat-{uuid.uuid4().hex}")
    ensure_table(boto3.client("dynamodb"), os.environ["CHAT_TABLE_NAME"])
    local_gateway = LocalGateway(app, Config.create())

    def request(method, path, body=b"", headers=None):
        headers = {**signed_in(USER), **(headers or {})}
        response = local_gateway.handle_request(method=method, path=path, headers=headers, body=body)
        return response["statusCode"], json.loads(response["body"])

    return request


@pytest.fixture
def dynamodb_calls(settings_env, monkeypatch):
    """The operations (e.g. "Query") the app's DynamoDB client performs, in order."""
    calls = []

    def client_with_recorder():
        client = make_client()
        client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
        return client

    make_client = clients.dynamodb
    monkeypatch.setattr(clients, "dynamodb", client_with_recorder)
    return calls


def stored_items(dynamodb, sessionid, owner=USER):
    """The items of `owner`'s session straight from the table, bypassing the app: its turns, claims
    and deletion marker (not its summary, which `GET /sessions` tests read)."""
    return dynamodb.query(
        TableName=os.environ["CHAT_TABLE_NAME"],
        KeyConditionExpression="sessionid = :s AND turn > :summary",
        ExpressionAttributeValues={":s": {"S": session_key(owner, sessionid)}, ":summary": {"S": SUMMARY_KEY}},
    )["Items"]
