"""Signed-in requests to the app in process, for the tests and `make bench`.

Chalice's local gateway (the test client, `chalice.local.LocalGateway`) stands in for API
Gateway's Cognito authorizer by decoding a token's payload without checking its signature, so
these tokens carry claims and a dummy signature. make run's gateway verifies tokens (local/api.py);
the verifier is tested on its own (chalicelib/auth.py).
"""

import base64
import json

# Cognito `sub`s are UUIDs.
USER = "7d1c3c84-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
OTHER_USER = "b2e4f6a8-1c3d-4e5f-8a7b-9c0d1e2f3a4b"


def _segment(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsigned_token(sub: str) -> str:
    """An ID token's shape with `sub` (and the `cognito:username` Chalice's local gateway wants)."""
    claims = {"sub": sub, "cognito:username": f"user-{sub[:8]}", "token_use": "id"}
    return ".".join([_segment({"alg": "RS256", "kid": "test"}), _segment(claims), "unsigned"])


def signed_in(sub: str = USER) -> dict:
    """The request headers of `sub` signed in."""
    return {"authorization": f"Bearer {unsigned_token(sub)}"}
