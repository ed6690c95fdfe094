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

# History calls are small and idempotent (puts are conditional): retry them, briefly,
# so that a turn stays within API Gateway's 29 s.
DYNAMODB_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=1,
    read_timeout=2,
    max_pool_connections=32,
)


def dynamodb():
    return botocore.session.get_session().create_client("dynamodb", config=DYNAMODB_CONFIG)


def sagemaker_runtime(read_timeout: float):
    """One attempt only: a model call is long and costly, and a retry after a timeout
    would outlive API Gateway's 29 s; the caller gets a clear 503/504 and may retry."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=2,
        read_timeout=read_timeout,
        max_pool_connections=32,
    )
    return botocore.session.get_session().create_client("sagemaker-runtime", config=config)
