"""The app's sign-in parts: the WebSocket `$connect` and `$disconnect` through Chalice's test
client (as Lambda invokes them), and GET /config's `sign_in` block."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib import auth, connections, services
from chalicelib.connections import Connections
from chalicelib.settings import get_settings
from tests.test_auth import CLIENT, ISSUER, NOW, b64url, id_claims, public_numbers, sign

POOL = ISSUER.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def signed_in(api, settings_env, key, monkeypatch):
    """The app configured with a user pool whose keys (served by no network) are `key`'s."""
    settings_env.setenv("USER_POOL_ID", POOL)
    settings_env.setenv("USER_POOL_CLIENT_ID", CLIENT)
    for cached in (services.token_verifier, services.connections):
        cached.cache_clear()
    get_settings.cache_clear()

    def verifier_for(settings):
        assert settings.user_pool_jwks_url == f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}/.well-known/jwks.json"
        return auth.TokenVerifier(settings.user_pool_issuer, settings.user_pool_client_id,
                                  settings.user_pool_jwks_url, fetch=lambda url: {"k1": public_numbers(key)},
                                  clock=lambda: NOW)

    monkeypatch.setattr(auth, "token_verifier_for", verifier_for)
    yield api
    for cached in (services.token_verifier, services.connections):
        cached.cache_clear()


def connect_event(connection_id: str, query: dict | None) -> dict:
    event = {"requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": connection_id,
                                "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "stage": "api",
                                "apiId": "abc123"},
             "headers": {"Host": "abc123.execute-api.us-east-1.amazonaws.com"}, "isBase64Encoded": False}
    if query is not None:
        event["queryStringParameters"] = query
    return event


def disconnect_event(connection_id: str) -> dict:
    event = connect_event(connection_id, None)
    event["requestContext"].update(routeKey="$disconnect", eventType="DISCONNECT")
    return event


def connection_item(dynamodb, connection_id):
    return dynamodb.get_item(TableName="chat-test", Key={"sessionid": {"S": f"~connection/{connection_id}"},
                                                         "turn": {"S": "!connection"}}).get("Item")


def test_a_signed_in_connection_is_bound_to_its_user_until_it_disconnects(signed_in, dynamodb, key):
    token = sign(key, {"alg": "RS256", "kid": "k1"}, id_claims(sub="user-7"))
    answer = signed_in.lambda_.invoke("websocket_connect", connect_event("c1=", {"token": token})).payload

    assert answer["statusCode"] == 200
    assert connection_item(dynamodb, "c1=")["owner"] == {"S": "user-7"}
    assert services.connections().owner("c1=") == "user-7"

    signed_in.lambda_.invoke("websocket_disconnect", disconnect_event("c1="))
    assert connection_item(dynamodb, "c1=") is None
    with pytest.raises(auth.Unauthorized):
        services.connections().owner("c1=")


@pytest.mark.parametrize("query", [None, {}, {"token": ""}, {"token": "not-a-jwt"}, "expired", "tampered",
                                   "other-client", "trailing-newline", "nested-header", "nan-exp", "infinite-exp",
                                   "future-nbf", "lifetime-of-a-year"],
                         ids=["no-query", "no-token", "empty", "garbage", "expired", "tampered", "other-client",
                              "trailing-newline", "nested-header", "nan-exp", "infinite-exp", "future-nbf",
                              "lifetime-of-a-year"])
def test_connect_without_a_valid_token_is_refused_with_401_and_stores_nothing(signed_in, dynamodb, key, query):
    header = {"alg": "RS256", "kid": "k1"}
    tokens = {"expired": sign(key, header, id_claims(exp=NOW - 3600, iat=NOW - 7200)),
              "tampered": sign(key, header, id_claims())[:-2] + "AA",
              "other-client": sign(key, header, id_claims(aud="another-client")),
              # ?token=<valid token>%0A, as API Gateway hands it over decoded: it was a binascii.Error (a 500).
              "trailing-newline": sign(key, header, id_claims()) + "\n",
              # It was a RecursionError (a 500).
              "nested-header": f"{b64url(b'[' * 3000 + b']' * 3000)}.{b64url(b'{}')}.",
              "nan-exp": sign(key, header, id_claims(exp=float("nan"))),
              "infinite-exp": sign(key, header, id_claims(exp=float("inf"))),
              "future-nbf": sign(key, header, id_claims(nbf=NOW + 600)),
              "lifetime-of-a-year": sign(key, header, id_claims(exp=NOW + 365 * 24 * 3600))}
    if isinstance(query, str):
        query = {"token": tokens[query]}
    answer = signed_in.lambda_.invoke("websocket_connect", connect_event("c2=", query)).payload

    assert answer["statusCode"] == 401
    assert json.loads(answer["body"])["error"] == "unauthorized"
    assert connection_item(dynamodb, "c2=") is None


def test_connect_is_refused_when_sign_in_is_not_configured(api, dynamodb):
    services.token_verifier.cache_clear()
    answer = api.lambda_.invoke("websocket_connect", connect_event("c3=", {"token": "a.b.c"})).payload

    assert answer["statusCode"] == 500
    assert json.loads(answer["body"])["error"] == "configuration_error"
    assert connection_item(dynamodb, "c3=") is None


def test_config_has_no_sign_in_without_a_pool(api):
    assert api.http.get("/config").json_body["sign_in"] is None


def test_config_names_cognito_the_region_and_the_client(signed_in):
    assert signed_in.http.get("/config").json_body["sign_in"] == {
        "endpoint": "https://cognito-idp.us-east-1.amazonaws.com", "region": "us-east-1", "client_id": CLIENT}


def test_config_gives_the_local_user_with_a_loopback_cognito(signed_in, settings_env):
    settings_env.setenv("AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", "http://127.0.0.1:4566")
    settings_env.setenv("LOCAL_USER_NAME", "local@example.com")
    settings_env.setenv("LOCAL_USER_PASSWORD", "Local-password-1")
    get_settings.cache_clear()

    assert signed_in.http.get("/config").json_body["sign_in"] == {
        "endpoint": "http://127.0.0.1:4566", "region": "us-east-1", "client_id": CLIENT,
        "local_user": {"username": "local@example.com", "password": "Local-password-1"}}


def test_a_connection_is_bound_until_its_token_expires(signed_in, dynamodb, key, monkeypatch):
    class AtNow(Connections):
        """The connection store, reading the verifier's clock."""

        def __init__(self, client, table_name):
            super().__init__(client, table_name, clock=lambda: NOW)

    monkeypatch.setattr(connections, "Connections", AtNow)
    services.connections.cache_clear()
    token = sign(key, {"alg": "RS256", "kid": "k1"}, id_claims(sub="user-7", exp=NOW + 120))

    signed_in.lambda_.invoke("websocket_connect", connect_event("c4=", {"token": token}))

    assert int(connection_item(dynamodb, "c4=")["expires_at"]["N"]) == NOW + 120
