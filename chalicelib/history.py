"""A session's turns in DynamoDB: append-only, one item per turn (the layout: chalicelib/table.py).

A turn is written with one conditional PutItem under a sort key nobody else can hold, so two
turns of one session that overlap both land (nothing is ever read, modified and written back).
A prompt reads only the newest window of turns with one Query.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.dynamodb_errors import reports_dynamodb_errors
from chalicelib.errors import HistoryFailed
from chalicelib.sessions import Sessions
from chalicelib.table import (
    DELETION_KEY,
    FIRST_TURN_KEY,
    LAST_TURN_KEY,
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    iso_time,
    session_key,
)

if TYPE_CHECKING:
    from chalicelib.claims import Claim


@dataclasses.dataclass(frozen=True)
class Turn:
    query: str
    answer: str
    asked_at: str = ""
    answered_at: str = ""
    turn_id: str = ""
    history_turns: int = 0
    # The endpoint's counts, when it gave them: the whole prompt that asked this turn, and what
    # the question and the answer take in a later prompt (chat.py derives them). None: unknown
    # (turns stored before the endpoint's counts were kept, or a count that could not be derived).
    prompt_tokens: int | None = None
    query_tokens: int | None = None
    answer_tokens: int | None = None
    # The model's time to the first text of the answer and to its end, in ms (chat.py measures
    # them); None for turns stored before they were kept.
    first_token_ms: int | None = None
    model_ms: int | None = None

    def as_reply(self, session_id: str) -> dict:
        """The JSON of an answered turn, the one shape every API that answers a turn uses."""
        return {
            "sessionid": session_id,
            "turn": self.turn_id,
            "answer": self.answer,
            "asked_at": self.asked_at,
            "answered_at": self.answered_at,
            "history_turns": self.history_turns,
        }

    def messages(self) -> list[dict]:
        """The turn as the messages listing shows it; `tokens` when the endpoint's count is known."""
        messages = [
            {"role": "user", "content": self.query, "time": self.asked_at},
            {"role": "assistant", "content": self.answer, "time": self.answered_at},
        ]
        for message, count in zip(messages, (self.query_tokens, self.answer_tokens), strict=True):
            if count is not None:
                message["tokens"] = count
        return messages


_COUNTS = ("prompt_tokens", "query_tokens", "answer_tokens")
# Stored, not needed by prompts, so not read by `recent_turns`.
_TIMINGS = ("first_token_ms", "model_ms")


def _turn(item: dict) -> Turn:
    return Turn(
        query=item["query"]["S"],
        answer=item["answer"]["S"],
        asked_at=item.get("asked_at", {}).get("S", ""),
        answered_at=item.get("answered_at", {}).get("S", ""),
        turn_id=item.get("turn_id", {}).get("S", ""),
        history_turns=int(item.get("history_turns", {}).get("N", 0)),
        **{name: int(item[name]["N"]) for name in (*_COUNTS, *_TIMINGS) if name in item},
    )


class History:
    def __init__(self, client, table_name: str, ttl_days: int, sessions: Sessions, clock=time.time):
        self._client = client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86400
        self._sessions = sessions
        self._clock = clock

    @reports_dynamodb_errors
    def recent_turns(self, owner: str, session_id: str, limit: int) -> list[Turn]:
        """The newest `limit` live turns, oldest first: one strongly consistent Query
        (newest first, so the deletion marker, if any, comes first)."""
        if limit == 0:
            return []
        response = self._client.query(
            **self._live_items_query(
                session_key(owner, session_id), FIRST_TURN_KEY, DELETION_KEY,
                ("query", "answer", "history_turns", *_COUNTS, "deleted_before"),
            ),
            ScanIndexForward=False,
            Limit=limit + 1,
        )
        items = response["Items"]
        deleted_before = ""
        if items and items[0][SORT_KEY]["S"] == DELETION_KEY:
            deleted_before = items.pop(0)["deleted_before"]["S"]
        turns = [_turn(item) for item in items if item[SORT_KEY]["S"] > deleted_before]
        return turns[:limit][::-1]

    @reports_dynamodb_errors
    def turns_page(
        self, owner: str, session_id: str, limit: int, after: str | None = None
    ) -> tuple[list[Turn], str | None]:
        """Up to `limit` live turns, oldest first, after the turn whose key is `after`;
        and the key to continue from, or None at the end. The Query's key range holds
        only turns the last deletion left, so its LastEvaluatedKey is always a turn's."""
        partition = session_key(owner, session_id)
        first = self.deleted_before(partition) or FIRST_TURN_KEY
        query = self._live_items_query(partition, first, LAST_TURN_KEY)
        if after and after > first:
            query["ExclusiveStartKey"] = {PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": after}}
        response = self._client.query(**query, Limit=limit)
        turns = [_turn(item) for item in response["Items"]]
        if not turns:  # none, or none left: is the session the caller's at all?
            self._sessions.require(owner, session_id)
        return turns, response.get("LastEvaluatedKey", {}).get(SORT_KEY, {}).get("S")

    @reports_dynamodb_errors
    def append_turn(
        self, claim: Claim, query: str, answer: str, history_turns: int, counts: dict | None = None
    ) -> Turn:
        """Store a finished turn under its claim's key, with its token `counts` and timings
        (Turn's field names; None or missing: unknown). The write never replaces
        anything: if the key is taken (a retried put whose first attempt landed, or
        another attempt at the same turn), the stored turn is the answer. If the put's
        outcome is unknown after every retry, one consistent read settles it."""
        now = self._clock()
        counts = {name: count for name, count in (counts or {}).items() if count is not None}
        turn = Turn(query, answer, iso_time(claim.asked_at), iso_time(now), claim.turn_id, history_turns, **counts)
        item = {
            PARTITION_KEY: {"S": claim.partition},
            SORT_KEY: {"S": claim.turn_key},
            "query": {"S": query},
            "answer": {"S": answer},
            "asked_at": {"S": turn.asked_at},
            "answered_at": {"S": turn.answered_at},
            "turn_id": {"S": claim.turn_id},
            "history_turns": {"N": str(history_turns)},
            **{name: {"N": str(count)} for name, count in counts.items()},
            TTL_ATTRIBUTE: {"N": str(int(now) + self._ttl_seconds)},
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#t)",
                ExpressionAttributeNames={"#t": SORT_KEY},
            )
            return turn
        except self._client.exceptions.ConditionalCheckFailedException:
            pass
        except (ClientError, BotoCoreError):
            stored = self.stored_turn(claim.partition, claim.turn_key)
            if stored is None:
                raise
            return stored
        stored = self.stored_turn(claim.partition, claim.turn_key)
        if stored is None:
            raise HistoryFailed("the turn's key is taken but no turn is stored under it")
        return stored

    def stored_turn(self, partition: str, turn_key: str) -> Turn | None:
        item = self._client.get_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": turn_key}},
            ConsistentRead=True,
        ).get("Item")
        return _turn(item) if item else None

    def deleted_before(self, partition: str) -> str:
        """The key time of the session's last deletion ("" if never)."""
        marker = self._client.get_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": DELETION_KEY}},
            ConsistentRead=True,
        ).get("Item")
        return marker["deleted_before"]["S"] if marker else ""

    def _live_items_query(self, partition: str, first_key: str, last_key: str, attributes: tuple = ()) -> dict:
        """Query arguments for the session's unexpired items with keys in [first_key,
        last_key] (TTL deletion lags expiry by days)."""
        names = {"#s": PARTITION_KEY, "#t": SORT_KEY, "#e": TTL_ATTRIBUTE}
        query = {
            "TableName": self._table,
            "KeyConditionExpression": "#s = :s AND #t BETWEEN :first AND :last",
            "FilterExpression": "#e > :now",
            "ExpressionAttributeValues": {
                ":s": {"S": partition},
                ":first": {"S": first_key},
                ":last": {"S": last_key},
                ":now": {"N": str(int(self._clock()))},
            },
            "ExpressionAttributeNames": names,
            "ConsistentRead": True,
        }
        if attributes:
            projected = {f"#p{i}": name for i, name in enumerate(attributes)}
            names.update(projected)
            query["ProjectionExpression"] = ", ".join(["#t", *projected])
        return query
