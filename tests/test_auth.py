"""The ID-token verifier, cross-checked against `cryptography` (in the dev venv, not the Lambda) on
random keys, and its claims, keys and refetching; the connection items of the WebSocket."""

import base64
import hashlib
import hmac
import json

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


def sign(key, header: dict, claims: dict) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


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
    (id_claims(exp=None), "expired"),
    (id_claims(exp=str(NOW + 60)), "expired"),
    (id_claims(iat=NOW + auth.LEEWAY_SECONDS + 1), "in the future"),
    (id_claims(sub=""), "names no user"),
    (id_claims(sub=None), "names no user"),
], ids=["wrong-pool", "wrong-client", "access-token", "expired", "no-exp", "exp-not-a-number", "future-iat",
        "empty-sub", "no-sub"])
def test_claims_are_checked(key, claims, message):
    with pytest.raises(Unauthorized, match=message):
        verifier(Jwks(k1=public_numbers(key))).verify(sign(key, {"alg": "RS256", "kid": "k1"}, claims))


def test_a_token_within_the_leeway_is_accepted(key):
    token = sign(key, {"alg": "RS256", "kid": "k1"}, id_claims(exp=NOW - auth.LEEWAY_SECONDS + 1, iat=NOW + 29))
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
                                   "W10.e30.", "x" * (auth.MAX_TOKEN_CHARS + 1)])
def test_malformed_tokens_are_refused(key, token):
    with pytest.raises(Unauthorized):
        verifier(Jwks(k1=public_numbers(key))).verify(token)


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


def test_unreadable_keys_are_unavailable_not_unauthorized(key):
    with pytest.raises(SignInUnavailable, match="could not be read from http://127.0.0.1:9/"):
        auth.fetch_jwks("http://127.0.0.1:9/pool/.well-known/jwks.json")

