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
"""

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.error
import urllib.request

from chalicelib.errors import SettingsError, SignInUnavailable, Unauthorized
from chalicelib.settings import Settings

# DER of DigestInfo{sha256, NULL} before the 32-byte digest (RFC 8017 9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
# Tolerated clock skew between Cognito and this function, for `exp` and `iat`.
LEEWAY_SECONDS = 30
# An ID token is a few KB; anything much larger is refused before it is decoded.
MAX_TOKEN_CHARS = 16 * 1024
JWKS_TIMEOUT_SECONDS = 2
MAX_JWKS_BYTES = 64 * 1024
# A token naming an unknown key refetches the JWKS (Cognito may have rotated), at most this often.
JWKS_REFETCH_SECONDS = 60
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def rest_user(request) -> str:
    """The `sub` of the request's verified token; Unauthorized without one."""
    claims = ((request.context or {}).get("authorizer") or {}).get("claims") or {}
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("sign in: send 'Authorization: Bearer <ID token>'")
    return sub


def _b64url(part: str) -> bytes:
    if not _BASE64URL.match(part):
        raise Unauthorized("the token is not a JWT")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _json_object(part: str) -> dict:
    try:
        value = json.loads(_b64url(part))
    except ValueError:
        raise Unauthorized("the token is not a JWT") from None
    if not isinstance(value, dict):
        raise Unauthorized("the token is not a JWT")
    return value


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


def fetch_jwks(url: str) -> dict[str, tuple[int, int]]:
    """The pool's RS256 signing keys by `kid`, as (n, e)."""
    try:
        with urllib.request.urlopen(url, timeout=JWKS_TIMEOUT_SECONDS) as response:
            body = response.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"more than {MAX_JWKS_BYTES} bytes")
        keys = json.loads(body)["keys"]
        return {key["kid"]: (int.from_bytes(_b64url(key["n"]), "big"), int.from_bytes(_b64url(key["e"]), "big"))
                for key in keys
                if key.get("kty") == "RSA" and key.get("alg", "RS256") == "RS256" and key.get("use", "sig") == "sig"}
    except (OSError, ValueError, KeyError, TypeError, Unauthorized) as error:
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
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise Unauthorized("the token is not a JWT")
        header_part, claims_part, signature_part = token.split(".")
        header = _json_object(header_part)
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            raise Unauthorized("the token is not signed with RS256")
        n, e = self._key(header["kid"])
        if not rs256_valid(f"{header_part}.{claims_part}".encode(), _b64url(signature_part), n, e):
            raise Unauthorized("the token's signature is not valid")
        claims = _json_object(claims_part)
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
        if not _is_number(exp) or now >= exp + LEEWAY_SECONDS:
            raise Unauthorized("the token has expired: sign in again")
        if not _is_number(iat) or iat > now + LEEWAY_SECONDS:
            raise Unauthorized("the token is issued in the future")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("the token names no user")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
