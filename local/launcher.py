"""`make run` as a subprocess: what the end-to-end tests, `make bench` and `make load` start.

`Launcher` runs `python -m local.run` on a free port, keeps its output in a file, signs in as its
local user and stops it with Ctrl-C, as a user would. The requests themselves are `client`'s.
"""

import os
import re
import signal
import subprocess
import sys

from client.rest import call
from local.id_token import local_user_token
from local.net import wait_until_up
from local.settings import ROOT, wait_seconds


def launcher_env(port: int, data_dir, **extra) -> dict:
    """This process's environment without its AWS endpoints (the launcher starts its own
    servers unless `extra` names one), with the port and data folder given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    return {**env, "PORT": str(port), "LOCAL_DATA_DIR": str(data_dir), **extra}


class Launcher:
    """`python -m local.run` (what `make run` runs), its output kept in a file; ready once the
    API answers (it serves once the other servers answer and the WebSocket gateway serves)."""

    def __init__(self, port, data_dir, log_path, **extra_env):
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._token: str | None = None
        env = launcher_env(port, data_dir, **extra_env)
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local.run"], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        # The api process serves, or exits, within its wait (MAKE_RUN_WAIT_SECONDS) and a setup of seconds.
        try:
            wait_until_up(self.url + "/sessions/probe/messages", wait_seconds(env) + 60,
                          still_running=lambda: self.process.poll() is None)
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
