"""AWS clients as this service configures them (`services` keeps one of each per container).

Clients are made with no `endpoint_url` of our own, so boto3's standard
`AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` variables
point the same code at local servers. Retries are botocore's own "standard" mode.
"""

import boto3
from botocore.config import Config

# History calls are small and idempotent (puts are conditional): retry them a few times.
DYNAMODB_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=32,
)


def dynamodb():
    return boto3.client("dynamodb", config=DYNAMODB_CONFIG)


def sagemaker_runtime(read_timeout: float):
    """One attempt only: a model call is long and costly, and a retry after a timeout
    would outlive API Gateway's 29 s; the caller gets a clear 503/504 and may retry."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=2,
        read_timeout=read_timeout,
        max_pool_connections=32,
    )
    return boto3.client("sagemaker-runtime", config=config)
