"""A model scaled to zero: answering 503 `model_waking` at once, or waiting for it to wake.

An endpoint whose inference component has no copy (scaled to zero, or still scaling out from
zero) refuses every invocation with HTTP 400 `ValidationError`, "Inference Component has no
capacity to process this request. ApplicationAutoScaling may be in-progress (if configured) or
try to increase the capacity by invoking UpdateInferenceComponentRuntimeConfig API." (as AWS's
scale-to-zero walkthrough shows it). Each refusal counts in `NoCapacityInvocationFailures`,
whose alarm makes the stack add a copy: an instance starts and downloads the model, minutes.

A synchronous turn cannot wait that long (API Gateway gives up at 29 s): it answers 503
`model_waking` with a Retry-After. The worker can: inside `waiting(on_wait)` the model call is
tried again every POLL_SECONDS while its deadline leaves time for an answer after the wait,
with `on_wait(retry_after)` called before each wait (the worker sends a `status` frame).
"""

import contextlib
import contextvars
import time

from botocore.exceptions import ClientError

from chalicelib import deadline
from chalicelib.errors import ModelWaking

NO_CAPACITY_CODE = "ValidationError"
NO_CAPACITY_MESSAGE = "Inference Component has no capacity"
# From the first refused call to an answer: the alarm (a 1-minute period), an instance's start
# (3-5 minutes for a GPU instance) and the model's download and load (about 2 for 7B in fp16).
WAKE_SECONDS = 360
# How often a waiting worker asks again; each attempt also keeps the wake-up alarm firing.
POLL_SECONDS = 15.0
# What a turn still needs of its deadline once the model is awake: the answer and its write.
ANSWER_RESERVE_SECONDS = 30.0

_on_wait: contextvars.ContextVar = contextvars.ContextVar("on_wait", default=None)


def is_no_capacity(error: Exception) -> bool:
    return (isinstance(error, ClientError)
            and error.response.get("Error", {}).get("Code") == NO_CAPACITY_CODE
            and NO_CAPACITY_MESSAGE in error.response.get("Error", {}).get("Message", ""))


@contextlib.contextmanager
def waiting(on_wait):
    """Model calls in the block wait for a waking model, calling `on_wait(retry_after_seconds)`
    before each wait."""
    token = _on_wait.set(on_wait)
    try:
        yield
    finally:
        _on_wait.reset(token)


# How a waiting worker waits (tests simulate time with it and `deadline.clock`).
sleep = time.sleep


def call(attempt):
    """`attempt()`, tried again while the model wakes (inside `waiting`) and the deadline allows;
    ModelWaking when it cannot wait (any more). Other failures are raised as they are."""
    started = deadline.clock()
    while True:
        try:
            return attempt()
        except ClientError as error:
            if not is_no_capacity(error):
                raise
            retry_after = max(int(POLL_SECONDS), round(WAKE_SECONDS - (deadline.clock() - started)))
            on_wait, current = _on_wait.get(), deadline.current()
            if on_wait is None or (current and current.remaining() < POLL_SECONDS + ANSWER_RESERVE_SECONDS):
                raise ModelWaking(retry_after) from error
            on_wait(retry_after)
            sleep(POLL_SECONDS)
