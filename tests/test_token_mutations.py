"""Thousands of mutated tokens thrown at the ID-token verifier: each one is either a valid token,
accepted with its claims, or refused with Unauthorized; nothing else may escape (anything else is a
500 of `$connect` that anyone could cause). The mutations start from tokens signed with a real RSA
key, so that signed hostile claims (NaN, nesting, huge numbers) reach the claim checks too.

Hypothesis runs derandomized (the same examples on every run), with no example database and no
deadline, so that a busy machine cannot fail it; `--hypothesis-show-statistics` shows what the
examples were refused for."""

import base64
import json
import re

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chalicelib import auth
from chalicelib.errors import Unauthorized
from tests.test_auth import CLIENT, ISSUER, NOW, Jwks, id_claims, jwk, public_numbers, sign, sign_json, verifier

MUTATIONS = settings(max_examples=2000, derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HEADER = {"alg": "RS256", "kid": "k1"}
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# What an attacker puts in a query string or a header besides base64url.
WHITESPACE = [" ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x00", "\xa0", "\u2028", "\u3000", "\ufeff", "%0A"]
FOREIGN = ["+", "/", "=", "==", ".", "..", "%", "\\", '"', "\uff21", "\u0661", "\u00e9", "\U0001f600", "\ud800"]
CHARACTERS = st.one_of(st.sampled_from(BASE64URL), st.sampled_from(WHITESPACE + FOREIGN), st.characters())
# JSON texts json.dumps cannot write, or Python's json reads loosely.
HOSTILE_JSON = st.one_of(
    st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "1" + "0" * 5000,
                     "-" + "9" * 4300, "2e308", "0.1e400", '"\\ud800"', "[]", "{}", "null", "true"]),
    st.integers(1, 5000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 200).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.integers(1, 3000).map(lambda depth: "[" * depth),  # unbalanced
)
# Numbers around now, the leeway and the longest lifetime, and far from them.
TIMES = st.one_of(
    st.integers(NOW - 2 * 24 * 3600, NOW + 2 * 24 * 3600),
    st.floats(NOW - 2 * 24 * 3600, NOW + 2 * 24 * 3600),
    st.sampled_from([0, -1, -0.0, 5e-324, 2**53 - 1, 2**53, 2**63, 10**4000, -(10**300), 1e308, True, False,
                     NOW + auth.LEEWAY_SECONDS, NOW - auth.LEEWAY_SECONDS, NOW + auth.MAX_LIFETIME_SECONDS]),
    st.floats(allow_nan=True, allow_infinity=True),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
# Finite JSON, nested less than the bound: what a user pool may put in a claim.
FINITE_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def token(key):
    return sign(key, HEADER, id_claims())


def verify_or_refuse(key, token) -> dict | None:
    """The claims if the verifier accepts `token`, checked to be a valid token's; None if it is refused
    with Unauthorized. Any other exception fails the test."""
    try:
        claims = verifier(Jwks(k1=public_numbers(key))).verify(token)
    except Unauthorized as refusal:
        event(f"refused: {refusal}")
        return None
    event("accepted")
    parts = token.split(".")
    assert len(parts) == 3 and all(re.fullmatch("[A-Za-z0-9_-]*", part) for part in parts)
    # cryptography agrees the signature is the key's (it raises InvalidSignature if not).
    key.public_key().verify(unb64url(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    header = json.loads(unb64url(parts[0]))
    assert header["alg"] == "RS256" and header["kid"] == "k1" and "crit" not in header
    assert claims == json.loads(unb64url(parts[1]))  # NaN would differ from itself
    assert (claims["iss"], claims["aud"], claims["token_use"]) == (ISSUER, CLIENT, "id")
    assert isinstance(claims["sub"], str) and claims["sub"]
    exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", claims["iat"])
    assert all(type(time) in (int, float) for time in (exp, iat, nbf))
    assert NOW < exp + auth.LEEWAY_SECONDS and max(iat, nbf) <= NOW + auth.LEEWAY_SECONDS
    assert 0 < exp - iat <= auth.MAX_LIFETIME_SECONDS
    return claims


# Text mutations: each takes `draw` and the token, and gives the token changed.

def replace_character(draw, token):
    at = draw(st.integers(0, max(len(token) - 1, 0)))
    return token[:at] + draw(CHARACTERS) + token[at + 1:]


def insert_text(draw, token):
    at = draw(st.integers(0, len(token)))
    text = draw(st.one_of(st.sampled_from(WHITESPACE + FOREIGN), st.text(min_size=1, max_size=4)))
    return token[:at] + text + token[at:]


def append_whitespace(draw, token):
    return token + draw(st.sampled_from(WHITESPACE))


def delete_characters(draw, token):
    start = draw(st.integers(0, len(token)))
    return token[:start] + token[start + draw(st.integers(1, 8)):]


def truncate(draw, token):
    at = draw(st.integers(0, len(token)))
    return token[:at] if draw(st.booleans()) else token[at:]


def flip_decoded_byte(draw, token):
    """A byte of one segment flipped, and the segment encoded again: well-formed base64url, other bytes."""
    parts = token.split(".")
    index = draw(st.integers(0, len(parts) - 1))
    try:
        data = bytearray(unb64url(parts[index]))
    except ValueError:
        return replace_character(draw, token)  # no longer base64 after an earlier mutation
    if not data:
        return token + "."
    at = draw(st.integers(0, len(data) - 1))
    data[at] ^= draw(st.integers(1, 255))
    parts[index] = b64url(bytes(data))
    return ".".join(parts)


def rearrange_segments(draw, token):
    parts = token.split(".")
    index = draw(st.integers(0, len(parts) - 1))
    change = draw(st.sampled_from(["drop", "duplicate", "swap", "empty", "pad", "standard-alphabet", "extra"]))
    if change == "drop":
        del parts[index]
    elif change == "duplicate":
        parts.insert(index, parts[index])
    elif change == "swap":
        other = draw(st.integers(0, len(parts) - 1))
        parts[index], parts[other] = parts[other], parts[index]
    elif change == "empty":
        parts.insert(index, "")
    elif change == "pad":
        parts[index] += draw(st.sampled_from(["=", "==", "==="]))
    elif change == "standard-alphabet":  # the same bytes in base64's other alphabet, padded
        try:
            parts[index] = base64.b64encode(unb64url(parts[index])).decode()
        except ValueError:
            parts[index] += "+/"
    else:
        parts.append(draw(st.sampled_from(["", "e30", parts[index]])))
    return ".".join(parts)


TEXT_MUTATIONS = [replace_character, insert_text, append_whitespace, delete_characters, truncate, flip_decoded_byte,
                  rearrange_segments]


@MUTATIONS
@given(data=st.data())
def test_mutated_tokens_are_valid_or_unauthorized(key, token, data):
    mutated = token
    for mutation in data.draw(st.lists(st.sampled_from(TEXT_MUTATIONS), min_size=1, max_size=4), label="mutations"):
        mutated = mutation(data.draw, mutated)
    verify_or_refuse(key, mutated)


@st.composite
def hostile_headers(draw) -> str:
    choice = draw(st.sampled_from(["valid", "value", "raw", "extra"]))
    if choice == "valid":
        return json.dumps(HEADER)
    if choice == "value":  # alg, kid or crit of any JSON value (NaN and Infinity as json.dumps writes them)
        header = {**HEADER, draw(st.sampled_from(["alg", "kid", "crit", "typ"])): draw(JSON_VALUES)}
        return json.dumps(header)
    if choice == "raw":
        return draw(st.one_of(HOSTILE_JSON, st.text(max_size=40)))
    return json.dumps(HEADER)[:-1] + f', "{draw(st.sampled_from(["x", "kid", "alg"]))}": {draw(HOSTILE_JSON)}}}'


@st.composite
def hostile_claims(draw) -> str:
    claims = id_claims()
    for _ in range(draw(st.integers(0, 3))):  # claims given other values (None: left out)
        name = draw(st.sampled_from(["exp", "iat", "nbf", "sub", "aud", "iss", "token_use", "extra"]))
        value = draw(TIMES if name in ("exp", "iat", "nbf") else st.one_of(st.none(), JSON_VALUES))
        claims[name] = value
    text = json.dumps({name: value for name, value in claims.items() if value is not None})
    choice = draw(st.sampled_from(["as-is", "raw-member", "not-an-object"]))
    if choice == "raw-member":  # a member json.dumps cannot write, possibly a duplicate
        name = draw(st.sampled_from(["exp", "iat", "nbf", "sub", "x"]))
        return text[:-1] + f', "{name}": {draw(HOSTILE_JSON)}}}'
    if choice == "not-an-object":
        return draw(st.one_of(HOSTILE_JSON, st.just(f"[{text}]"), st.just(json.dumps(text))))
    return text


@settings(MUTATIONS, max_examples=1200)
@given(header=hostile_headers(), claims=hostile_claims())
def test_signed_hostile_json_is_valid_or_unauthorized(key, header, claims):
    verify_or_refuse(key, sign_json(key, header, claims))


@settings(MUTATIONS, max_examples=300)
@given(name=st.text(max_size=12).filter(lambda name: name not in id_claims()), value=FINITE_JSON)
def test_any_finite_extra_claim_is_accepted(key, name, value):
    """The bounds refuse nothing a user pool may sign: brackets, quotes and backslashes inside strings
    are no nesting, and any finite number or text is taken as it is."""
    claims = {**id_claims(), name: value}
    assert verify_or_refuse(key, sign(key, HEADER, claims)) == json.loads(json.dumps(claims))


@st.composite
def mutated_jwks(draw, key) -> bytes:
    document = {"keys": [jwk(key)]}
    choice = draw(st.sampled_from(["field", "key", "keys", "text"]))
    if choice == "field":  # one field of the key of any JSON value, or a base64url of any bytes
        value = draw(st.one_of(JSON_VALUES, st.binary(max_size=1100).map(b64url)))
        document["keys"][0][draw(st.sampled_from(["kid", "kty", "alg", "use", "n", "e"]))] = value
    elif choice == "key":
        document["keys"].append(draw(JSON_VALUES))
    elif choice == "keys":
        document["keys"] = draw(JSON_VALUES)
    text = json.dumps(document)
    if choice == "text":
        for mutation in draw(st.lists(st.sampled_from(TEXT_MUTATIONS), min_size=1, max_size=3)):
            text = mutation(draw, text)
    return text.encode("utf-8", "surrogatepass")


@settings(MUTATIONS, max_examples=500)
@given(data=st.data())
def test_any_jwks_document_gives_sound_keys_or_a_value_error(key, data):
    """fetch_jwks makes a ValueError SignInUnavailable (a 503): anything else would crash the caller."""
    try:
        keys = auth.jwks_keys(data.draw(mutated_jwks(key), label="jwks"))
    except ValueError as error:
        event(f"refused: {type(error).__name__}")
        return
    event("accepted")
    for kid, (n, e) in keys.items():
        assert isinstance(kid, str) and kid and auth.MIN_MODULUS_BITS <= n.bit_length() <= auth.MAX_MODULUS_BITS
        assert 3 <= e < auth.MAX_PUBLIC_EXPONENT and e % 2 == 1
