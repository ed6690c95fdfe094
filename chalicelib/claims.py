"""Turn claims: a turn id stores at most one turn, however often it is sent.

When a client names its turn, a claim item (`#<turn id>`) is written before the model is asked.
It fixes the key the turn will be stored under and holds a lease for the attempt under way, so a
retry finds the stored turn (and answers it without asking the model again), or the attempt still
under way (409), or a failed or lost one, which it takes over under the same key. Without a turn
id nothing is written and a fresh id is made.
"""

import dataclasses
import hashlib
import secrets
import time

from chalicelib.dynamodb_errors import reports_dynamodb_errors
from chalicelib.errors import InvalidRequest, NotFound, ServiceError, TurnInProgress
from chalicelib.history import History, Turn
from chalicelib.table import (
    CLAIM_PREFIX,
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    key_seconds,
    new_turn_key,
    session_key,
)

LOST_TURN_MESSAGE = "the turn's attempt ended without an answer; send it again with the same turn id"


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
class TurnStart:
    """How a turn starts: the `claim` to answer it under, or, when the same turn id was answered
    already (a retry), the stored turn, `answered`, and no claim."""

    claim: Claim | None = None
    answered: Turn | None = None


@dataclasses.dataclass(frozen=True)
class TurnStatus:
    """A turn as `GET /sessions/S/turns/T` reports it: "done" with its turn and the question it
    answered (a replaced turn's may differ from the one that replaced it), "failed" with the
    failure's `error` and `message`, or "pending"."""

    state: str
    turn: Turn | None = None
    failure: dict | None = None

    def as_reply(self, session_id: str, turn_id: str) -> dict:
        if self.turn is not None:
            return {"status": self.state, **self.turn.as_reply(session_id), "query": self.turn.query}
        return {"status": self.state, "sessionid": session_id, "turn": turn_id, **(self.failure or {})}


def _asked_at(claim_item: dict) -> float:
    """When the claimed turn was first asked (claims written before this was kept: its key's time)."""
    if "asked_at" in claim_item:
        return float(claim_item["asked_at"]["N"])
    return key_seconds(claim_item["turn_key"]["S"])


def _fingerprint(query: str) -> str:
    """What a claim keeps of its question, to tell a retry from a reused turn id."""
    return hashlib.sha256(query.encode("utf-8")).hexdigest()


class Claims:
    def __init__(self, client, table_name: str, ttl_days: int, history: History, clock=time.time):
        self._client = client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86400
        self._history = history
        self._clock = clock

    @reports_dynamodb_errors
    def claim(self, owner: str, session_id: str, turn_id: str | None, query: str, lease_seconds: float,
              turn_key: str | None = None) -> TurnStart:
        """Start a turn, to be stored under a new key, or under `turn_key` (the turn it replaces).
        Without a turn id nothing is written and a fresh id is made. With one, the stored turn if
        that turn is already done, TurnInProgress while another attempt holds it, and otherwise a
        claim whose key is the one every attempt at this turn stores under."""
        asked_at = self._clock()
        turn_key = turn_key or new_turn_key(asked_at)
        if turn_id is None:
            return TurnStart(Claim(owner, session_id, secrets.token_hex(16), turn_key, asked_at))
        claim = Claim(owner, session_id, turn_id, turn_key, asked_at, attempt=secrets.token_hex(8))
        key = self._key(claim.partition, turn_id)
        try:
            self._put(claim, query, asked_at + lease_seconds, "attribute_not_exists(#t)", {"#t": SORT_KEY})
            return TurnStart(claim)
        except self._client.exceptions.ConditionalCheckFailedException:
            pass
        existing = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if existing is None:  # deleted meanwhile: a new turn after all
            return self.claim(owner, session_id, turn_id, query, lease_seconds, turn_key)
        if existing["query_sha256"]["S"] != _fingerprint(query):
            raise InvalidRequest(f"'turn' {turn_id} was already used for another query in this session", field="turn")
        stored = self._history.stored_turn(claim.partition, existing["turn_key"]["S"], turn_id)
        if stored is not None:
            return TurnStart(answered=stored)
        lease_until = float(existing["lease_until"]["N"])
        if lease_until > asked_at:
            raise TurnInProgress(
                f"turn {turn_id} is still being answered; retry with the same turn later",
                retry_after=max(1, int(lease_until - asked_at)),
            )
        # The last attempt failed or was lost: take over, keeping its key and its time.
        claim = dataclasses.replace(claim, turn_key=existing["turn_key"]["S"], asked_at=_asked_at(existing))
        try:
            self._put(
                claim, query, asked_at + lease_seconds, "#a = :previous", {"#a": "attempt"},
                {":previous": existing["attempt"]},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise TurnInProgress(f"turn {turn_id} is being retried by another request", retry_after=1) from None
        return TurnStart(claim)

    @reports_dynamodb_errors
    def withdraw(self, claim: Claim) -> None:
        """Forget a claim whose turn was refused before it began (over the rate limit): the turn
        leaves nothing behind, and the same turn id starts afresh when it is sent again."""
        if claim.attempt is None:
            return
        try:
            self._client.delete_item(
                TableName=self._table, Key=self._key(claim.partition, claim.turn_id),
                ConditionExpression="#a = :mine", ExpressionAttributeNames={"#a": "attempt"},
                ExpressionAttributeValues={":mine": {"S": claim.attempt}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            pass  # another attempt took the turn over: it is theirs

    @reports_dynamodb_errors
    def release(self, claim: Claim, query: str, failure: ServiceError) -> None:
        """Record why a turn failed, and let its next attempt start at once, not after the lease."""
        if claim.attempt is None:
            return
        try:
            self._put(
                claim, query, 0, "#a = :mine", {"#a": "attempt"}, {":mine": {"S": claim.attempt}},
                failure={"error": {"S": failure.code}, "message": {"S": str(failure)}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            pass  # another attempt took the turn over: it is theirs to release

    @reports_dynamodb_errors
    def resume(self, owner: str, session_id: str, turn_id: str, query: str, attempt: str,
               lease_seconds: float) -> Claim | None:
        """Continue the attempt `attempt` that `claim` started elsewhere (a turn handed to the
        worker): the claim to go on with, or None when nothing is left to do: the turn is stored,
        or the attempt is over (it failed, or a later attempt took the turn over)."""
        partition = session_key(owner, session_id)
        existing = self._client.get_item(
            TableName=self._table, Key=self._key(partition, turn_id), ConsistentRead=True
        ).get("Item")
        if existing is None or existing["attempt"]["S"] != attempt or "error" in existing:
            return None
        turn_key = existing["turn_key"]["S"]
        if self._history.stored_turn(partition, turn_key, turn_id) is not None:
            return None
        claim = Claim(owner, session_id, turn_id, turn_key, _asked_at(existing), attempt)
        try:
            self._put(
                claim, query, self._clock() + lease_seconds, "#a = :mine AND attribute_not_exists(#e)",
                {"#a": "attempt", "#e": "error"}, {":mine": {"S": attempt}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return None
        return claim

    @reports_dynamodb_errors
    def status(self, owner: str, session_id: str, turn_id: str) -> TurnStatus | None:
        """The turn's status, or None for a turn this session never had (or a deletion removed).
        A turn whose attempt outlived its lease without an answer or a recorded failure was lost.
        A turn sent without an id has no claim: it is "done" if it is stored, else unknown."""
        partition = session_key(owner, session_id)
        existing = self._client.get_item(
            TableName=self._table, Key=self._key(partition, turn_id), ConsistentRead=True
        ).get("Item")
        if existing is None:
            stored = self._history.find(owner, session_id, turn_id)
            return TurnStatus("done", stored) if stored else None
        if existing["turn_key"]["S"] <= self._history.deleted_before(partition):
            return None
        try:
            stored = self._history.stored_turn(partition, existing["turn_key"]["S"], turn_id)
        except NotFound:
            return None
        if stored is not None:
            return TurnStatus("done", stored)
        if "error" in existing:
            return TurnStatus("failed", failure={"error": existing["error"]["S"], "message": existing["message"]["S"]})
        if float(existing["lease_until"]["N"]) < self._clock():
            return TurnStatus("failed", failure={"error": "turn_lost", "message": LOST_TURN_MESSAGE})
        return TurnStatus("pending")

    @reports_dynamodb_errors
    def stored(self, owner: str, session_id: str, turn_id: str) -> Turn | None:
        """The stored turn `turn_id` (or a previous version of one), None if there is none: through
        its claim when it has one, else by looking for it."""
        status = self.status(owner, session_id, turn_id)
        return status.turn if status else None

    def _put(self, claim: Claim, query: str, lease_until: float, condition: str, names: dict,
             values: dict | None = None, failure: dict | None = None):
        self._client.put_item(
            TableName=self._table,
            Item={
                **self._key(claim.partition, claim.turn_id),
                "turn_key": {"S": claim.turn_key},
                "asked_at": {"N": f"{claim.asked_at:.6f}"},
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

    @staticmethod
    def _key(partition: str, turn_id: str) -> dict:
        return {PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": CLAIM_PREFIX + turn_id}}
