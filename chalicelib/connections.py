"""WebSocket connections bound to their user at `$connect`: one item each in the chat table, under
a partition key no session has (`~connection/<connection id>`), so each message needs no token,
only a GetItem.

A connection's access ends when the token it connected with does: its item expires at the token's
`exp` (at most API Gateway's two hours of a connection), and a message after that is refused
(the app then closes the socket; the page connects again with a fresh token)."""

import time

from chalicelib.dynamodb_errors import reports_dynamodb_errors
from chalicelib.errors import Unauthorized
from chalicelib.table import CONNECTION_PREFIX, CONNECTION_SORT_KEY, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

# API Gateway closes a WebSocket connection after 2 hours: no item needs to live longer.
MAX_CONNECTION_SECONDS = 2 * 3600


class Connections:
    def __init__(self, dynamodb, table_name: str, clock=time.time):
        self._dynamodb, self._table = dynamodb, table_name
        self._clock = clock

    @staticmethod
    def _key(connection_id: str) -> dict:
        return {PARTITION_KEY: {"S": CONNECTION_PREFIX + connection_id}, SORT_KEY: {"S": CONNECTION_SORT_KEY}}

    @reports_dynamodb_errors
    def open(self, connection_id: str, owner: str, token_expires_at: float) -> None:
        """Bind the connection to `owner` until their token expires."""
        expires_at = int(min(token_expires_at, self._clock() + MAX_CONNECTION_SECONDS))
        self._dynamodb.put_item(TableName=self._table, Item={
            **self._key(connection_id), "owner": {"S": owner}, TTL_ATTRIBUTE: {"N": str(expires_at)}})

    @reports_dynamodb_errors
    def close(self, connection_id: str) -> None:
        self._dynamodb.delete_item(TableName=self._table, Key=self._key(connection_id))

    @reports_dynamodb_errors
    def owner(self, connection_id: str) -> str:
        """The `sub` the connection signed in as; consistent, so a message right after `$connect` finds it."""
        item = self._dynamodb.get_item(TableName=self._table, Key=self._key(connection_id),
                                       ConsistentRead=True).get("Item")
        if item is None:
            raise Unauthorized("this connection is not signed in: connect again with a token")
        # TTL deletes lazily: an item past its time is read here before DynamoDB removes it.
        if int(item[TTL_ATTRIBUTE]["N"]) <= self._clock():
            raise Unauthorized("the token this connection signed in with has expired: connect again with a new one")
        return item["owner"]["S"]
