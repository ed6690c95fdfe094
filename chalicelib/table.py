"""The chat table's schema: the one definition the app, `make table` and the CDK stack share.

One item per turn (question and answer together) under the session's partition
key, so a turn is a single conditional PutItem and history only ever grows.
Each session also has a summary item, the only items with an owner: the sparse
index on (owner, last activity) lists a user's sessions, newest first.
"""

PARTITION_KEY = "sessionid"
SORT_KEY = "turn"
TTL_ATTRIBUTE = "expires_at"

SESSIONS_INDEX = "sessions-by-owner"
OWNER_ATTRIBUTE = "owner"
ACTIVITY_ATTRIBUTE = "last_activity"
# What the listing shows besides the keys; the TTL too, to leave out expired sessions.
SESSIONS_INDEX_ATTRIBUTES = ["title", TTL_ATTRIBUTE]

# DynamoDB attribute types of the key attributes ("S" string, "N" number).
KEY_TYPES = {PARTITION_KEY: "S", SORT_KEY: "S", OWNER_ATTRIBUTE: "S", ACTIVITY_ATTRIBUTE: "S"}


def sessions_index() -> dict:
    """The owners' index, as `create_table` takes it."""
    return {
        "IndexName": SESSIONS_INDEX,
        "KeySchema": [
            {"AttributeName": OWNER_ATTRIBUTE, "KeyType": "HASH"},
            {"AttributeName": ACTIVITY_ATTRIBUTE, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": SESSIONS_INDEX_ATTRIBUTES},
    }


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
        "GlobalSecondaryIndexes": [sessions_index()],
        "BillingMode": "PAY_PER_REQUEST",
    }
