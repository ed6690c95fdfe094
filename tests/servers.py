"""Real local servers for end-to-end tests: free ports on 127.0.0.1, started and stopped by pid."""

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Poll `url` until it answers (any HTTP status) or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


@contextlib.contextmanager
def running(command: list[str], ready_url: str, env: dict | None = None, timeout: float = 60):
    """Run `command` in its own process group until the block ends; stop it by its pid."""
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        wait_until_up(ready_url, process, timeout)
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


def dynalite(port: int, data_dir: Path | None = None) -> list[str]:
    command = [str(ROOT / "node_modules" / ".bin" / "dynalite"), "--host", "127.0.0.1", "--port", str(port)]
    return command + (["--path", str(data_dir)] if data_dir else [])
