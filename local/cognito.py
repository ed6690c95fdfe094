"""make run's Cognito: moto's server as the user pool, its page client and the local user.

moto keeps nothing across restarts, so the `api` process creates them at every start, before
it serves: a pool signing in with e-mail addresses as the CDK stack's does, a public client with
USER_PASSWORD_AUTH and refresh tokens, and the local user with a permanent password. It runs
in a moto server of its own: the user's `sub` is made the same at every start by seeding moto's
random generator just before, which another service's calls on the same server would disturb.
"""

import urllib.request
from dataclasses import dataclass

from local.settings import (
    LOCAL_USER_NAME,
    LOCAL_USER_PASSWORD,
    LOCAL_USER_SEED,
    USER_POOL_CLIENT_ID,
    USER_POOL_CLIENT_NAME,
    USER_POOL_ID,
    USER_POOL_NAME,
)


@dataclass(frozen=True)
class LocalUserPool:
    pool_id: str
    client_id: str
    user_sub: str


def create_user_pool(cognito, name: str = USER_POOL_NAME) -> str:
    return cognito.create_user_pool(PoolName=name, UsernameAttributes=["email"],
                                    AutoVerifiedAttributes=["email"])["UserPool"]["Id"]


def create_page_client(cognito, pool_id: str, name: str = USER_POOL_CLIENT_NAME) -> str:
    return cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName=name, GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"])["UserPoolClient"]["ClientId"]


def create_user(cognito, pool_id: str, username: str, password: str) -> str:
    """A confirmed user with a permanent password; its `sub`."""
    user = cognito.admin_create_user(UserPoolId=pool_id, Username=username, MessageAction="SUPPRESS",
                                     UserAttributes=[{"Name": "email", "Value": username},
                                                     {"Name": "email_verified", "Value": "true"}])["User"]
    cognito.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=password, Permanent=True)
    return next(attribute["Value"] for attribute in user["Attributes"] if attribute["Name"] == "sub")


def seed_moto(endpoint: str, seed: int) -> None:
    """moto's own API: its ids come from a generator seeded so."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/seed?a={seed}", method="POST"), timeout=5)


def create_local_user_pool(cognito, endpoint: str) -> LocalUserPool:
    """The pool, the page's client and the local user, with the ids local/settings.py gives every process."""
    pool_id = create_user_pool(cognito)
    client_id = create_page_client(cognito, pool_id)
    if (pool_id, client_id) != (USER_POOL_ID, USER_POOL_CLIENT_ID):
        raise ValueError(f"the local Cognito made pool {pool_id} with client {client_id}, not {USER_POOL_ID} "
                         f"with {USER_POOL_CLIENT_ID} as local/settings.py says (another moto version?): "
                         "update local/settings.py")
    seed_moto(endpoint, LOCAL_USER_SEED)
    return LocalUserPool(pool_id, client_id, create_user(cognito, pool_id, LOCAL_USER_NAME, LOCAL_USER_PASSWORD))
