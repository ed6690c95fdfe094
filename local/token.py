"""`make token`: an ID token of make run's local user, for curl and scripts.

    TOKEN=$(make -s token)    # make run on PORT (default 8000)
    curl http://127.0.0.1:8000/sessions -H "Authorization: Bearer $TOKEN"

It signs in as the page does: the local user and the Cognito stand-in from GET /config.
"""

import json
import os
import sys
import urllib.error
import urllib.request

import boto3
from botocore import UNSIGNED
from botocore.config import Config

from local.run import DEFAULT_PORT


def local_user_token(url: str) -> str:
    """A fresh ID token of the local user of make run at `url`."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/config", timeout=10) as response:
        sign_in = json.loads(response.read())["sign_in"]
    cognito = boto3.client("cognito-idp", endpoint_url=sign_in["endpoint"], region_name=sign_in["region"],
                           config=Config(signature_version=UNSIGNED))
    user = sign_in["local_user"]
    return cognito.initiate_auth(ClientId=sign_in["client_id"], AuthFlow="USER_PASSWORD_AUTH", AuthParameters={
        "USERNAME": user["username"], "PASSWORD": user["password"]})["AuthenticationResult"]["IdToken"]


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', DEFAULT_PORT)}"
    try:
        print(local_user_token(url))
    except (urllib.error.URLError, OSError) as error:
        print(f"make token: no make run answers at {url} ({error}); start it first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
