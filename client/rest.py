"""One request to the REST API, signed in or not: `call` for its JSON answers, `get_text` for the page and files."""

import json
import urllib.error
import urllib.request


def call(method: str, url: str, body=None, token: str | None = None, timeout: float = 60) -> tuple[int, dict]:
    """One request with a JSON body (if any) and the ID token (if any); its status and JSON
    answer, errors included."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get_text(url: str, token: str | None = None, timeout: float = 60) -> tuple[int, dict[str, str], str]:
    """GET of the page or a file (an export): its status, headers (names in lower case) and text."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()
