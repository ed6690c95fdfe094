"""AWS clients as this service configures them (`services` keeps one of each per container).

Clients are made with no `endpoint_url` of our own, so the standard
`AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` variables
point the same code at local servers. Retries are botocore's own "standard" mode.

They come from botocore directly: boto3 adds nothing for low-level clients but
about 0.2 s of imports (s3transfer) to every cold start, and langchain_aws
patches `boto3.client` globally, which these clients thereby stay clear of.
"""

import botocore.session
from botocore.config import Config
from botocore.retries import standard

from chalicelib import deadline

# History calls (small and idempotent: puts are conditional) and publishing a turn to SNS:
# retry them, briefly.
QUICK_CALL_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=1,
    read_timeout=2,
    max_pool_connections=32,
)
# The longest one attempt of such a call can take.
QUICK_CALL_ATTEMPT_SECONDS = QUICK_CALL_CONFIG.connect_timeout + QUICK_CALL_CONFIG.read_timeout
# botocore counts `max_attempts` as retries after the first attempt.
QUICK_CALL_TOTAL_ATTEMPTS = QUICK_CALL_CONFIG.retries["max_attempts"] + 1


def longest_backoff_seconds(attempts: int) -> float:
    """The longest sleep botocore's standard mode takes after attempt `attempts` before the next:
    up to 2 ** (attempts - 1) s after a throttle (retries/standard.py, ExponentialBackoff)."""
    return min(2 ** (attempts - 1), 20)


def _retry_fits(service_name: str):
    """A `needs-retry` handler: before botocore sleeps to retry, the request's deadline must leave
    that sleep at its longest and the next attempt, or the call ends now (DeadlineExceeded). The
    before-send check alone would refuse the next attempt only after the sleep, which may pass
    the deadline. botocore's own retry conditions decide whether a retry would follow."""
    conditions = standard.StandardRetryConditions(max_attempts=QUICK_CALL_TOTAL_ATTEMPTS)

    def check(attempts, operation, response=None, caught_exception=None, request_dict=None, **_):
        http_response, parsed_response = response if response is not None else (None, None)
        retry = standard.RetryContext(
            attempt_number=attempts, operation_model=operation, parsed_response=parsed_response,
            http_response=http_response, caught_exception=caught_exception,
            request_context=(request_dict or {}).get("context", {}),
        )
        if conditions.is_retryable(retry):
            deadline.check_time_for(longest_backoff_seconds(attempts) + QUICK_CALL_ATTEMPT_SECONDS,
                                    f"a {service_name} retry")

    return check


def _quick_client(service_name: str):
    """Each attempt, retries included, starts only if it can end before the request's deadline,
    and no retry waits past it."""
    client = botocore.session.get_session().create_client(service_name, config=QUICK_CALL_CONFIG)
    client.meta.events.register_first(
        f"before-send.{service_name}",
        lambda **_: deadline.check_time_for(QUICK_CALL_ATTEMPT_SECONDS, f"a {service_name} attempt"),
    )
    client.meta.events.register_first(f"needs-retry.{service_name}", _retry_fits(service_name))
    return client


def dynamodb():
    return _quick_client("dynamodb")


def sagemaker_runtime(read_timeout: float):
    """One attempt only: a model call is long and costly, and a retry after a timeout
    would outlive the request's deadline; the caller gets a clear 503/504 and may retry.
    The read timeout is the caller's: what the deadline leaves for the model."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=2,
        read_timeout=read_timeout,
        max_pool_connections=32,
    )
    return botocore.session.get_session().create_client("sagemaker-runtime", config=config)


def sns():
    return _quick_client("sns")


def sqs():
    return _quick_client("sqs")


class BotocoreSession:
    """What Chalice's `websocket_api` needs of a boto3 Session (`client(name, **kwargs)`), from
    botocore alone: boto3 would add its imports to every cold start."""

    def client(self, service_name: str, **kwargs):
        return botocore.session.get_session().create_client(service_name, **kwargs)
