"""Who is asking: the signed-in user of a request.

REST: API Gateway's Cognito authorizer has verified the token before the app runs, and
puts the token's claims in the request context; the user is their `sub`.
"""

from chalicelib.errors import Unauthorized


def rest_user(request) -> str:
    """The `sub` of the request's verified token; Unauthorized without one."""
    claims = ((request.context or {}).get("authorizer") or {}).get("claims") or {}
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("sign in: send 'Authorization: Bearer <ID token>'")
    return sub
