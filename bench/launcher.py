"""`make run`'s launcher as a subprocess, and a client of the service it serves: what the
end-to-end tests and `make bench` drive (one home, so both speak to the same service the same way).

- `Launcher`: `python -m local.run` on a free port, its output kept in a file, stopped by Ctrl-C.
- `call`: one JSON request to the REST API (`Launcher.call`: signed in as make run's local user).
- `send_chat` and `receive`: the WebSocket chat protocol (README, "The WebSocket protocol"),
  each message kept with the time it was read, for timings.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from local.net import wait_until_up
from local.settings import ROOT
from local.token import local_user_token

# The messages that end a turn on the WebSocket.
TURN_ENDS = ("done", "error")


def launcher_env(port: int, data_dir, **extra) -> dict:
    """This process's environment without its AWS endpoints (the launcher starts its own
    servers unless `extra` names one), with the port and data folder given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    return {**env, "PORT": str(port), "LOCAL_DATA_DIR": str(data_dir), **extra}


class Launcher:
    """`python -m local.run` (what `make run` runs), its output kept in a file; ready once the
    API answers (the launcher starts the API last, after the other servers answer)."""

    def __init__(self, port, data_dir, log_path, **extra_env):
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._token: str | None = None
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local.run"], cwd=ROOT, env=launcher_env(port, data_dir, **extra_env),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_until_up(self.url + "/sessions/probe/messages", 120, still_running=lambda: self.process.poll() is None)
        except Exception:
            self.stop()
            raise

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def printed(self, pattern: str) -> str:
        """What the launcher printed in the first group of `pattern`, e.g. one of its URLs."""
        found = re.search(pattern, self.log)
        if found is None:
            raise LookupError(f"the launcher did not print {pattern!r}; its log: {self.log_path}")
        return found[1]

    @property
    def websocket_url(self) -> str:
        return self.printed(r"WebSocket API: (ws://\S+)")

    def call(self, method: str, path: str, body=None, timeout: float = 60) -> tuple[int, dict]:
        """`call` on this service's `path`, signed in as its local user (one token per launcher:
        they last an hour)."""
        if self._token is None:
            self._token = self.id_token()
        return call(method, self.url + path, body, token=self._token, timeout=timeout)

    def id_token(self) -> str:
        return local_user_token(self.url)

    def signed_in_websocket_url(self) -> str:
        """The WebSocket API's URL with the local user's token, as the page connects."""
        return f"{self.websocket_url}?token={self.id_token()}"

    @property
    def queue_url(self) -> str:
        """The turns queue (moto's SQS), as the launcher printed it."""
        return self.printed(r"-> queue (http://\S+)")

    def child_pids(self) -> dict:
        return {name: int(pid) for name, pid in re.findall(r"(\w+) started \(pid=(\d+)\)", self.log)}

    def stop(self) -> int:
        """Ctrl-C, as a user would press it; returns the launcher's exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise


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


@dataclass
class Transcript:
    """What one connection received for a turn: each message with the seconds since it was sent."""

    sent_at: float
    received: list[tuple[float, dict]] = field(default_factory=list)

    @property
    def messages(self) -> list[dict]:
        return [message for _, message in self.received]

    @property
    def types(self) -> list[str]:
        return [message["type"] for message in self.messages]

    @property
    def last(self) -> dict:
        return self.messages[-1]

    @property
    def streamed_text(self) -> str:
        """The deltas' texts joined: the answer, once `done` came."""
        return "".join(message["text"] for message in self.messages if message["type"] == "delta")

    def seconds_to(self, message_type: str) -> float:
        """From sending the turn to the first message of this type."""
        return next(seconds for seconds, message in self.received if message["type"] == message_type)


def send_chat(connection, sessionid: str, query: str, turn: str | None = None) -> Transcript:
    """Send one chat turn on an open connection (websockets' sync client)."""
    message = {"action": "chat", "sessionid": sessionid, "query": query, **({"turn": turn} if turn else {})}
    sent_at = time.perf_counter()
    connection.send(json.dumps(message))
    return Transcript(sent_at)


def receive(connection, transcript: Transcript, until=TURN_ENDS, timeout: float = 60) -> Transcript:
    """Read messages into `transcript` up to and including the first whose type is in `until`;
    TimeoutError if none comes within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(connection.recv(timeout=max(0.0, deadline - time.monotonic())))
        transcript.received.append((time.perf_counter() - transcript.sent_at, message))
        if message["type"] in until:
            return transcript
