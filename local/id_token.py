"""`make token`: an ID token of make run's local user, for curl and scripts.

    TOKEN=$(make -s token)    # make run on PORT (default 8000)
    curl http://127.0.0.1:8000/sessions -H "Authorization: Bearer $TOKEN"

It signs in as the page does: the local user and the Cognito stand-in from GET /config.
"""

import os
import sys
import urllib.error

from client.sign_in import id_token, page_sign_in
from local.settings import DEFAULT_PORT


def local_user_token(url: str) -> str:
    """A fresh ID token of the local user of make run at `url`."""
    sign_in = page_sign_in(url)
    return id_token(sign_in, sign_in["local_user"]["username"], sign_in["local_user"]["password"])


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
