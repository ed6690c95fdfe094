"""The chat table's schema and item layout: the one definition the app, `make table` and the CDK
stack share.

A session's partition key is its owner's `sub` and its id (`session_key`): a user reaches only
their own sessions, whatever ids they send. Keys written before sign-in (a bare session id: '#'
is not allowed in one) are reachable by no one and expire with their TTL.

The session's partition holds four kinds of items, in four key ranges:
- the summary (`!session`) that `GET /sessions` lists through the owners' index (the sparse
  index on owner and last activity: summaries are the only items with an owner);
- turn claims (`#<turn id>`), written when a client names its turn, so that the same turn id
  never stores two turns (chalicelib/claims.py);
- turns, one item each (question and answer together, so a turn is a single conditional
  PutItem and history only ever grows), keyed by the microsecond the question was asked and a
  random suffix (`00001732435200000000-1a2b3c4d`), so they sort in the order they were asked;
- the deletion marker (`~deleted`), after every turn.

Items that belong to no session have partition keys no session key can equal ('#' is in every
one): each user's rate-limit counter per minute (`~rate/<sub>`) and each WebSocket connection's
user (`~connection/<connection id>`).
"""

import secrets
from datetime import UTC, datetime

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


SUMMARY_KEY = "!session"
CLAIM_PREFIX = "#"
# Turn keys: 17 digits of microseconds, '-', 8 hex digits. They all lie in
# [FIRST_TURN_KEY, LAST_TURN_KEY], which holds no other item.
TURN_KEY_PATTERN = r"^[0-9]{17}-[0-9a-f]{8}$"
FIRST_TURN_KEY, LAST_TURN_KEY = "0", ":"
# Sorts after every turn key; holds the key time of the session's last deletion.
DELETION_KEY = "~deleted"
RATE_PREFIX = "~rate/"
CONNECTION_PREFIX = "~connection/"
CONNECTION_SORT_KEY = "!connection"


def session_key(owner: str, session_id: str) -> str:
    """The partition key of `owner`'s session `session_id`."""
    return f"{owner}#{session_id}"


def key_time(epoch_seconds: float) -> str:
    """A moment as the first part of a turn key: microseconds, 17 digits."""
    return f"{int(epoch_seconds * 1e6):017d}"


def new_turn_key(asked_at: float) -> str:
    return f"{key_time(asked_at)}-{secrets.token_hex(4)}"


def key_seconds(turn_key: str) -> float:
    """When the turn under `turn_key` was asked."""
    return int(turn_key[:17]) / 1e6


def iso_time(epoch_seconds: float) -> str:
    """A moment as items store it and the API shows it."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")
