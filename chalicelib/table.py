"""The chat table's schema: the one definition the app, `make table` and the CDK stack share.

One item per turn (question and answer together) under the session's partition
key, so a turn is a single conditional PutItem and history only ever grows.
"""

PARTITION_KEY = "sessionid"
SORT_KEY = "turn"
TTL_ATTRIBUTE = "expires_at"

# DynamoDB attribute types of the key attributes ("S" string, "N" number).
KEY_TYPES = {PARTITION_KEY: "S", SORT_KEY: "S"}


def create_table_request(table_name: str) -> dict:
    """Keyword arguments for boto3's `create_table` (on-demand billing)."""
    return {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": kind} for name, kind in KEY_TYPES.items()
        ],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
