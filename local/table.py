"""`make table`: create the chat table in the DynamoDB at AWS_ENDPOINT_URL_DYNAMODB.

For local servers (dynalite, moto); in AWS the CDK stack creates the table. The
name is CHAT_TABLE_NAME, or the `local` stage's in .chalice/config.json.
"""

import os
import sys

import boto3

from chalicelib.table import SESSIONS_INDEX, create_table_request
from local.settings import offline_aws_environment, stage_environment

_WAIT = {"Delay": 0.2, "MaxAttempts": 100}


def local_table_name() -> str:
    return stage_environment()["CHAT_TABLE_NAME"]


def has_sessions_index(table: dict) -> bool:
    """Whether a table (DescribeTable's) has the sessions index, which tables made before sign-in lack."""
    return any(index["IndexName"] == SESSIONS_INDEX for index in table.get("GlobalSecondaryIndexes", []))


def table_is_ready(client, table_name: str) -> bool:
    """Whether the table is there as `ensure_table` leaves it: active, with the sessions index."""
    try:
        table = client.describe_table(TableName=table_name)["Table"]
    except client.exceptions.ResourceNotFoundException:
        return False
    return table["TableStatus"] == "ACTIVE" and has_sessions_index(table)


def ensure_table(client, table_name: str) -> bool:
    """Create the table unless it exists with the sessions index; True if it was created."""
    try:
        client.create_table(**create_table_request(table_name))
    except client.exceptions.ResourceInUseException:
        if has_sessions_index(client.describe_table(TableName=table_name)["Table"]):
            return False
        # An earlier `make run` made it before sign-in: every item in it is keyed by a bare session
        # id, which no user reaches. dynalite cannot add an index to a table, so it is made anew.
        print(f"table {table_name} predates sign-in (its conversations are unreachable): recreating it")
        client.delete_table(TableName=table_name)
        client.get_waiter("table_not_exists").wait(TableName=table_name, WaiterConfig=_WAIT)
        client.create_table(**create_table_request(table_name))
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig=_WAIT)
    return True


def main() -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    if not endpoint:
        print("AWS_ENDPOINT_URL_DYNAMODB is not set: `make table` is for a local DynamoDB "
              "(in AWS, `cdk deploy` creates the table).", file=sys.stderr)
        return 2
    # Local servers take any credentials; don't make users invent some.
    for variable, value in offline_aws_environment().items():
        os.environ.setdefault(variable, value)
    table_name = os.environ.get("CHAT_TABLE_NAME") or local_table_name()
    created = ensure_table(boto3.client("dynamodb"), table_name)
    print(f"table {table_name} {'created' if created else 'already exists'} at {endpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
