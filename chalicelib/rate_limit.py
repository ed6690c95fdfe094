"""The per-user limit on new turns a minute (TURNS_PER_MINUTE), on every path that starts one.

Each user has a counter item per minute (`~rate/<sub>`, keyed by the minute), counted with one
atomic conditional ADD: concurrent turns can never both take the last place, and a refused turn
writes nothing (the condition fails before the ADD applies).
"""

import math
import time

from chalicelib.dynamodb_errors import reports_dynamodb_errors
from chalicelib.errors import RateLimited
from chalicelib.table import PARTITION_KEY, RATE_PREFIX, SORT_KEY, TTL_ATTRIBUTE

WINDOW_SECONDS = 60


class RateLimit:
    def __init__(self, client, table_name: str, clock=time.time):
        self._client = client
        self._table = table_name
        self._clock = clock

    @reports_dynamodb_errors
    def count_turn(self, owner: str, turns_per_minute: int) -> None:
        """Count a new turn of `owner`'s in this minute; RateLimited when the minute is full."""
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        window_end = (window + 1) * WINDOW_SECONDS
        try:
            self._client.update_item(
                TableName=self._table,
                Key={PARTITION_KEY: {"S": RATE_PREFIX + owner}, SORT_KEY: {"S": str(window)}},
                UpdateExpression="ADD #n :one SET #e = :expires",
                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                ExpressionAttributeNames={"#n": "turns", "#e": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":one": {"N": "1"}, ":limit": {"N": str(turns_per_minute)},
                    ":expires": {"N": str(window_end + WINDOW_SECONDS)},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            retry_after = max(1, math.ceil(window_end - now))
            raise RateLimited(
                f"at most {turns_per_minute} turns a minute; try again in {retry_after} s", retry_after=retry_after
            ) from None
