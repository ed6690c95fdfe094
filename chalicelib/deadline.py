"""Each request's deadline, so that the app always answers with its own JSON first.

API Gateway gives up on a request after 29 s and answers its own 504, while the turn
may still be stored. Every wait in a request fits in its deadline: each DynamoDB
attempt starts only with time for it to finish (`clients`), and the model's read
timeout is what the deadline leaves after the history write (`chat`). The deadline
is the current context's (a thread's in `chalice local`), so the shared clients
see the deadline of the request they are serving.
"""

import contextlib
import contextvars
import time

from botocore.exceptions import BotoCoreError

# Lambda stops the function at its timeout: answer this long before it.
LAMBDA_MARGIN_SECONDS = 1.0
# Read when a deadline is made and checked (a test may replace it with simulated time).
clock = time.monotonic

_current: contextvars.ContextVar["Deadline | None"] = contextvars.ContextVar("deadline", default=None)


class DeadlineExceeded(BotoCoreError):
    """Raised before a call that could not finish before the request's deadline."""

    fmt = "no time left before the request's deadline for {operation}"


class Deadline:
    def __init__(self, seconds: float):
        self._end = clock() + seconds

    def remaining(self) -> float:
        return self._end - clock()


def for_request(request_timeout_seconds: float, lambda_context=None) -> Deadline:
    """The deadline of a request that started now: the setting, or less if Lambda stops sooner."""
    seconds = request_timeout_seconds
    if lambda_context is not None:
        seconds = min(seconds, lambda_context.get_remaining_time_in_millis() / 1000 - LAMBDA_MARGIN_SECONDS)
    return Deadline(seconds)


def current() -> Deadline | None:
    return _current.get()


@contextlib.contextmanager
def applying(deadline: Deadline):
    """Make `deadline` the current one for the block."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


def check_time_for(seconds: float, operation: str) -> None:
    """Raise DeadlineExceeded unless the current deadline leaves `seconds` for `operation`."""
    deadline = current()
    if deadline is not None and deadline.remaining() < seconds:
        raise DeadlineExceeded(operation=operation)
