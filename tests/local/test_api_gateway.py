"""make run's REST gateway verifies Cognito tokens as API Gateway's authorizer does (`chalice local`
alone would take any token): a real moto server as Cognito on 127.0.0.1, real sign-ins, a real
HTTP server with a tiny app whose route has a CognitoUserPoolAuthorizer."""

import json
import re
import threading
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config as BotocoreConfig
from chalice import Chalice, CognitoUserPoolAuthorizer
from chalice.config import Config

from chalicelib import auth, services
from chalicelib.errors import Unauthorized
from chalicelib.settings import get_settings
from local import cognito
from local.api import Refused, VerifyingGateway, bearer_token, verifying_server
from local.messaging import moto_server_command
from local.net import free_port
from local.settings import COGNITO_MOTO_ENVIRONMENT, LOCAL_USER_NAME, LOCAL_USER_PASSWORD, USER_POOL_ID
from tests.servers import running
from tests.test_auth import b64url

PASSWORD = "Test-password-1"


def tiny_app() -> Chalice:
    app = Chalice(app_name="gateway-auth-test")
    authorizer = CognitoUserPoolAuthorizer("pool", provider_arns=["arn:aws:cognito-idp:us-east-1:1:userpool/x"])

    @app.route("/whoami", authorizer=authorizer)
    def whoami():
        return {"sub": app.current_request.context["authorizer"]["claims"]["sub"]}

    @app.route("/open")
    def open_route():
        return {"open": True}

    return app


@pytest.fixture(scope="module")
def cognito_url():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(moto_server_command(port), url + "/moto-api/", env=COGNITO_MOTO_ENVIRONMENT):
        yield url


@pytest.fixture(scope="module")
def pools(cognito_url):
    """The local pool (with the local user), plus another pool and another client with users of their own."""
    client = boto3.client("cognito-idp", endpoint_url=cognito_url)
    local = cognito.create_local_user_pool(client, cognito_url)
    other_pool = cognito.create_user_pool(client, "another-pool")
    other_pool_client = cognito.create_page_client(client, other_pool)
    cognito.create_user(client, other_pool, "bob@example.com", PASSWORD)
    other_client = cognito.create_page_client(client, local.pool_id, "another-client")
    return {"local": local, "other_pool_client": other_pool_client, "other_client": other_client}


def sign_in(cognito_url, client_id, username, password) -> str:
    """InitiateAuth as the page does it: unsigned, USER_PASSWORD_AUTH; the ID token."""
    client = boto3.client("cognito-idp", endpoint_url=cognito_url, config=BotocoreConfig(signature_version=UNSIGNED))
    return client.initiate_auth(ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH", AuthParameters={
        "USERNAME": username, "PASSWORD": password})["AuthenticationResult"]["IdToken"]


@pytest.fixture
def server(settings_env, cognito_url, pools):
    settings_env.setenv("AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", cognito_url)
    settings_env.setenv("USER_POOL_ID", pools["local"].pool_id)
    settings_env.setenv("USER_POOL_CLIENT_ID", pools["local"].client_id)
    get_settings.cache_clear()
    services.token_verifier.cache_clear()
    app = tiny_app()
    port = free_port()
    server = verifying_server(app, Config.create(), "127.0.0.1", port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(10)
    services.token_verifier.cache_clear()


def get(url, token=None, scheme="Bearer "):
    headers = {"Authorization": f"{scheme}{token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_local_user_signs_in_and_the_route_gets_its_verified_sub(server, cognito_url, pools):
    token = sign_in(cognito_url, pools["local"].client_id, LOCAL_USER_NAME, LOCAL_USER_PASSWORD)

    assert pools["local"].pool_id == USER_POOL_ID
    assert get(f"{server}/whoami", token) == (200, {"sub": pools["local"].user_sub})
    assert get(f"{server}/whoami", token, scheme="bearer  ") == (200, {"sub": pools["local"].user_sub})
    assert get(f"{server}/open") == (200, {"open": True})


@pytest.mark.parametrize("scheme", ["", "Token ", "Basic ", "Bearer"], ids=["raw", "token", "basic", "no-space"])
def test_only_a_bearer_token_is_taken(server, cognito_url, pools, scheme):
    token = sign_in(cognito_url, pools["local"].client_id, LOCAL_USER_NAME, LOCAL_USER_PASSWORD)
    assert get(f"{server}/whoami", token, scheme=scheme) == (401, {
        "error": "unauthorized", "message": "the Authorization header must be 'Bearer <ID token>'"})


def test_missing_and_malformed_tokens_get_401_json(server):
    assert get(f"{server}/whoami") == (401, {"error": "unauthorized", "message": "sign in: no token was given"})
    status, body = get(f"{server}/whoami", "made.up.token")
    assert status == 401 and body["error"] == "unauthorized"


def test_a_header_of_3000_nested_brackets_gets_401_json(server):
    # It raised RecursionError in the verifier, and the gateway dropped the connection.
    token = f"{b64url(b'[' * 3000 + b']' * 3000)}.{b64url(b'{}')}.{b64url(b'x' * 256)}"
    assert get(f"{server}/whoami", token) == (401, {"error": "unauthorized", "message": "the token is not a JWT"})


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\x0b", "\xa0", "\t."])
def test_a_valid_token_with_anything_after_it_is_refused_by_the_authorizer(server, cognito_url, pools, ending):
    """Straight through the gateway's authorizer: a newline cannot travel in a real HTTP header."""
    token = sign_in(cognito_url, pools["local"].client_id, LOCAL_USER_NAME, LOCAL_USER_PASSWORD)
    gateway = VerifyingGateway(tiny_app(), Config.create())

    assert gateway.handle_request("GET", "/whoami", {"authorization": f"Bearer {token}"}, b"")["statusCode"] == 200
    with pytest.raises(Refused) as refused:
        gateway.handle_request("GET", "/whoami", {"authorization": f"Bearer {token}{ending}"}, b"")
    assert refused.value.CODE == 401
    assert json.loads(refused.value.body) == {"error": "unauthorized", "message": "the token is not a JWT"}


def test_a_tampered_signature_is_refused(server, cognito_url, pools):
    token = sign_in(cognito_url, pools["local"].client_id, LOCAL_USER_NAME, LOCAL_USER_PASSWORD)
    head, claims, signature = token.split(".")
    tampered = f"{head}.{claims}.{signature[:10]}{'A' if signature[10] != 'A' else 'B'}{signature[11:]}"
    assert get(f"{server}/whoami", tampered) == (401, {"error": "unauthorized",
                                                       "message": "the token's signature is not valid"})


def test_tokens_of_another_pool_or_client_are_refused(server, cognito_url, pools):
    # moto signs every pool's tokens with one key: only `iss` tells the pools apart.
    other_pool = sign_in(cognito_url, pools["other_pool_client"], "bob@example.com", PASSWORD)
    other_client = sign_in(cognito_url, pools["other_client"], LOCAL_USER_NAME, LOCAL_USER_PASSWORD)

    assert get(f"{server}/whoami", other_pool)[1]["message"] == "the token is from another user pool"
    assert get(f"{server}/whoami", other_client)[1]["message"] == "the token is for another app client"


def test_an_expired_token_is_refused(server, cognito_url, pools, monkeypatch):
    token = sign_in(cognito_url, pools["local"].client_id, LOCAL_USER_NAME, LOCAL_USER_PASSWORD)
    settings = get_settings()
    later = auth.TokenVerifier(settings.user_pool_issuer, settings.user_pool_client_id, settings.user_pool_jwks_url,
                               clock=lambda: time.time() + 3600 + auth.LEEWAY_SECONDS)  # moto's tokens last 1 h
    monkeypatch.setattr(auth, "token_verifier_for", lambda settings: later)
    services.token_verifier.cache_clear()

    assert get(f"{server}/whoami", token) == (401, {"error": "unauthorized",
                                                    "message": "the token has expired: sign in again"})


def test_the_local_users_sub_is_the_same_at_every_start(cognito_url, pools):
    port = free_port()
    with running(moto_server_command(port), f"http://127.0.0.1:{port}/moto-api/", env=COGNITO_MOTO_ENVIRONMENT):
        again = cognito.create_local_user_pool(
            boto3.client("cognito-idp", endpoint_url=f"http://127.0.0.1:{port}"), f"http://127.0.0.1:{port}")
    assert again == pools["local"]


def test_each_request_is_one_line_of_the_log_without_its_query_string(server, capsys):
    get(f"{server}/open?query=a+question+of+mine")
    get(f"{server}/whoami")
    printed, lines, deadline = "", [], time.monotonic() + 10
    while len(lines) < 2 and time.monotonic() < deadline:  # written once each answer is sent
        time.sleep(0.05)
        printed += capsys.readouterr().out
        lines = re.findall(r"^(\w+ \S+ \d+) \d+\.\d\d s$", printed, re.MULTILINE)

    assert lines == ["GET /open 200", "GET /whoami 401"]
    assert "question" not in printed


def test_bearer_token():
    assert bearer_token(None) is None
    assert bearer_token("Bearer a.b.c") == bearer_token("bearer  a.b.c ") == bearer_token("\tBEARER a.b.c") == "a.b.c"
    assert bearer_token("Bearer a.b.c\n") == "a.b.c\n"  # for the verifier to refuse
    assert bearer_token("Bearer ") == ""
    for header in ("a.b.c", "", "Basic a.b.c", "Bearer\ta.b.c", "Bearera.b.c"):
        with pytest.raises(Unauthorized, match="must be 'Bearer <ID token>'"):
            bearer_token(header)
