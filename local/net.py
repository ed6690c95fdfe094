"""Ports and readiness on 127.0.0.1, for `make run` and the tests that start real servers."""

import os
import socket
import ssl
import time
import urllib.error
import urllib.request


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server can listen on the port. Servers here bind with SO_REUSEADDR, as this
    probe does, so connections of a server that just stopped do not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def answers(url: str) -> bool:
    """Whether a server answers a GET of `url` within 2 s, with any HTTP status. An https URL's
    certificate is checked against AWS_CA_BUNDLE when set, as the app's AWS clients check it
    (make run's WebSocket gateway serves its management API with a certificate of its own)."""
    context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE")) if url.startswith("https:") else None
    try:
        urllib.request.urlopen(url, timeout=2, context=context).close()
    except urllib.error.HTTPError:
        return True  # it answers, if only to refuse
    except OSError:
        return False
    return True


def wait_until_up(url: str, timeout: float, still_running=lambda: True) -> None:
    """Poll `url` until it answers (any HTTP status); TimeoutError after `timeout` seconds,
    RuntimeError as soon as `still_running()` says the server has gone."""
    deadline = time.monotonic() + timeout
    while True:
        if not still_running():
            raise RuntimeError(f"the server for {url} exited")
        if answers(url):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)
