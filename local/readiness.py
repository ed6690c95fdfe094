"""Waiting, before a first call, for what a process of `make run` calls.

honcho starts make run's processes together and stops them all when one exits. On a busy machine
a stand-in (dynalite, moto, the model server loading its model, the WebSocket gateway) may answer
seconds after the processes that call it have started: the SQS poller's first call once failed
with EndpointConnectionError, and its exit stopped make run. So each process waits, before its
first call, for every service it calls (local/run.py names them on its command line,
`--wait-for NAME=URL`) and for what it uses that another process makes. A late stand-in is waited
for, up to MAKE_RUN_WAIT_SECONDS from the process's start (local/settings.py); only past that does
the process exit, saying what it waited for, what did not come and how long it waited.
"""

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import boto3

from local.messaging import topic_has_subscribers
from local.net import answers
from local.settings import wait_seconds
from local.table import table_is_ready


@dataclass(frozen=True)
class Wait:
    """Something a process needs before its first call: `ready()` says whether it is there yet,
    `missing` what is missing while it is not."""

    name: str
    missing: str
    ready: Callable[[], bool]


def service(argument: str) -> Wait:
    """A `--wait-for` argument, NAME=URL: the service NAME is up once URL answers (any status)."""
    name, _, url = argument.partition("=")
    if not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{argument!r}: give NAME=URL, a URL that answers once NAME is up")
    return Wait(name, f"nothing answered at {url}", lambda: answers(url))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait-for", action="append", type=service, default=[], metavar="NAME=URL",
                        help="before the first call to the service NAME, wait until URL answers (repeatable)")


class Readiness:
    """A process's waits, all within `seconds` (MAKE_RUN_WAIT_SECONDS) of its start. (A poll
    loop by hand: tenacity, installed, would retry it as well, but not share one deadline across
    a process's waits nor say once what it waits for, which are most of these lines.)"""

    def __init__(self, process: str, seconds: float | None = None, poll_seconds: float = 0.2):
        self.process = process
        self.seconds = wait_seconds() if seconds is None else seconds
        self.poll_seconds = poll_seconds
        self.started = time.monotonic()

    def remaining(self) -> float:
        return max(0.0, self.started + self.seconds - time.monotonic())

    def wait(self, waits: list[Wait]) -> None:
        """Return once each of `waits` is ready, taken in order (a resource is looked for once its
        service answers), saying which it waits for. Past the bound, exit the process (SystemExit,
        which honcho reports) naming what did not come."""
        bound = f" (at most {self.seconds:g} s from its start)"
        for index, wait in enumerate(waits):
            if wait.ready():
                continue
            print(f"{self.process}: waiting for {wait.name}{bound}", flush=True)
            bound = ""  # said once
            while not wait.ready():
                if not self.remaining():
                    came = ", ".join(ready.name for ready in waits[:index]) or "nothing yet"
                    raise SystemExit(f"{self.process}: gave up after {time.monotonic() - self.started:.0f} s "
                                     f"(MAKE_RUN_WAIT_SECONDS={self.seconds:g}) waiting for {wait.name} "
                                     f"({wait.missing}); ready: {came}")
                time.sleep(min(self.poll_seconds, self.remaining()))


def made_by_the_api() -> list[Wait]:
    """What the api process makes before it serves (local/api.py) and the WebSocket gateway uses
    from its first event: the chat table ($connect stores the connection there) and the turns
    topic's subscription (a turn published before the queue subscribes would be lost). The
    Cognito stand-in needs no wait beyond its own: moto serves the same signing keys for any pool.
    The stage's environment must be loaded (local.settings.load_app)."""
    table_name, topic_arn = os.environ["CHAT_TABLE_NAME"], os.environ["TURNS_TOPIC_ARN"]
    dynamodb, sns = boto3.client("dynamodb"), boto3.client("sns")
    return [
        Wait("the chat table", f"no active table {table_name} with its index (the api process makes it)",
             lambda: table_is_ready(dynamodb, table_name)),
        Wait("the turns topic's queue", f"topic {topic_arn} has no subscriber (the api process subscribes the queue)",
             lambda: topic_has_subscribers(sns, topic_arn)),
    ]
