"""Conversation history in DynamoDB: append-only, one item per turn.

A turn is written with one conditional PutItem under a sort key nobody else can
hold, so two turns of one session that overlap both land (nothing is ever read,
modified and written back). A prompt reads only the newest window of turns with
one Query.

A session's partition key is its owner's `sub` and its id (`session_key`): a user reaches
only their own sessions, whatever ids they send. Keys written before sign-in (a bare session
id: '#' is not allowed in one) are reachable by no one and expire with their TTL.

The session's partition holds four kinds of items, in four key ranges:
- the summary (`!session`) that `GET /sessions` lists through the owners' index;
- turns, keyed by the microsecond the question was asked and a random suffix
  (`00001732435200000000-1a2b3c4d`), so they sort in the order they were asked;
- turn claims (`#<turn id>`), written when a client names its turn, so that the
  same turn id never stores two turns: the claim fixes the turn's key, and a
  retry finds the stored turn, or the attempt still under way, through it;
- the deletion marker (`~deleted`), after every turn.

Each user also has a rate-limit counter per minute (`~rate/<sub>`, keyed by the minute), which
no session key can equal ('#' is in every one).
"""

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import math
import secrets
import time
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import (
    HistoryFailed,
    HistoryUnavailable,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceError,
    TurnInProgress,
)
from chalicelib.table import (
    ACTIVITY_ATTRIBUTE,
    OWNER_ATTRIBUTE,
    PARTITION_KEY,
    SESSIONS_INDEX,
    SORT_KEY,
    TTL_ATTRIBUTE,
)

# Turn keys: 17 digits of microseconds, '-', 8 hex digits. They all lie in
# [FIRST_TURN_KEY, LAST_TURN_KEY], which holds no other item.
TURN_KEY_PATTERN = r"^[0-9]{17}-[0-9a-f]{8}$"
FIRST_TURN_KEY, LAST_TURN_KEY = "0", ":"
CLAIM_PREFIX = "#"
# The session's summary, which sorts before every other item of the session.
SUMMARY_KEY = "!session"
# A title is the first words of the session's first question, at most this long.
TITLE_CHARS = 60
# A deleted session keeps one marker item under this key, which sorts after every
# turn key and holds the key time of the deletion: a turn asked before the deletion
# and answered after it (its model call was under way) sorts below it and is
# hidden, rather than bringing the conversation back.
DELETION_KEY = "~deleted"
# The longest a turn can take from question to stored answer (Lambda's own limit).
# A deletion marker outlives the turns it hides by this much.
MAX_TURN_SECONDS = 900
LOST_TURN_MESSAGE = "the turn's attempt ended without an answer; send it again with the same turn id"
RATE_PREFIX = "~rate/"
RATE_WINDOW_SECONDS = 60
# BatchWriteItem takes at most 25 requests.
_BATCH_SIZE = 25
_UNPROCESSED_RETRIES = 5

# Errors that a later attempt may not meet: the client should retry (503).
_TRANSIENT_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
}


def _reports_dynamodb_errors(method):
    """Turn botocore's exceptions into service errors the API can answer with."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code in _TRANSIENT_CODES:
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


def session_key(owner: str, session_id: str) -> str:
    """The partition key of `owner`'s session `session_id`."""
    return f"{owner}#{session_id}"


@dataclasses.dataclass(frozen=True)
class Claim:
    """The right to store one turn: its id, the key it will be stored under, and the
    attempt that holds it (None when the client named no turn and nothing was written)."""

    owner: str
    session_id: str
    turn_id: str
    turn_key: str
    asked_at: float
    attempt: str | None = None

    @property
    def partition(self) -> str:
        return session_key(self.owner, self.session_id)


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


def _sessions_cursor(last_activity: str, session_id: str) -> str:
    """The opaque `next` of a sessions page: where the owners' index Query goes on."""
    encoded = json.dumps([last_activity, session_id]).encode()
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode()


def _sessions_start_key(owner: str, cursor: str) -> dict:
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


def _key_time(epoch_seconds: float) -> str:
    return f"{int(epoch_seconds * 1e6):017d}"


def _new_turn_key(asked_at: float) -> str:
    return f"{_key_time(asked_at)}-{secrets.token_hex(4)}"


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


def _fingerprint(query: str) -> str:
    """What a claim keeps of its question, to tell a retry from a reused turn id."""
    return hashlib.sha256(query.encode("utf-8")).hexdigest()


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


class ChatHistory:
    def __init__(self, client, table_name: str, ttl_days: int, clock=time.time):
        self._client = client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86400
        self._clock = clock

    @_reports_dynamodb_errors
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

    @_reports_dynamodb_errors
    def turns_page(
        self, owner: str, session_id: str, limit: int, after: str | None = None
    ) -> tuple[list[Turn], str | None]:
        """Up to `limit` live turns, oldest first, after the turn whose key is `after`;
        and the key to continue from, or None at the end. The Query's key range holds
        only turns the last deletion left, so its LastEvaluatedKey is always a turn's."""
        partition = session_key(owner, session_id)
        first = self._deleted_before(partition) or FIRST_TURN_KEY
        query = self._live_items_query(partition, first, LAST_TURN_KEY)
        if after and after > first:
            query["ExclusiveStartKey"] = {PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": after}}
        response = self._client.query(**query, Limit=limit)
        turns = [_turn(item) for item in response["Items"]]
        if not turns:  # none, or none left: is the session the caller's at all?
            self._require_session(owner, session_id)
        return turns, response.get("LastEvaluatedKey", {}).get(SORT_KEY, {}).get("S")

    @_reports_dynamodb_errors
    def claim_turn(
        self, owner: str, session_id: str, turn_id: str | None, query: str, lease_seconds: float
    ) -> Claim | Turn:
        """Start a turn. Without a turn id nothing is written and a fresh id is made.
        With one, returns the stored Turn if that turn is already done, raises
        TurnInProgress while another attempt holds it, and otherwise a Claim whose key
        is the one every attempt at this turn stores under."""
        asked_at = self._clock()
        if turn_id is None:
            return Claim(owner, session_id, secrets.token_hex(16), _new_turn_key(asked_at), asked_at)
        claim = Claim(owner, session_id, turn_id, _new_turn_key(asked_at), asked_at, attempt=secrets.token_hex(8))
        key = self._claim_key(claim.partition, turn_id)
        try:
            self._put_claim(claim, query, asked_at + lease_seconds, "attribute_not_exists(#t)", {"#t": SORT_KEY})
            return claim
        except self._client.exceptions.ConditionalCheckFailedException:
            pass
        existing = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if existing is None:  # deleted meanwhile: a new turn after all
            return self.claim_turn(owner, session_id, turn_id, query, lease_seconds)
        if existing["query_sha256"]["S"] != _fingerprint(query):
            raise InvalidRequest(f"'turn' {turn_id} was already used for another query in this session", field="turn")
        stored = self._stored_turn(claim.partition, existing["turn_key"]["S"])
        if stored is not None:
            return stored
        lease_until = float(existing["lease_until"]["N"])
        if lease_until > asked_at:
            raise TurnInProgress(
                f"turn {turn_id} is still being answered; retry with the same turn later",
                retry_after=max(1, int(lease_until - asked_at)),
            )
        # The last attempt failed or was lost: take over, keeping its key.
        claim = dataclasses.replace(
            claim, turn_key=existing["turn_key"]["S"], asked_at=_key_seconds(existing["turn_key"]["S"])
        )
        try:
            self._put_claim(
                claim, query, asked_at + lease_seconds, "#a = :previous", {"#a": "attempt"},
                {":previous": existing["attempt"]},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise TurnInProgress(f"turn {turn_id} is being retried by another request", retry_after=1) from None
        return claim

    def admit(self, claim: Claim, query: str, turns_per_minute: int) -> None:
        """Count the claimed (new) turn against its owner's turns this minute, then list its session.
        Over the limit: RateLimited. Either failure is recorded on the claim (`release`), so the
        turn's status tells it and a retry may start at once, not after the lease. Listing before
        the model is asked means a stored turn is always listed (a failed turn may leave its
        session listed without it, which is harmless) and keeps the turn's write, after the
        model, as short as it was."""
        now = self._clock()
        try:
            self._count_turn(claim.owner, now, turns_per_minute)
            self._list_session(claim, query, now)
        except ServiceError as failure:
            self.release(claim, query, failure)
            raise

    @_reports_dynamodb_errors
    def _count_turn(self, owner: str, now: float, turns_per_minute: int) -> None:
        """One atomic conditional ADD on the owner's counter of this minute: concurrent turns can
        never both take the last place."""
        window = int(now // RATE_WINDOW_SECONDS)
        window_end = (window + 1) * RATE_WINDOW_SECONDS
        try:
            self._client.update_item(
                TableName=self._table,
                Key={PARTITION_KEY: {"S": RATE_PREFIX + owner}, SORT_KEY: {"S": str(window)}},
                UpdateExpression="ADD #n :one SET #e = :expires",
                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                ExpressionAttributeNames={"#n": "turns", "#e": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":one": {"N": "1"}, ":limit": {"N": str(turns_per_minute)},
                    ":expires": {"N": str(window_end + RATE_WINDOW_SECONDS)},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            retry_after = max(1, math.ceil(window_end - now))
            raise RateLimited(
                f"at most {turns_per_minute} turns a minute; try again in {retry_after} s", retry_after=retry_after
            ) from None

    @_reports_dynamodb_errors
    def release(self, claim: Claim, query: str, failure: ServiceError) -> None:
        """Record why a turn failed, and let its next attempt start at once, not after the lease."""
        if claim.attempt is None:
            return
        try:
            self._put_claim(
                claim, query, 0, "#a = :mine", {"#a": "attempt"}, {":mine": {"S": claim.attempt}},
                failure={"error": {"S": failure.code}, "message": {"S": str(failure)}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            pass  # another attempt took the turn over: it is theirs to release

    @_reports_dynamodb_errors
    def resume_turn(self, owner: str, session_id: str, turn_id: str, query: str, attempt: str,
                    lease_seconds: float) -> Claim | Turn | None:
        """Continue the attempt `attempt` that `claim_turn` started elsewhere (a turn handed
        to the worker): the Claim to go on with, the stored Turn if it is already done, or
        None if the attempt is over (it failed, or a later attempt took the turn over)."""
        partition = session_key(owner, session_id)
        existing = self._client.get_item(
            TableName=self._table, Key=self._claim_key(partition, turn_id), ConsistentRead=True
        ).get("Item")
        if existing is None:
            return None
        stored = self._stored_turn(partition, existing["turn_key"]["S"])
        if stored is not None:
            return stored
        if existing["attempt"]["S"] != attempt or "error" in existing:
            return None
        turn_key = existing["turn_key"]["S"]
        claim = Claim(owner, session_id, turn_id, turn_key, _key_seconds(turn_key), attempt)
        try:
            self._put_claim(
                claim, query, self._clock() + lease_seconds, "#a = :mine AND attribute_not_exists(#e)",
                {"#a": "attempt", "#e": "error"}, {":mine": {"S": attempt}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return None
        return claim

    @_reports_dynamodb_errors
    def turn_status(self, owner: str, session_id: str, turn_id: str) -> tuple[str, Turn | None, dict | None] | None:
        """("done", Turn, None), ("failed", None, {"error", "message"}), ("pending", None, None),
        or None for a turn this session never had (or a deletion removed). A turn whose
        attempt outlived its lease without an answer or a recorded failure was lost."""
        partition = session_key(owner, session_id)
        existing = self._client.get_item(
            TableName=self._table, Key=self._claim_key(partition, turn_id), ConsistentRead=True
        ).get("Item")
        if existing is None or existing["turn_key"]["S"] <= self._deleted_before(partition):
            return None
        stored = self._stored_turn(partition, existing["turn_key"]["S"])
        if stored is not None:
            return "done", stored, None
        if "error" in existing:
            return "failed", None, {"error": existing["error"]["S"], "message": existing["message"]["S"]}
        if float(existing["lease_until"]["N"]) < self._clock():
            return "failed", None, {"error": "turn_lost", "message": LOST_TURN_MESSAGE}
        return "pending", None, None

    @_reports_dynamodb_errors
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
        turn = Turn(query, answer, _iso(claim.asked_at), _iso(now), claim.turn_id, history_turns, **counts)
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
            stored = self._stored_turn(claim.partition, claim.turn_key)
            if stored is None:
                raise
            return stored
        stored = self._stored_turn(claim.partition, claim.turn_key)
        if stored is None:
            raise HistoryFailed("the turn's key is taken but no turn is stored under it")
        return stored

    @_reports_dynamodb_errors
    def sessions_page(
        self, owner: str, limit: int, after: str | None = None
    ) -> tuple[list[SessionSummary], str | None]:
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
            query["ExclusiveStartKey"] = _sessions_start_key(owner, after)
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
        return summaries, _sessions_cursor(last[ACTIVITY_ATTRIBUTE]["S"], last[PARTITION_KEY]["S"].removeprefix(prefix))

    @_reports_dynamodb_errors
    def delete_session(self, owner: str, session_id: str) -> int:
        """Delete every turn the deletion hides (those asked before it), their claims and the
        session's summary, after marking the session deleted; returns how many turns."""
        self._require_session(owner, session_id)
        partition = session_key(owner, session_id)
        now = self._clock()
        deleted_before = _key_time(now)
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

    def _require_session(self, owner: str, session_id: str) -> None:
        """NotFound unless the owner has this session (listed, not deleted): another user's id
        reads exactly like one never used, so ids cannot be probed."""
        item = self._client.get_item(
            TableName=self._table, ConsistentRead=True,
            Key={PARTITION_KEY: {"S": session_key(owner, session_id)}, SORT_KEY: {"S": SUMMARY_KEY}},
        ).get("Item")
        if item is None or int(item[TTL_ATTRIBUTE]["N"]) <= self._clock():
            raise NotFound(f"you have no session {session_id}")

    @_reports_dynamodb_errors
    def _list_session(self, claim: Claim, query: str, now: float) -> None:
        """List the session (the owners' index) at this turn's time; its title is set once. The
        summary outlives the turn's own TTL, which starts when the turn is answered."""
        expires_at = {"N": str(int(now) + self._ttl_seconds + MAX_TURN_SECONDS)}
        self._client.update_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": claim.partition}, SORT_KEY: {"S": SUMMARY_KEY}},
            UpdateExpression="SET #o = :o, #a = :a, #e = :e, #t = if_not_exists(#t, :t)",
            ExpressionAttributeNames={
                "#o": OWNER_ATTRIBUTE, "#a": ACTIVITY_ATTRIBUTE, "#e": TTL_ATTRIBUTE, "#t": "title",
            },
            ExpressionAttributeValues={
                ":o": {"S": claim.owner}, ":a": {"S": _iso(now)}, ":e": expires_at, ":t": {"S": _title(query)},
            },
        )

    def _put_claim(self, claim: Claim, query: str, lease_until: float, condition: str, names: dict,
                   values: dict | None = None, failure: dict | None = None):
        self._client.put_item(
            TableName=self._table,
            Item={
                **self._claim_key(claim.partition, claim.turn_id),
                "turn_key": {"S": claim.turn_key},
                "query_sha256": {"S": _fingerprint(query)},
                "attempt": {"S": claim.attempt},
                "lease_until": {"N": f"{lease_until:.3f}"},
                TTL_ATTRIBUTE: {"N": str(int(self._clock()) + self._ttl_seconds)},
                **(failure or {}),
            },
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            **({"ExpressionAttributeValues": values} if values else {}),
        )

    def _claim_key(self, partition: str, turn_id: str) -> dict:
        return {PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": CLAIM_PREFIX + turn_id}}

    def _stored_turn(self, partition: str, turn_key: str) -> Turn | None:
        item = self._client.get_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": turn_key}},
            ConsistentRead=True,
        ).get("Item")
        return _turn(item) if item else None

    def _deleted_before(self, partition: str) -> str:
        """The key time of the session's last deletion ("" if never)."""
        marker = self._client.get_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": DELETION_KEY}},
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


def _key_seconds(turn_key: str) -> float:
    return int(turn_key[:17]) / 1e6
