"""A user's sessions: their summaries, which `GET /sessions` lists (and searches), their titles,
their ownership, and deletion.

A session is listed when a turn of it is admitted (`record_activity`): its summary item holds the
owner, the last activity and a title (the first words of its first question, until the user
renames it), and the sparse owners' index lists a user's summaries, newest activity first. A
session is its owner's while its summary lives: another user's id reads exactly like one never
used, so ids cannot be probed.

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
# A search reads at most this many of the owner's summaries for one page, then answers with what it
# found and a cursor to go on from (a page of a search may hold fewer sessions than its limit).
SEARCH_READ_LIMIT = 1000
SEARCH_QUERY_LIMIT = 100
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


def _matches(title: str, words: list[str]) -> bool:
    """Whether the title holds every word, in any case (Unicode's case folding: "STRASSE" holds "straße")."""
    folded = title.casefold()
    return all(word in folded for word in words)


def _summary(item: dict, owner: str) -> SessionSummary:
    return SessionSummary(
        sessionid=item[PARTITION_KEY]["S"].removeprefix(session_key(owner, "")),
        title=item.get("title", {}).get("S", ""),
        last_activity=item[ACTIVITY_ATTRIBUTE]["S"],
    )


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
    def page(self, owner: str, limit: int, after: str | None = None,
             search: str | None = None) -> tuple[list[SessionSummary], str | None]:
        """Up to `limit` of `owner`'s unexpired sessions, newest activity first, after the cursor
        `after`, whose titles hold every word of `search` if given; and the cursor to go on from,
        or None at the end.

        A search filters here rather than in DynamoDB, whose `contains` tells case, and reads the
        index a page at a time until it has `limit` sessions, or has read SEARCH_READ_LIMIT."""
        words = search.casefold().split() if search else []
        query = {
            "TableName": self._table,
            "IndexName": SESSIONS_INDEX,
            "KeyConditionExpression": "#o = :o",
            "FilterExpression": "#e > :now",
            "ExpressionAttributeNames": {"#o": OWNER_ATTRIBUTE, "#e": TTL_ATTRIBUTE},
            "ExpressionAttributeValues": {":o": {"S": owner}, ":now": {"N": str(int(self._clock()))}},
            "ScanIndexForward": False,
            "Limit": max(limit, SEARCH_QUERY_LIMIT) if words else limit,
        }
        if after:
            query["ExclusiveStartKey"] = _start_key(owner, after)
        summaries, read = [], 0
        while True:
            response = self._client.query(**query)
            last = response.get("LastEvaluatedKey")
            for item in response["Items"]:
                read += 1
                summary = _summary(item, owner)
                if _matches(summary.title, words):
                    summaries.append(summary)
                if len(summaries) == limit or (words and read >= SEARCH_READ_LIMIT):
                    # Stopped inside the answer: go on after this item (if the answer has more).
                    if item is not response["Items"][-1] or last is not None:
                        last = {PARTITION_KEY: item[PARTITION_KEY], ACTIVITY_ATTRIBUTE: item[ACTIVITY_ATTRIBUTE]}
                    return summaries, self._next(last, owner)
            if last is None:
                return summaries, None
            query["ExclusiveStartKey"] = last

    @staticmethod
    def _next(last: dict | None, owner: str) -> str | None:
        if last is None:
            return None
        return _cursor(last[ACTIVITY_ATTRIBUTE]["S"], last[PARTITION_KEY]["S"].removeprefix(session_key(owner, "")))

    @reports_dynamodb_errors
    def summary(self, owner: str, session_id: str) -> SessionSummary:
        """The owner's session's summary; NotFound unless the owner has this session (listed, not
        deleted): another user's id reads exactly like one never used, so ids cannot be probed."""
        item = self._client.get_item(
            TableName=self._table, ConsistentRead=True,
            Key={PARTITION_KEY: {"S": session_key(owner, session_id)}, SORT_KEY: {"S": SUMMARY_KEY}},
        ).get("Item")
        if item is None or int(item[TTL_ATTRIBUTE]["N"]) <= self._clock():
            raise NotFound(f"you have no session {session_id}")
        return _summary(item, owner)

    @reports_dynamodb_errors
    def rename(self, owner: str, session_id: str, title: str) -> SessionSummary:
        """Give the owner's session a title of the user's own; NotFound as `summary`."""
        try:
            item = self._client.update_item(
                TableName=self._table,
                Key={PARTITION_KEY: {"S": session_key(owner, session_id)}, SORT_KEY: {"S": SUMMARY_KEY}},
                UpdateExpression="SET #t = :t",
                ConditionExpression="attribute_exists(#s) AND #e > :now",
                ExpressionAttributeNames={"#t": "title", "#s": PARTITION_KEY, "#e": TTL_ATTRIBUTE},
                ExpressionAttributeValues={":t": {"S": title}, ":now": {"N": str(int(self._clock()))}},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except self._client.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"you have no session {session_id}") from None
        return _summary(item, owner)

    @reports_dynamodb_errors
    def delete(self, owner: str, session_id: str) -> int:
        """Delete every turn the deletion hides (those asked before it), their claims and the
        session's summary, after marking the session deleted; returns how many turns."""
        self.summary(owner, session_id)
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
