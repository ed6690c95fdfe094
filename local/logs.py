"""make run's log: what started where, then one line per request; the stand-ins' own lines
only with VERBOSE=1 (local/settings.py).

The app logs JSON lines as it does in Lambda (chalicelib/observability.py). make run's own
processes add one plain line per request, as AWS adds its own beside a function's log (API
Gateway's access log, Lambda's REPORT line): the REST API's and the model server's (method, path
without its query string, status, seconds), the WebSocket gateway's (event, route, status,
seconds) and the SQS poller's (handler, messages, outcome, seconds). A user's text is never in
them: no body, and no query string (a GET /chat carries its question there).
"""

import logging
import sys
import time
import urllib.parse

from local.settings import verbose

# Lines of the libraries the stand-ins are made of, and botocore's finding its credentials and
# endpoint at each client's creation: noise unless asked for.
STAND_IN_LOGGERS = ("werkzeug", "websockets", "botocore.credentials", "botocore.configprovider")


def quiet_stand_ins() -> None:
    """The stand-ins' own lines from WARNING up, unless VERBOSE=1."""
    if not verbose():
        for name in STAND_IN_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def plain_lines(logger: logging.Logger) -> logging.Logger:
    """`logger`'s lines as plain text on stdout, not the app's JSON: they are the platform's, not
    the app's (in a process that runs the app, after observability.configure_logging)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class OneLinePerRequest:
    """For a BaseHTTPRequestHandler: one line per request once it is answered (a streamed answer
    to its end), "POST /chat 200 1.52 s", instead of http.server's. Paths in `health_paths` are
    logged only with VERBOSE=1."""

    health_paths: tuple[str, ...] = ()

    def handle_one_request(self):
        started, self.answered_status = time.monotonic(), None
        super().handle_one_request()
        path = urllib.parse.urlsplit(getattr(self, "path", "")).path
        if self.answered_status is not None and (path not in self.health_paths or verbose()):
            # One write: the server's threads share stdout.
            sys.stdout.write(f"{self.command} {path} {self.answered_status} {time.monotonic() - started:.2f} s\n")
            sys.stdout.flush()

    def log_request(self, code="-", size="-"):
        self.answered_status = getattr(code, "value", code)
