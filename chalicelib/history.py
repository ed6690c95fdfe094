"""A session's turns in DynamoDB: one item per turn (the layout: chalicelib/table.py).

A turn is written with one conditional PutItem under a sort key nobody else can hold, so two
turns of one session that overlap both land (nothing is ever read, modified and written back).
A prompt reads only the newest window of turns with one Query.

The conversation's last turn can be replaced (regenerate, or edit and send again): the new turn
takes the replaced one's place in its item, in one conditional UpdateItem that holds only if the
item still holds the replaced turn, and the replaced turn is kept in the item's `versions`
(the newest MAX_VERSIONS), with the ids of all it replaced in `replaces`. So the listing and
every later prompt hold only the new turn, a replacement that fails changes nothing, and no
transaction is needed (dynalite, make run's DynamoDB, has none).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.dynamodb_errors import reports_dynamodb_errors
from chalicelib.errors import HistoryFailed, NotFound, NotLastTurn
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
    # The ids of the turns this one replaced, oldest first (regenerate, edit and send again).
    replaces: tuple[str, ...] = ()
    # The user's rating of the answer: {"rating": "up" | "down", "comment"?: str, "time": str}.
    feedback: dict | None = None
    # Set on a turn that was replaced: the id of the turn that now stands in its place.
    replaced_by: str | None = None
    # Where the turn is stored (its item's sort key); "" for a turn not read from the table.
    key: str = ""

    def as_reply(self, session_id: str) -> dict:
        """The JSON of an answered turn, the one shape every API that answers a turn uses."""
        reply = {
            "sessionid": session_id,
            "turn": self.turn_id,
            "answer": self.answer,
            "asked_at": self.asked_at,
            "answered_at": self.answered_at,
            "history_turns": self.history_turns,
        }
        if self.replaces:
            reply["replaces"] = list(self.replaces)
        if self.replaced_by:
            reply["replaced_by"] = self.replaced_by
        return reply

    def messages(self) -> list[dict]:
        """The turn as the messages listing shows it: each message names its turn (and the turns
        it replaced), `tokens` when the endpoint's count is known, the answer its `feedback`."""
        turn = {"turn": self.turn_id, **({"replaces": list(self.replaces)} if self.replaces else {})}
        messages = [
            {"role": "user", "content": self.query, "time": self.asked_at, **turn},
            {"role": "assistant", "content": self.answer, "time": self.answered_at, **turn},
        ]
        for message, count in zip(messages, (self.query_tokens, self.answer_tokens), strict=True):
            if count is not None:
                message["tokens"] = count
        if self.feedback:
            messages[1]["feedback"] = self.feedback
        return messages


# The previous versions a turn's item keeps, newest last; older ones are dropped.
MAX_VERSIONS = 10
# `every_turn` reads the session this many turns a Query (DynamoDB's 1 MB a page still applies).
EVERY_TURN_PAGE = 200

_COUNTS = ("prompt_tokens", "query_tokens", "answer_tokens")
# Stored, not needed by prompts, so not read by `recent_turns`.
_TIMINGS = ("first_token_ms", "model_ms")
# What a turn's item holds of the turn itself (all but its previous versions and its TTL).
_TURN_ATTRIBUTES = ("query", "answer", "asked_at", "answered_at", "turn_id", "history_turns", *_COUNTS, *_TIMINGS,
                    "replaces", "feedback")
_FEEDBACK_FIELDS = ("rating", "comment", "time")


def _turn(item: dict) -> Turn:
    return Turn(
        query=item["query"]["S"],
        answer=item["answer"]["S"],
        asked_at=item.get("asked_at", {}).get("S", ""),
        answered_at=item.get("answered_at", {}).get("S", ""),
        turn_id=item.get("turn_id", {}).get("S", ""),
        history_turns=int(item.get("history_turns", {}).get("N", 0)),
        **{name: int(item[name]["N"]) for name in (*_COUNTS, *_TIMINGS) if name in item},
        replaces=tuple(turn_id["S"] for turn_id in item.get("replaces", {}).get("L", [])),
        feedback=_feedback(item.get("feedback")),
        key=item.get(SORT_KEY, {}).get("S", ""),
    )


def _feedback(value: dict | None) -> dict | None:
    if value is None:
        return None
    return {name: value["M"][name]["S"] for name in _FEEDBACK_FIELDS if name in value["M"]}


def version(item: dict, turn_id: str) -> Turn | None:
    """The turn `turn_id` of a turn's item: the turn it holds, or one of the previous versions it
    keeps (with `replaced_by`); None when the item has neither. NotFound for a turn it replaced
    so long ago that its version is no longer kept."""
    current = _turn(item)
    if current.turn_id == turn_id:
        return current
    for previous in item.get("versions", {}).get("L", []):
        if previous["M"]["turn_id"]["S"] == turn_id:
            return dataclasses.replace(_turn({**previous["M"], SORT_KEY: item[SORT_KEY]}), replaced_by=current.turn_id)
    if turn_id in current.replaces:
        raise NotFound(f"turn {turn_id} was replaced, and only the newest {MAX_VERSIONS} versions are kept")
    return None


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
                ("query", "answer", "history_turns", "turn_id", "replaces", *_COUNTS, "deleted_before"),
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
        query = self._live_items_query(partition, first, LAST_TURN_KEY, _TURN_ATTRIBUTES)
        if after and after > first:
            query["ExclusiveStartKey"] = {PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": after}}
        response = self._client.query(**query, Limit=limit)
        turns = [_turn(item) for item in response["Items"]]
        if not turns:  # none, or none left: is the session the caller's at all?
            self._sessions.summary(owner, session_id)
        return turns, response.get("LastEvaluatedKey", {}).get(SORT_KEY, {}).get("S")

    def every_turn(self, owner: str, session_id: str) -> list[Turn]:
        """Every live turn of the session, oldest first (NotFound unless it is the owner's)."""
        turns, after = self.turns_page(owner, session_id, EVERY_TURN_PAGE)
        while after:
            page, after = self.turns_page(owner, session_id, EVERY_TURN_PAGE, after)
            turns += page
        return turns

    @reports_dynamodb_errors
    def last_turn(self, owner: str, session_id: str) -> Turn | None:
        """The conversation's last turn (the only one a new turn may replace), None if it has none."""
        turns = self.recent_turns(owner, session_id, 1)
        return turns[-1] if turns else None

    @reports_dynamodb_errors
    def append_turn(self, claim: Claim, query: str, answer: str, history_turns: int, counts: dict | None = None,
                    replacing: Turn | None = None) -> Turn:
        """Store a finished turn under its claim's key, with its token `counts` and timings (Turn's
        field names; None or missing: unknown); or, `replacing` the conversation's last turn, in
        that turn's item in its place. The write never overwrites a turn it does not expect: if the
        key is taken (a retried write whose first attempt landed, or another attempt at the same
        turn), the stored turn is the answer. If the write's outcome is unknown after every retry,
        one consistent read settles it."""
        now = self._clock()
        counts = {name: count for name, count in (counts or {}).items() if count is not None}
        replaces = (*replacing.replaces, replacing.turn_id) if replacing else ()
        turn = Turn(query, answer, iso_time(claim.asked_at), iso_time(now), claim.turn_id, history_turns, **counts,
                    replaces=replaces, key=claim.turn_key)
        fields = {
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
            if replacing:
                if not self._replace(claim, fields, replaces, replacing):
                    return self.stored_turn(claim.partition, claim.turn_key, claim.turn_id)
            else:
                self._client.put_item(
                    TableName=self._table,
                    Item={PARTITION_KEY: {"S": claim.partition}, SORT_KEY: {"S": claim.turn_key}, **fields},
                    ConditionExpression="attribute_not_exists(#t)",
                    ExpressionAttributeNames={"#t": SORT_KEY},
                )
            return turn
        except self._client.exceptions.ConditionalCheckFailedException:
            pass
        except (ClientError, BotoCoreError):
            stored = self.stored_turn(claim.partition, claim.turn_key, claim.turn_id)
            if stored is None:
                raise
            return stored
        stored = self.stored_turn(claim.partition, claim.turn_key, claim.turn_id)
        if stored is not None:
            return stored
        if replacing:
            raise NotLastTurn(f"turn {replacing.turn_id} was replaced meanwhile; nothing was changed")
        raise HistoryFailed("the turn's key is taken but no turn is stored under it")

    def _replace(self, claim: Claim, fields: dict, replaces: tuple[str, ...], replacing: Turn) -> bool:
        """Put the new turn in the replaced turn's item, if that item still holds it and it is still
        the conversation's last turn, keeping the replaced turn among the item's versions. False
        when an earlier attempt at the same turn did it already."""
        last = self.last_turn(claim.owner, claim.session_id)
        if last is not None and last.turn_id == claim.turn_id:
            return False
        item = None
        if last is not None and last.turn_id == replacing.turn_id:
            item = self._client.get_item(
                TableName=self._table, ConsistentRead=True,
                Key={PARTITION_KEY: {"S": claim.partition}, SORT_KEY: {"S": replacing.key}},
            ).get("Item")
        if item is None:
            raise NotLastTurn(f"turn {replacing.turn_id} is no longer the conversation's last turn; "
                              "nothing was changed")
        previous = {name: item[name] for name in _TURN_ATTRIBUTES if name in item and name != "replaces"}
        versions = [*item.get("versions", {}).get("L", []), {"M": previous}][-MAX_VERSIONS:]
        values = {**fields, "replaces": {"L": [{"S": turn_id} for turn_id in replaces]}, "versions": {"L": versions}}
        names = {f"#f{index}": name for index, name in enumerate(values)}
        # Counts and feedback of the replaced turn must not stay with the new one.
        removed = [name for name in (*_COUNTS, *_TIMINGS, "feedback") if name not in values]
        names.update({f"#r{index}": name for index, name in enumerate(removed)})
        self._client.update_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": claim.partition}, SORT_KEY: {"S": replacing.key}},
            UpdateExpression="SET " + ", ".join(f"#f{index} = :f{index}" for index in range(len(values)))
            + (" REMOVE " + ", ".join(f"#r{index}" for index in range(len(removed))) if removed else ""),
            ConditionExpression="#id = :replaced",
            ExpressionAttributeNames={**names, "#id": "turn_id"},
            ExpressionAttributeValues={**{f":f{index}": value for index, value in enumerate(values.values())},
                                       ":replaced": {"S": replacing.turn_id}},
        )
        return True

    def stored_turn(self, partition: str, turn_key: str, turn_id: str) -> Turn | None:
        """The turn `turn_id` stored under `turn_key` (or kept there as a previous version)."""
        item = self._client.get_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": turn_key}},
            ConsistentRead=True,
        ).get("Item")
        return version(item, turn_id) if item else None

    @reports_dynamodb_errors
    def find(self, owner: str, session_id: str, turn_id: str) -> Turn | None:
        """The live turn `turn_id` of the session (or a previous version of one), wherever it is
        stored: for turns a client sent without an id, which have no claim to say where."""
        partition = session_key(owner, session_id)
        first = self.deleted_before(partition) or FIRST_TURN_KEY
        query = self._live_items_query(partition, first, LAST_TURN_KEY)
        query["FilterExpression"] += " AND (#id = :id OR contains(#replaces, :id))"
        query["ExpressionAttributeNames"].update({"#id": "turn_id", "#replaces": "replaces"})
        query["ExpressionAttributeValues"][":id"] = {"S": turn_id}
        for page in self._client.get_paginator("query").paginate(**query):
            for item in page["Items"]:
                if found := version(item, turn_id):
                    return found
        return None

    @reports_dynamodb_errors
    def set_feedback(self, owner: str, session_id: str, turn: Turn, feedback: dict | None) -> Turn:
        """Rate the answer of `turn` (found by `find` or a claim), or with None take the rating
        back. Only a turn that stands in the conversation can be rated: a replaced one is not found."""
        if turn.replaced_by:
            raise NotFound(f"turn {turn.turn_id} was replaced by {turn.replaced_by}: rate the answer that replaced it")
        key = {PARTITION_KEY: {"S": session_key(owner, session_id)}, SORT_KEY: {"S": turn.key}}
        if feedback is None:
            update, values = "REMOVE #f", {}
        else:
            update, values = "SET #f = :f", {":f": {"M": {name: {"S": value} for name, value in feedback.items()}}}
        try:
            self._client.update_item(
                TableName=self._table, Key=key, UpdateExpression=update,
                ConditionExpression="#id = :id AND #e > :now",
                ExpressionAttributeNames={"#f": "feedback", "#id": "turn_id", "#e": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    **values, ":id": {"S": turn.turn_id}, ":now": {"N": str(int(self._clock()))}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"session {session_id} has no turn {turn.turn_id}") from None
        return dataclasses.replace(turn, feedback=feedback)

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
