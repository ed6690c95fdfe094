"""Signing in to a stage's user pool as the page does: Cognito's own API, `USER_PASSWORD_AUTH`
with the page's public app client, unsigned (the client has no secret)."""

import json
import urllib.request

import boto3
from botocore import UNSIGNED
from botocore.config import Config


def page_sign_in(url: str, timeout: float = 10) -> dict:
    """The `sign_in` block of the service's GET /config at `url`: Cognito's endpoint, its region
    and the page's app client (and make run's local user)."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/config", timeout=timeout) as response:
        return json.loads(response.read())["sign_in"]


def id_token(sign_in: dict, username: str, password: str) -> str:
    """An ID token of the user, from the pool `sign_in` (GET /config's block) names."""
    cognito = boto3.client("cognito-idp", endpoint_url=sign_in["endpoint"], region_name=sign_in["region"],
                           config=Config(signature_version=UNSIGNED))
    return cognito.initiate_auth(ClientId=sign_in["client_id"], AuthFlow="USER_PASSWORD_AUTH", AuthParameters={
        "USERNAME": username, "PASSWORD": password})["AuthenticationResult"]["IdToken"]
