"""Real local servers for end-to-end tests: free ports on 127.0.0.1, started and stopped by pid."""

import contextlib
import os
import signal
import subprocess

from local.net import wait_until_up
from local.settings import ROOT
from local.settings import dynalite_command as dynalite  # noqa: F401 (the tests' name for it)


@contextlib.contextmanager
def running(command: list[str], ready_url: str, env: dict | None = None, timeout: float = 60, stdout=None):
    """Run `command` in its own process group until the block ends; stop it by its pid."""
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True,
                               stdout=stdout, stderr=subprocess.STDOUT if stdout else None)
    try:
        wait_until_up(ready_url, timeout, still_running=lambda: process.poll() is None)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

