"""DynamoDB's failures as the service errors the API answers with: the one mapping, for every store."""

import functools

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import HistoryFailed, HistoryUnavailable

# Errors that a later attempt may not meet: the client should retry (503).
TRANSIENT_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
}


def reports_dynamodb_errors(method):
    """Turn botocore's exceptions into service errors the API can answer with."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code in TRANSIENT_CODES:
                raise HistoryUnavailable(f"the history store is busy ({code}); try again shortly") from error
            raise HistoryFailed(f"the history store failed ({code})") from error
        except BotoCoreError as error:
            raise HistoryUnavailable(f"the history store cannot be reached ({type(error).__name__})") from error

    return call
