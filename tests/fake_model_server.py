"""The fake endpoint over HTTP, as SageMaker's InvokeEndpoint, for tests of real processes.

`chalice local` reaches it through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME. It runs on a thread of
the test process, so a test still queues failures on its FakeEndpoint and reads its requests.
"""

import contextlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fake_endpoint import FakeEndpoint

_INVOCATIONS = re.compile(r"/endpoints/[^/]+/invocations")


class FakeModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeEndpoint):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.answering = threading.Event()
        self.answering.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @contextlib.contextmanager
    def holding_answers(self) -> Iterator[None]:
        """Keep answers back until the block ends, so a test sees what a client shows meanwhile."""
        self.answering.clear()
        try:
            yield
        finally:
            self.answering.set()


class _Handler(BaseHTTPRequestHandler):
    server: FakeModelServer

    def do_GET(self):
        self._send(200 if self.path == "/ping" else 404, {}, b"")

    def do_POST(self):
        if not _INVOCATIONS.fullmatch(self.path):
            self._send(404, {}, b"")
            return
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.answering.wait()
        response = self.server.fake.invoke(body)
        self._send(response.status_code, response.headers, response.content)

    def _send(self, status: int, headers, body: bytes) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        """Quiet: the app's own log already names every failed call."""


@contextlib.contextmanager
def serving(fake: FakeEndpoint) -> Iterator[FakeModelServer]:
    """Serve `fake` on a free port of 127.0.0.1 until the block ends."""
    server = FakeModelServer(fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
