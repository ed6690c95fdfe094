"""WebSocket connections bound to their user at `$connect`: one item each in the chat table, under
a partition key no session has (`~connection/<connection id>`), so each message needs no token,
only a GetItem."""

import time

from chalicelib.dynamodb_errors import reports_dynamodb_errors
from chalicelib.errors import Unauthorized
from chalicelib.table import CONNECTION_PREFIX, CONNECTION_SORT_KEY, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

# API Gateway closes a WebSocket connection after 2 hours; its item outlives it by a margin.
CONNECTION_TTL_SECONDS = 2 * 3600 + 10 * 60


class Connections:
    def __init__(self, dynamodb, table_name: str, clock=time.time):
        self._dynamodb, self._table = dynamodb, table_name
        self._clock = clock

    @staticmethod
    def _key(connection_id: str) -> dict:
        return {PARTITION_KEY: {"S": CONNECTION_PREFIX + connection_id}, SORT_KEY: {"S": CONNECTION_SORT_KEY}}

    @reports_dynamodb_errors
    def open(self, connection_id: str, owner: str) -> None:
        expires_at = int(self._clock()) + CONNECTION_TTL_SECONDS
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
        # TTL deletes lazily: an item past its time is no connection API Gateway still holds.
        if item is None or int(item[TTL_ATTRIBUTE]["N"]) <= self._clock():
            raise Unauthorized("this connection is not signed in: connect again with a token")
        return item["owner"]["S"]
