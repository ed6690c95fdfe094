"""Who is calling.

REST: API Gateway's Cognito authorizer has verified the token before the app runs, and puts
the token's claims in the request context; the user is their `sub` (`rest_user`).

Cognito ID tokens are verified here where API Gateway does not do it for us: the WebSocket's
`$connect` (verified once per connection, which is then bound to its user: chalicelib/connections.py)
and make run's local REST gateway (local/api.py), which stands in for API Gateway's Cognito authorizer.

The RS256 check is written by hand, with the standard library: it is one modular
exponentiation and one comparison (RFC 8017 8.2.2), and the `cryptography` wheel would
be the largest part of the Lambda package and add its import to every cold start (issue 11
asks for no large crypto dependency). It builds the whole expected EMSA-PKCS1-v1_5 encoding
and compares it in one piece: it never parses the decrypted block, where hand-written
verifiers go wrong (Bleichenbacher's 2006 forgery with lax padding checks).

A token is an anonymous caller's input until its signature is checked: each part is matched
whole, bounded in size and nesting before `json.loads` (which recurses once a level), and parsed
in one error path, so that a malformed token is always a 401 and never a crash (a 500, and an
alarm, that anyone could set off on `$connect`).
"""

import base64
import hashlib
import hmac
import http.client
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request

from chalicelib.errors import SettingsError, SignInUnavailable, Unauthorized
from chalicelib.settings import Settings

# DER of DigestInfo{sha256, NULL} before the 32-byte digest (RFC 8017 9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
# Tolerated clock skew between Cognito and this function, for `exp`, `iat` and `nbf`.
LEEWAY_SECONDS = 30
# Cognito's ID tokens are valid for five minutes to one day (IdTokenValidity, in
# https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_TokenValidityUnitsType.html):
# a token that claims a longer life (`exp` - `iat`) is none the pool issued.
MAX_LIFETIME_SECONDS = 24 * 3600 + 5 * 60
# An ID token is a few KB; anything much larger is refused before it is decoded.
MAX_TOKEN_CHARS = 16 * 1024
# Cognito's header is {"kid": <44 characters>, "alg": "RS256"}.
MAX_HEADER_BYTES = 1024
MAX_KEY_ID_CHARS = 256
# json.loads recurses once a level (about 3,000 levels end in RecursionError), so nesting is bounded
# before it parses; Cognito's claims nest two deep (`identities`).
MAX_JSON_DEPTH = 16
# Cognito signs with 2048-bit RSA keys and e = 65537; the bounds keep the check one cheap `pow`.
MIN_MODULUS_BITS, MAX_MODULUS_BITS = 2048, 8192
MAX_PUBLIC_EXPONENT = 2**32
# NumericDate (RFC 7519 2), seconds since 1970: kept below 2**53 so that no arithmetic on it overflows.
MAX_NUMERIC_DATE = 2**53
JWKS_TIMEOUT_SECONDS = 2
MAX_JWKS_BYTES = 64 * 1024
# A token naming an unknown key refetches the JWKS (Cognito may have rotated), at most this often.
JWKS_REFETCH_SECONDS = 60
# One unpadded base64url segment (RFC 7515 2), for `fullmatch`: `match` with `$` let a final newline through.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def rest_user(request) -> str:
    """The `sub` of the request's verified token; Unauthorized without one."""
    claims = ((request.context or {}).get("authorizer") or {}).get("claims") or {}
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("sign in: send 'Authorization: Bearer <ID token>'")
    return sub


def _b64url(part) -> bytes:
    """The bytes of one unpadded base64url segment, matched whole; ValueError for anything else."""
    if not isinstance(part, str) or not _BASE64URL.fullmatch(part):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text's arrays and objects nest more than `limit` deep, found without parsing it."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise ValueError(f"{text} is not a finite number")
    return value


def _unique_names(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("a name appears twice in an object")
    return value


def _json_object(data: bytes, max_bytes: int) -> dict:
    """A JSON object (RFC 8259) in at most `max_bytes` of UTF-8, nested at most MAX_JSON_DEPTH deep,
    with finite numbers only (Python's json takes NaN and Infinity) and each name once in an object
    (RFC 7515 4 lets a parser refuse duplicates); ValueError for anything else."""
    if len(data) > max_bytes:
        raise ValueError(f"more than {max_bytes} bytes")
    text = data.decode("utf-8")
    if _nests_deeper_than(text, MAX_JSON_DEPTH):
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} deep")
    value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                       object_pairs_hook=_unique_names)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _jws_parts(token: str) -> tuple[dict, dict, bytes]:
    """The header, the claims and the signature of a JWS in compact form (RFC 7515 7.1), each parsed
    whole and within bounds; Unauthorized for anything else. None of it is trusted yet."""
    try:
        header_part, claims_part, signature_part = token.split(".")
        return (_json_object(_b64url(header_part), MAX_HEADER_BYTES),
                _json_object(_b64url(claims_part), MAX_TOKEN_CHARS), _b64url(signature_part))
    except ValueError:
        raise Unauthorized("the token is not a JWT") from None


def _is_key_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_KEY_ID_CHARS


def _is_numeric_date(value) -> bool:
    """A number of seconds since 1970 in range, so never NaN or infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < MAX_NUMERIC_DATE


def emsa_pkcs1_v1_5_sha256(message: bytes, length: int) -> bytes:
    """The encoded message a valid RS256 signature of `message` decrypts to (RFC 8017 9.2)."""
    digest_info = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    padding = length - len(digest_info) - 3
    if padding < 8:
        raise ValueError("the RSA key is too short for SHA-256")
    return b"\x00\x01" + b"\xff" * padding + b"\x00" + digest_info


def rs256_valid(message: bytes, signature: bytes, n: int, e: int) -> bool:
    """RSASSA-PKCS1-v1_5 verification with SHA-256 (RFC 8017 8.2.2)."""
    length = (n.bit_length() + 7) // 8
    if len(signature) != length:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    encoded = pow(s, e, n).to_bytes(length, "big")
    return hmac.compare_digest(encoded, emsa_pkcs1_v1_5_sha256(message, length))


def jwks_keys(body: bytes) -> dict[str, tuple[int, int]]:
    """The RS256 signing keys of a JWK Set (RFC 7517 5) by `kid`, as (n, e); ValueError if it is malformed."""
    keys = _json_object(body, MAX_JWKS_BYTES).get("keys")
    if not isinstance(keys, list):
        raise ValueError("it has no list of keys")
    signing_keys = {}
    for key in keys:
        if not isinstance(key, dict):
            raise ValueError("a key is not a JSON object")
        if key.get("kty") != "RSA" or key.get("alg", "RS256") != "RS256" or key.get("use", "sig") != "sig":
            continue
        kid = key.get("kid")
        if not _is_key_id(kid):
            raise ValueError("an RSA key has no usable kid")
        n, e = (int.from_bytes(_b64url(key.get(name)), "big") for name in ("n", "e"))
        if not MIN_MODULUS_BITS <= n.bit_length() <= MAX_MODULUS_BITS or not 3 <= e < MAX_PUBLIC_EXPONENT or e % 2 == 0:
            raise ValueError(f"the RSA key {kid!r} is not a sound RS256 key")
        signing_keys[kid] = (n, e)
    return signing_keys


def fetch_jwks(url: str) -> dict[str, tuple[int, int]]:
    """The pool's RS256 signing keys by `kid`, as (n, e)."""
    try:
        with urllib.request.urlopen(url, timeout=JWKS_TIMEOUT_SECONDS) as response:
            return jwks_keys(response.read(MAX_JWKS_BYTES + 1))
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise SignInUnavailable(f"the user pool's keys could not be read from {url}: {error}") from error


class TokenVerifier:
    """Checks a user pool's ID tokens for one app client, with the pool's keys fetched once (and
    again, at most every JWKS_REFETCH_SECONDS, for a key it does not know)."""

    def __init__(self, issuer: str, client_id: str, jwks_url: str, fetch=fetch_jwks, clock=time.time):
        self.issuer, self.client_id, self.jwks_url = issuer, client_id, jwks_url
        self._fetch, self._clock = fetch, clock
        self._keys: dict[str, tuple[int, int]] | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _key(self, kid: str) -> tuple[int, int]:
        with self._lock:
            stale = time.monotonic() - self._fetched_at >= JWKS_REFETCH_SECONDS
            if self._keys is None or (kid not in self._keys and stale):
                self._keys, self._fetched_at = self._fetch(self.jwks_url), time.monotonic()
            key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("the token is signed with a key the user pool does not have")
        return key

    def verify(self, token: str | None) -> dict:
        """The token's claims if it is a valid, current ID token of the pool for the client."""
        if not token:
            raise Unauthorized("sign in: no token was given")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("the token is not a JWT")
        header, claims, signature = _jws_parts(token)
        if header.get("alg") != "RS256" or not _is_key_id(header.get("kid")):
            raise Unauthorized("the token is not signed with RS256")
        if "crit" in header:  # extensions it must understand (RFC 7515 4.1.11): this verifier knows none
            raise Unauthorized("the token needs extensions this service does not know")
        n, e = self._key(header["kid"])
        if not rs256_valid(token.rpartition(".")[0].encode(), signature, n, e):
            raise Unauthorized("the token's signature is not valid")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict) -> None:
        if claims.get("iss") != self.issuer:
            raise Unauthorized("the token is from another user pool")
        if claims.get("token_use") != "id":
            raise Unauthorized("the token is not an ID token")
        if claims.get("aud") != self.client_id:
            raise Unauthorized("the token is for another app client")
        now = self._clock()
        exp, iat = claims.get("exp"), claims.get("iat")
        nbf = claims.get("nbf", iat)  # optional (RFC 7519 4.1.5)
        if not all(map(_is_numeric_date, (exp, iat, nbf))):
            raise Unauthorized("the token's times (exp, iat, nbf) are not valid")
        if now >= exp + LEEWAY_SECONDS:
            raise Unauthorized("the token has expired: sign in again")
        if iat > now + LEEWAY_SECONDS:
            raise Unauthorized("the token is issued in the future")
        if nbf > now + LEEWAY_SECONDS:
            raise Unauthorized("the token is not valid yet")
        if not 0 < exp - iat <= MAX_LIFETIME_SECONDS:
            raise Unauthorized("the token's lifetime is not one the user pool gives")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("the token names no user")


def token_verifier_for(settings: Settings) -> TokenVerifier:
    """The verifier of the configured pool's ID tokens for the page's client."""
    if not settings.sign_in_enabled:
        raise SettingsError("sign-in is not configured: set USER_POOL_ID and USER_POOL_CLIENT_ID")
    return TokenVerifier(settings.user_pool_issuer, settings.user_pool_client_id, settings.user_pool_jwks_url)


def sign_in_config(settings: Settings) -> dict | None:
    """What the page needs to sign in (GET /config): Cognito's API, the region and the app client,
    and in make run's local stage the local user it signs in by itself."""
    if not settings.sign_in_enabled:
        return None
    config = {"endpoint": settings.cognito_endpoint, "region": settings.region,
              "client_id": settings.user_pool_client_id}
    if settings.local_user_name is not None:
        config["local_user"] = {"username": settings.local_user_name, "password": settings.local_user_password}
    return config
