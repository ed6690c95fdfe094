"""The ID-token verifier, cross-checked against `cryptography` (in the dev venv, not the Lambda) on
random keys; its claims, keys and refetching; malformed and hostile tokens and JWKS documents (the
property tests are in test_token_mutations.py)."""

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from chalicelib import auth
from chalicelib.errors import SignInUnavailable, Unauthorized

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Pool1"
CLIENT = "client1"
NOW = 1_800_000_000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_numbers(key) -> tuple[int, int]:
    numbers = key.public_key().public_numbers()
    return numbers.n, numbers.e


def sign_json(key, header: str, claims: str) -> str:
    """A token of the texts `header` and `claims` as they are (NaN, deep nesting, duplicate names: JSON
    or not), signed with `key`."""
    signing_input = f"{b64url(header.encode())}.{b64url(claims.encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def sign(key, header: dict, claims: dict) -> str:
    return sign_json(key, json.dumps(header), json.dumps(claims))


def id_claims(**changes) -> dict:
    claims = {"iss": ISSUER, "aud": CLIENT, "token_use": "id", "sub": "user-1", "iat": NOW, "exp": NOW + 3600,
              "cognito:username": "alice"}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


@pytest.fixture(scope="module")
def keys():
    return {size: rsa.generate_private_key(public_exponent=65537, key_size=size) for size in (2048, 3072)}


@pytest.fixture(scope="module")
def key(keys):
    return keys[2048]


class Jwks:
    """A fake JWKS endpoint: what it serves, and how often it was asked."""

    def __init__(self, **keys):
        self.keys, self.fetches = keys, 0

    def __call__(self, url):
        assert url == "https://cognito.example/us-east-1_Pool1/.well-known/jwks.json"
        self.fetches += 1
        return dict(self.keys)


def verifier(jwks, now=NOW) -> auth.TokenVerifier:
    return auth.TokenVerifier(ISSUER, CLIENT, "https://cognito.example/us-east-1_Pool1/.well-known/jwks.json",
                              fetch=jwks, clock=lambda: now)


@pytest.mark.parametrize("size", [2048, 3072])
def test_rs256_agrees_with_cryptography_on_random_keys(keys, size):
    key, other = keys[size], keys[5120 - size]
    n, e = public_numbers(key)
    for message in (b"", b"header.payload", bytes(range(256)) * 9):
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())  # cryptography agrees
        assert auth.rs256_valid(message, signature, n, e)
        assert not auth.rs256_valid(message + b"x", signature, n, e)  # tampered payload
        tampered = bytes([signature[0] ^ 1]) + signature[1:]
        assert not auth.rs256_valid(message, tampered, n, e)  # tampered signature
        assert not auth.rs256_valid(message, signature[:-1], n, e)  # truncated
        assert not auth.rs256_valid(message, b"\x00" + signature, n, e)  # padded
        other_signature = other.sign(message, padding.PKCS1v15(), hashes.SHA256())
        assert not auth.rs256_valid(message, other_signature, n, e)  # another key
        # A signature made with SHA-1 is refused, though its padding is as good.
        sha1 = key.sign(message, padding.PKCS1v15(), hashes.SHA1())
        assert not auth.rs256_valid(message, sha1, n, e)


def test_a_signature_not_below_the_modulus_is_refused(key):
    n, e = public_numbers(key)
    for value in (n, 2**2048 - 1):
        assert not auth.rs256_valid(b"m", value.to_bytes(256, "big"), n, e)


def test_a_valid_token_gives_its_claims(key):
    jwks = Jwks(k1=public_numbers(key))
    assert verifier(jwks).verify(sign(key, {"alg": "RS256", "kid": "k1"}, id_claims())) == id_claims()
    assert jwks.fetches == 1


@pytest.mark.parametrize(("claims", "message"), [
    (id_claims(iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"), "another user pool"),
    (id_claims(aud="client2"), "another app client"),
    (id_claims(token_use="access"), "not an ID token"),
    (id_claims(exp=NOW - auth.LEEWAY_SECONDS), "expired"),
    (id_claims(exp=None), "times"),
    (id_claims(exp=str(NOW + 60)), "times"),
    (id_claims(exp=True), "times"),
    (id_claims(exp=10**30), "times"),
    (id_claims(iat=-1), "times"),
    (id_claims(nbf="0"), "times"),
    # json.dumps writes NaN and Infinity, which Python's json.loads would read back.
    (id_claims(exp=float("nan")), "not a JWT"),
    (id_claims(exp=float("inf")), "not a JWT"),
    (id_claims(iat=float("-inf")), "not a JWT"),
    (id_claims(nbf=float("nan")), "not a JWT"),
    (id_claims(iat=NOW + auth.LEEWAY_SECONDS + 1), "in the future"),
    (id_claims(nbf=NOW + auth.LEEWAY_SECONDS + 1), "not valid yet"),
    (id_claims(iat=NOW, exp=NOW + auth.MAX_LIFETIME_SECONDS + 1), "lifetime"),
    (id_claims(iat=NOW - 3600, exp=NOW + 10 * 365 * 24 * 3600), "lifetime"),
    (id_claims(iat=NOW, exp=NOW - 1), "lifetime"),
    (id_claims(sub=""), "names no user"),
    (id_claims(sub=None), "names no user"),
], ids=["wrong-pool", "wrong-client", "access-token", "expired", "no-exp", "exp-not-a-number", "exp-true",
        "exp-huge", "iat-negative", "nbf-not-a-number", "exp-nan", "exp-infinity", "iat-minus-infinity", "nbf-nan",
        "future-iat", "future-nbf", "lifetime-over-a-day", "lifetime-ten-years", "exp-before-iat", "empty-sub",
        "no-sub"])
def test_claims_are_checked(key, claims, message):
    with pytest.raises(Unauthorized, match=message):
        verifier(Jwks(k1=public_numbers(key))).verify(sign(key, {"alg": "RS256", "kid": "k1"}, claims))


@pytest.mark.parametrize("claims", [
    id_claims(exp=NOW - auth.LEEWAY_SECONDS + 1, iat=NOW - 3600),
    id_claims(iat=NOW + auth.LEEWAY_SECONDS, nbf=NOW + auth.LEEWAY_SECONDS),
    id_claims(iat=NOW, exp=NOW + 24 * 3600),  # Cognito's longest: one day
], ids=["expiring", "just-issued", "one-day"])
def test_a_token_within_the_leeway_is_accepted(key, claims):
    token = sign(key, {"alg": "RS256", "kid": "k1"}, claims)
    assert verifier(Jwks(k1=public_numbers(key))).verify(token)["sub"] == "user-1"


def test_tampered_tokens_are_refused(key, keys):
    jwks = Jwks(k1=public_numbers(key))
    header_part, claims_part, signature_part = sign(key, {"alg": "RS256", "kid": "k1"}, id_claims()).split(".")
    forged_claims = b64url(json.dumps(id_claims(sub="user-2")).encode())
    other = sign(keys[3072], {"alg": "RS256", "kid": "k1"}, id_claims())
    for token in (f"{header_part}.{forged_claims}.{signature_part}", other,
                  f"{header_part}.{claims_part}.{signature_part[:-4]}", f"{header_part}.{claims_part}."):
        with pytest.raises(Unauthorized, match="signature is not valid"):
            verifier(jwks).verify(token)


@pytest.mark.parametrize("header", [{"alg": "none", "kid": "k1"}, {"alg": "HS256", "kid": "k1"},
                                    {"alg": "RS512", "kid": "k1"}, {"kid": "k1"}, {"alg": "RS256"}])
def test_only_rs256_with_a_key_id_is_accepted(key, header):
    n, _ = public_numbers(key)
    # "none" with an empty signature, and HS256 keyed with the public modulus: the classic confusions.
    header_part = b64url(json.dumps(header).encode())
    claims_part = b64url(json.dumps(id_claims()).encode())
    mac = hmac.new(n.to_bytes(256, "big"), f"{header_part}.{claims_part}".encode(), hashlib.sha256).digest()
    for token in (f"{header_part}.{claims_part}.", f"{header_part}.{claims_part}.{b64url(mac)}"):
        with pytest.raises(Unauthorized, match="not signed with RS256"):
            verifier(Jwks(k1=public_numbers(key))).verify(token)


@pytest.mark.parametrize("token", [None, "", "abc", "a.b", "a.b.c.d", "!!.e30.e30", "e30.e30.e30",
                                   "W10.e30.", "x" * (auth.MAX_TOKEN_CHARS + 1), b"e30.e30.", ["e30", "e30", ""]])
def test_malformed_tokens_are_refused(key, token):
    with pytest.raises(Unauthorized):
        verifier(Jwks(k1=public_numbers(key))).verify(token)


@pytest.mark.parametrize("change", [
    lambda token: token + "\n",  # ?token=<token>%0A: `$` matched before the newline, then base64 failed (a 500)
    lambda token: token + "\r\n",
    lambda token: token + " ",
    lambda token: "\t" + token,
    lambda token: token.replace(".", ".\n", 1),
    lambda token: token + "AAA",  # a signature of 4k+1 characters (342 + 3) is no base64
    lambda token: token + "=",
    lambda token: token.replace(".", "=.", 1),
    lambda token: token + ".",
    lambda token: "+/" + token,  # base64's standard alphabet
    lambda token: token[:5] + "\uff21" + token[5:],  # a fullwidth A
    lambda token: token[:5] + "\u0661" + token[5:],  # an Arabic-Indic 1
], ids=["newline", "crlf", "space", "leading-tab", "newline-inside", "signature-4k+1", "padded-signature",
        "padded-header", "fourth-segment", "standard-alphabet", "fullwidth-letter", "arabic-digit"])
def test_a_valid_token_changed_in_form_is_refused_as_unauthorized(key, change):
    token = sign(key, {"alg": "RS256", "kid": "k1"}, id_claims())
    assert verifier(Jwks(k1=public_numbers(key))).verify(token)
    with pytest.raises(Unauthorized, match="not a JWT"):
        verifier(Jwks(k1=public_numbers(key))).verify(change(token))


CLAIMS = json.dumps(id_claims())[:-1]  # the claims' JSON text, open for one more member
DEPTH = auth.MAX_JSON_DEPTH  # a member this deep nests one more than the bound, in its object


@pytest.mark.parametrize(("header", "claims", "message"), [
    ("[" * 3000 + "]" * 3000, CLAIMS + "}", "not a JWT"),  # RecursionError, a 500, before
    ('{"alg": "RS256", "kid": "k1", "x": ' + "[" * DEPTH + "]" * DEPTH + "}", CLAIMS + "}", "not a JWT"),
    ('{"alg": "RS256", "kid": "k1"}', CLAIMS + ', "x": ' + "[" * 3000 + "]" * 3000 + "}", "not a JWT"),
    ('{"alg": "RS256", "kid": "k1"}', CLAIMS + ', "x": ' + '{"a": ' * DEPTH + "1" + "}" * DEPTH + "}", "not a JWT"),
    ('{"alg": "RS256", "kid": "k1"}', CLAIMS + ', "exp": NaN}', "not a JWT"),
    ('{"alg": "RS256", "kid": "k1"}', CLAIMS + ', "exp": Infinity}', "not a JWT"),
    ('{"alg": "RS256", "kid": "k1"}', CLAIMS + ', "exp": 1e999}', "not a JWT"),  # json reads it as infinity
    ('{"alg": "RS256", "kid": "k1"}', CLAIMS + ', "exp": 1' + "0" * 5000 + "}", "not a JWT"),
    ('{"alg": "RS256", "kid": "k1"}', CLAIMS + ', "sub": "user-2"}', "not a JWT"),  # `sub` twice
    ('{"alg": "RS256", "kid": "k1", "alg": "RS256"}', CLAIMS + "}", "not a JWT"),
    ('{"alg": "RS256", "kid": "k1", "x": "' + "a" * auth.MAX_HEADER_BYTES + '"}', CLAIMS + "}", "not a JWT"),
    ('{"alg": "RS256", "kid": "k1"}', "[" + CLAIMS + "}]", "not a JWT"),
    ('{"alg": "RS256", "kid": ["k1"]}', CLAIMS + "}", "not signed with RS256"),
    ('{"alg": "RS256", "kid": ""}', CLAIMS + "}", "not signed with RS256"),
    ('{"alg": "RS256", "kid": "' + "k" * (auth.MAX_KEY_ID_CHARS + 1) + '"}', CLAIMS + "}", "not signed with RS256"),
    ('{"alg": ["RS256"], "kid": "k1"}', CLAIMS + "}", "not signed with RS256"),
    ('{"alg": "RS256", "kid": "k1", "crit": ["exp"], "exp": 1}', CLAIMS + "}", "extensions"),
], ids=["header-nested-3000", "header-nested-just-too-deep", "claims-nested-3000", "claims-objects-too-deep", "exp-nan",
        "exp-infinity", "exp-1e999", "exp-5000-digits", "duplicate-sub", "duplicate-alg", "header-too-large",
        "claims-not-an-object", "kid-a-list", "kid-empty", "kid-too-long", "alg-a-list", "crit"])
def test_signed_tokens_of_hostile_json_are_refused_as_unauthorized(key, header, claims, message):
    with pytest.raises(Unauthorized, match=message):
        verifier(Jwks(k1=public_numbers(key))).verify(sign_json(key, header, claims))


def test_nesting_up_to_the_bound_is_accepted(key):
    deepest = "[" * (DEPTH - 1) + "]" * (DEPTH - 1)  # in the claims' object: the bound exactly
    # Brackets and an escaped quote inside a string are no nesting.
    in_a_string = json.dumps("[" * 3000 + '"{')
    token = sign_json(key, '{"alg": "RS256", "kid": "k1"}', f'{CLAIMS}, "a": {deepest}, "b": {in_a_string}}}')
    claims = verifier(Jwks(k1=public_numbers(key))).verify(token)
    assert claims["a"] == json.loads(deepest) and claims["b"] == "[" * 3000 + '"{'


def test_an_unknown_key_refetches_once_then_waits(key, keys, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    jwks = Jwks(k1=public_numbers(key))
    checker = verifier(jwks)
    rotated = sign(keys[3072], {"alg": "RS256", "kid": "k2"}, id_claims())

    assert checker.verify(sign(key, {"alg": "RS256", "kid": "k1"}, id_claims()))
    with pytest.raises(Unauthorized, match="key the user pool does not have"):
        checker.verify(rotated)  # fetched at the first token: not again so soon
    assert jwks.fetches == 1
    clock[0] += auth.JWKS_REFETCH_SECONDS
    jwks.keys["k2"] = public_numbers(keys[3072])  # Cognito rotated its keys
    assert checker.verify(rotated)["sub"] == "user-1"
    assert checker.verify(rotated) and jwks.fetches == 2
    for _ in range(3):  # a flood of made-up key ids costs no fetch within the interval
        with pytest.raises(Unauthorized):
            checker.verify(sign(key, {"alg": "RS256", "kid": "made-up"}, id_claims()))
    assert jwks.fetches == 2


def jwk(key, **changes) -> dict:
    """`key`'s public half as Cognito's JWKS lists it."""
    n, e = public_numbers(key)
    fields = {"alg": "RS256", "e": b64url(e.to_bytes(3, "big")), "kid": "k1", "kty": "RSA",
              "n": b64url(n.to_bytes((n.bit_length() + 7) // 8, "big")), "use": "sig"}
    return {name: value for name, value in {**fields, **changes}.items() if value is not None}


def test_a_jwks_gives_its_rs256_signing_keys(key, keys):
    other = {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "AA", "y": "AA", "use": "sig"}
    body = json.dumps({"keys": [jwk(key), jwk(keys[3072], kid="k2", alg=None, use=None), jwk(key, kid="enc", use="enc"),
                                other]}).encode()
    assert auth.jwks_keys(body) == {"k1": public_numbers(key), "k2": public_numbers(keys[3072])}


@pytest.mark.parametrize("document", [
    "[]", '{"keys": {}}', '{"keys": ["k1"]}', '{"keys": [null]}', '{"keys": []' + " " * auth.MAX_JWKS_BYTES + "}",
    '{"keys": ' + "[" * 3000 + "]" * 3000 + "}", '{"keys": [], "x": NaN}', '{"keys": [], "keys": []}', "\ufeff{}",
], ids=["a-list", "keys-an-object", "a-key-a-string", "a-key-null", "too-large", "nested-3000", "nan", "keys-twice",
        "bom"])
def test_a_malformed_jwks_is_a_value_error(document):
    with pytest.raises(ValueError):
        auth.jwks_keys(document.encode())


@pytest.mark.parametrize("changes", [
    {"kid": None}, {"kid": 1}, {"kid": ""}, {"n": None}, {"n": 12}, {"n": "AQAB\n"}, {"e": "AQABA"}, {"e": "Ag"},
    {"e": "AQ"}, {"e": b64url(b"\x01" * 5)}, {"n": b64url(b"\xff" * 128)}, {"n": b64url(b"\xff" * 1025)},
], ids=["no-kid", "kid-a-number", "kid-empty", "no-n", "n-a-number", "n-newline", "e-no-base64", "e-even", "e-one",
        "e-huge", "n-1024-bits", "n-8200-bits"])
def test_an_rsa_key_that_is_no_sound_rs256_key_makes_the_jwks_malformed(key, changes):
    with pytest.raises(ValueError):
        auth.jwks_keys(json.dumps({"keys": [jwk(key, **changes)]}).encode())


@pytest.fixture
def jwks_server():
    """A local HTTP server that answers every GET with the body (and the headers) it is given."""
    served = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            for name, value in served["headers"].items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a port the system picks
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(body: bytes, headers: dict | None = None) -> str:
        served.update(body=body, headers=headers or {})
        return f"http://127.0.0.1:{server.server_port}/pool/.well-known/jwks.json"

    yield serve
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_keys_are_fetched_and_a_malformed_jwks_is_unavailable_not_a_crash(key, jwks_server):
    assert auth.fetch_jwks(jwks_server(json.dumps({"keys": [jwk(key)]}).encode())) == {"k1": public_numbers(key)}
    for body in (b"[" * 20_000, b'{"keys": [1]}', b"\xff", json.dumps({"keys": [jwk(key, e="Ag")]}).encode()):
        with pytest.raises(SignInUnavailable, match="could not be read"):
            auth.fetch_jwks(jwks_server(body))
    # http.client's own errors are no OSError: a header line too long for it, here.
    with pytest.raises(SignInUnavailable, match="header line"):
        auth.fetch_jwks(jwks_server(b'{"keys": []}', headers={"X-Padding": "a" * 70_000}))


def test_unreadable_keys_are_unavailable_not_unauthorized(key):
    with pytest.raises(SignInUnavailable, match="could not be read from http://127.0.0.1:9/"):
        auth.fetch_jwks("http://127.0.0.1:9/pool/.well-known/jwks.json")

