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

from chalicelib import deadline

# History calls are small and idempotent (puts are conditional): retry them, briefly.
DYNAMODB_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=1,
    read_timeout=2,
    max_pool_connections=32,
)
# The longest one DynamoDB attempt can take.
DYNAMODB_ATTEMPT_SECONDS = DYNAMODB_CONFIG.connect_timeout + DYNAMODB_CONFIG.read_timeout


def dynamodb():
    """Each attempt, retries included, starts only if it can end before the request's deadline."""
    client = botocore.session.get_session().create_client("dynamodb", config=DYNAMODB_CONFIG)
    client.meta.events.register_first(
        "before-send.dynamodb",
        lambda **_: deadline.check_time_for(DYNAMODB_ATTEMPT_SECONDS, "a DynamoDB attempt"),
    )
    return client


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
