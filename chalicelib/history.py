"""Conversation history in DynamoDB: append-only, one item per turn.

A turn is written with one conditional PutItem under a fresh sort key, so two
turns of one session that overlap both land (nothing is ever read, modified and
written back). A prompt reads only the newest window of turns with one Query.
"""

import dataclasses
import functools
import secrets
import time
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import HistoryFailed, HistoryUnavailable
from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

# Sort keys: the microsecond the question was asked and a random suffix, so turns
# sort in the order they were asked and two turns never share one.
TURN_KEY_PATTERN = r"^[0-9]{17}-[0-9a-f]{8}$"
# A deleted session keeps one marker item under this key, which sorts after every
# turn key and holds the key prefix of the deletion's time: a turn asked before the
# deletion and answered after it (its model call was under way) sorts below it and
# is hidden, rather than bringing the conversation back.
DELETION_KEY = "~deleted"
# BatchWriteItem takes at most 25 requests.
_BATCH_SIZE = 25
_UNPROCESSED_RETRIES = 5


_THROTTLING_CODES = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}


def _reports_dynamodb_errors(method):
    """Turn botocore's exceptions into service errors the API can answer with."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code in _THROTTLING_CODES:
                raise HistoryUnavailable(f"the history store is busy ({code}); try again shortly") from error
            raise HistoryFailed(f"the history store failed ({code})") from error
        except BotoCoreError as error:
            raise HistoryUnavailable(f"the history store cannot be reached ({type(error).__name__})") from error

    return call


@dataclasses.dataclass(frozen=True)
class Turn:
    query: str
    answer: str
    asked_at: str = ""
    answered_at: str = ""

    def messages(self) -> list[dict]:
        return [
            {"role": "user", "content": self.query, "time": self.asked_at},
            {"role": "assistant", "content": self.answer, "time": self.answered_at},
        ]


def _key_time(epoch_seconds: float) -> str:
    return f"{int(epoch_seconds * 1e6):017d}"


def _kept(item: dict, deleted_before: str) -> bool:
    """A turn (not the deletion marker) asked after the session's last deletion, if any."""
    key = item[SORT_KEY]["S"]
    return key != DELETION_KEY and key > deleted_before

def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


class ChatHistory:
    def __init__(self, client, table_name: str, ttl_days: int, clock=time.time):
        self._client = client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86400
        self._clock = clock

    @_reports_dynamodb_errors
    def recent_turns(self, session_id: str, limit: int) -> list[Turn]:
        """The newest `limit` live turns, oldest first: one strongly consistent Query
        (newest first, so a deletion marker comes with it)."""
        if limit == 0:
            return []
        response = self._client.query(
            **self._live_items_query(session_id, (SORT_KEY, "query", "answer", "deleted_before")),
            ScanIndexForward=False,
            Limit=limit + 1,
        )
        items = response["Items"]
        deleted_before = items[0]["deleted_before"]["S"] if items and items[0][SORT_KEY]["S"] == DELETION_KEY else ""
        turns = [Turn(item["query"]["S"], item["answer"]["S"]) for item in items if _kept(item, deleted_before)]
        return turns[:limit][::-1]

    @_reports_dynamodb_errors
    def turns_page(self, session_id: str, limit: int, after: str | None = None) -> tuple[list[Turn], str | None]:
        """Up to `limit` live turns, oldest first, after the turn whose key is `after`;
        and the key to continue from, or None at the end."""
        query = self._live_items_query(session_id)
        if after:
            query["ExclusiveStartKey"] = {PARTITION_KEY: {"S": session_id}, SORT_KEY: {"S": after}}
        response = self._client.query(**query, Limit=limit)
        deleted_before = self._deleted_before(session_id)
        turns = [
            Turn(item["query"]["S"], item["answer"]["S"], item["asked_at"]["S"], item["answered_at"]["S"])
            for item in response["Items"]
            if _kept(item, deleted_before)
        ]
        return turns, response.get("LastEvaluatedKey", {}).get(SORT_KEY, {}).get("S")

    @_reports_dynamodb_errors
    def append_turn(self, session_id: str, query: str, answer: str, asked_at: float) -> Turn:
        """Store a finished turn. The sort key is new, so the write never replaces anything."""
        now = self._clock()
        turn = Turn(query, answer, _iso(asked_at), _iso(now))
        item = {
            PARTITION_KEY: {"S": session_id},
            SORT_KEY: {"S": f"{_key_time(asked_at)}-{secrets.token_hex(4)}"},
            "query": {"S": query},
            "answer": {"S": answer},
            "asked_at": {"S": turn.asked_at},
            "answered_at": {"S": turn.answered_at},
            TTL_ATTRIBUTE: {"N": str(int(now) + self._ttl_seconds)},
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#t)",
                ExpressionAttributeNames={"#t": SORT_KEY},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            # The key is random and new: only our own earlier attempt, whose answer
            # was lost and which botocore retried, can have written it.
            pass
        return turn

    @_reports_dynamodb_errors
    def delete_session(self, session_id: str) -> int:
        """Delete every turn of the session, after marking it deleted; returns how many."""
        now = self._clock()
        self._client.put_item(TableName=self._table, Item={
            PARTITION_KEY: {"S": session_id},
            SORT_KEY: {"S": DELETION_KEY},
            "deleted_before": {"S": _key_time(now)},
            TTL_ATTRIBUTE: {"N": str(int(now) + self._ttl_seconds)},
        })
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="#s = :s AND #t < :deletion",
            ExpressionAttributeNames={"#s": PARTITION_KEY, "#t": SORT_KEY},
            ExpressionAttributeValues={":s": {"S": session_id}, ":deletion": {"S": DELETION_KEY}},
            ProjectionExpression="#s, #t",
            ConsistentRead=True,
        )
        keys = [item for page in pages for item in page["Items"]]
        for start in range(0, len(keys), _BATCH_SIZE):
            self._delete_batch(keys[start : start + _BATCH_SIZE])
        return len(keys)

    def _deleted_before(self, session_id: str) -> str:
        """The key time of the session's last deletion ("" if never)."""
        marker = self._client.get_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": session_id}, SORT_KEY: {"S": DELETION_KEY}},
            ConsistentRead=True,
        ).get("Item")
        return marker["deleted_before"]["S"] if marker else ""

    def _delete_batch(self, keys: list[dict]) -> None:
        # botocore retries throttled calls, but items DynamoDB leaves unprocessed come
        # back in a successful answer, so resending them is ours to do.
        requests = {self._table: [{"DeleteRequest": {"Key": key}} for key in keys]}
        for attempt in range(_UNPROCESSED_RETRIES):
            requests = self._client.batch_write_item(RequestItems=requests)["UnprocessedItems"]
            if not requests:
                return
            time.sleep(0.05 * 2**attempt)
        raise HistoryUnavailable(f"DynamoDB left {len(requests[self._table])} deletions unprocessed")

    def _live_items_query(self, session_id: str, attributes: tuple[str, ...] = ()) -> dict:
        """Query arguments for the session's unexpired items (TTL deletion lags expiry by days)."""
        names = {"#s": PARTITION_KEY, "#e": TTL_ATTRIBUTE}
        query = {
            "TableName": self._table,
            "KeyConditionExpression": "#s = :s",
            "FilterExpression": "#e > :now",
            "ExpressionAttributeValues": {":s": {"S": session_id}, ":now": {"N": str(int(self._clock()))}},
            "ExpressionAttributeNames": names,
            "ConsistentRead": True,
        }
        if attributes:
            projected = {f"#p{i}": name for i, name in enumerate(attributes)}
            names.update(projected)
            query["ProjectionExpression"] = ", ".join(projected)
        return query
