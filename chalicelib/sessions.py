"""A user's sessions: their summaries, which `GET /sessions` lists, their ownership, and deletion.

A session is listed when a turn of it is admitted (`record_activity`): its summary item holds the
owner, the last activity and a title (the first words of its first question), and the sparse
owners' index lists a user's summaries, newest activity first. A session is its owner's while
its summary lives: another user's id reads exactly like one never used, so ids cannot be probed.

Deleting a session writes the deletion marker first, then deletes every turn asked before it,
their claims and the summary: a turn asked before the deletion and answered after it (its model
call was under way) sorts below the marker and stays hidden, rather than bringing the
conversation back.
"""

import base64
import binascii
import dataclasses
import json
import time

from chalicelib.dynamodb_errors import reports_dynamodb_errors
from chalicelib.errors import HistoryUnavailable, InvalidRequest, NotFound
from chalicelib.table import (
    ACTIVITY_ATTRIBUTE,
    DELETION_KEY,
    FIRST_TURN_KEY,
    LAST_TURN_KEY,
    OWNER_ATTRIBUTE,
    PARTITION_KEY,
    SESSIONS_INDEX,
    SORT_KEY,
    SUMMARY_KEY,
    TTL_ATTRIBUTE,
    iso_time,
    key_time,
    session_key,
)

# A title is the first words of the session's first question, at most this long.
TITLE_CHARS = 60
# The longest a turn can take from question to stored answer (Lambda's own limit). A summary
# and a deletion marker outlive the turns they list or hide by this much.
MAX_TURN_SECONDS = 900
# BatchWriteItem takes at most 25 requests.
_BATCH_SIZE = 25
_UNPROCESSED_RETRIES = 5


@dataclasses.dataclass(frozen=True)
class SessionSummary:
    sessionid: str
    title: str
    last_activity: str

    def as_listed(self) -> dict:
        return dataclasses.asdict(self)


def _title(query: str) -> str:
    """The first words of `query` that fit in TITLE_CHARS ('…' if cut; a longer first word is cut)."""
    words = query.split()
    title = ""
    for word in words:
        if len(title) + len(word) + 1 > TITLE_CHARS - 1:
            return (title or word[: TITLE_CHARS - 1]) + "…"
        title = f"{title} {word}" if title else word
    return title


def _cursor(last_activity: str, session_id: str) -> str:
    """The opaque `next` of a sessions page: where the owners' index Query goes on."""
    encoded = json.dumps([last_activity, session_id]).encode()
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode()


def _start_key(owner: str, cursor: str) -> dict:
    """The ExclusiveStartKey of `cursor`, always within `owner`'s own sessions."""
    try:
        last_activity, session_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(last_activity, str) and isinstance(session_id, str)):
            raise ValueError(cursor)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise InvalidRequest("'after' is not a cursor this API gave out", field="after") from None
    return {
        PARTITION_KEY: {"S": session_key(owner, session_id)},
        SORT_KEY: {"S": SUMMARY_KEY},
        OWNER_ATTRIBUTE: {"S": owner},
        ACTIVITY_ATTRIBUTE: {"S": last_activity},
    }


class Sessions:
    def __init__(self, client, table_name: str, ttl_days: int, clock=time.time):
        self._client = client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86400
        self._clock = clock

    @reports_dynamodb_errors
    def record_activity(self, owner: str, session_id: str, query: str) -> None:
        """List the session (the owners' index) at this turn's time; its title is set once. The
        summary outlives the turn's own TTL, which starts when the turn is answered."""
        now = self._clock()
        expires_at = {"N": str(int(now) + self._ttl_seconds + MAX_TURN_SECONDS)}
        self._client.update_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": session_key(owner, session_id)}, SORT_KEY: {"S": SUMMARY_KEY}},
            UpdateExpression="SET #o = :o, #a = :a, #e = :e, #t = if_not_exists(#t, :t)",
            ExpressionAttributeNames={
                "#o": OWNER_ATTRIBUTE, "#a": ACTIVITY_ATTRIBUTE, "#e": TTL_ATTRIBUTE, "#t": "title",
            },
            ExpressionAttributeValues={
                ":o": {"S": owner}, ":a": {"S": iso_time(now)}, ":e": expires_at, ":t": {"S": _title(query)},
            },
        )

    @reports_dynamodb_errors
    def page(self, owner: str, limit: int, after: str | None = None) -> tuple[list[SessionSummary], str | None]:
        """Up to `limit` of `owner`'s unexpired sessions, newest activity first, after the cursor
        `after`; and the cursor to go on from, or None at the end."""
        query = {
            "TableName": self._table,
            "IndexName": SESSIONS_INDEX,
            "KeyConditionExpression": "#o = :o",
            "FilterExpression": "#e > :now",
            "ExpressionAttributeNames": {"#o": OWNER_ATTRIBUTE, "#e": TTL_ATTRIBUTE},
            "ExpressionAttributeValues": {":o": {"S": owner}, ":now": {"N": str(int(self._clock()))}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after:
            query["ExclusiveStartKey"] = _start_key(owner, after)
        response = self._client.query(**query)
        prefix = session_key(owner, "")
        summaries = [
            SessionSummary(
                sessionid=item[PARTITION_KEY]["S"].removeprefix(prefix),
                title=item.get("title", {}).get("S", ""),
                last_activity=item[ACTIVITY_ATTRIBUTE]["S"],
            )
            for item in response["Items"]
        ]
        last = response.get("LastEvaluatedKey")
        if last is None:
            return summaries, None
        return summaries, _cursor(last[ACTIVITY_ATTRIBUTE]["S"], last[PARTITION_KEY]["S"].removeprefix(prefix))

    @reports_dynamodb_errors
    def require(self, owner: str, session_id: str) -> None:
        """NotFound unless the owner has this session (listed, not deleted): another user's id
        reads exactly like one never used, so ids cannot be probed."""
        item = self._client.get_item(
            TableName=self._table, ConsistentRead=True,
            Key={PARTITION_KEY: {"S": session_key(owner, session_id)}, SORT_KEY: {"S": SUMMARY_KEY}},
        ).get("Item")
        if item is None or int(item[TTL_ATTRIBUTE]["N"]) <= self._clock():
            raise NotFound(f"you have no session {session_id}")

    @reports_dynamodb_errors
    def delete(self, owner: str, session_id: str) -> int:
        """Delete every turn the deletion hides (those asked before it), their claims and the
        session's summary, after marking the session deleted; returns how many turns."""
        self.require(owner, session_id)
        partition = session_key(owner, session_id)
        now = self._clock()
        deleted_before = key_time(now)
        self._client.put_item(TableName=self._table, Item={
            PARTITION_KEY: {"S": partition},
            SORT_KEY: {"S": DELETION_KEY},
            "deleted_before": {"S": deleted_before},
            # Outlives every turn it hides, even one stored after the deletion.
            TTL_ATTRIBUTE: {"N": str(int(now) + self._ttl_seconds + MAX_TURN_SECONDS)},
        })
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            # The summary and the claims sort before turns; a claim goes with its turn.
            KeyConditionExpression="#s = :s AND #t < :deletion",
            FilterExpression="attribute_not_exists(#k) OR #k < :deletion",
            ExpressionAttributeNames={"#s": PARTITION_KEY, "#t": SORT_KEY, "#k": "turn_key"},
            ExpressionAttributeValues={":s": {"S": partition}, ":deletion": {"S": deleted_before}},
            ProjectionExpression="#s, #t",
            ConsistentRead=True,
        )
        keys = [item for page in pages for item in page["Items"]]
        for start in range(0, len(keys), _BATCH_SIZE):
            self._delete_batch(keys[start : start + _BATCH_SIZE])
        return sum(FIRST_TURN_KEY <= key[SORT_KEY]["S"] <= LAST_TURN_KEY for key in keys)

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
