"""Turns answered by the worker: the WebSocket handler and `POST /chat {"async": true}` accept
a turn and hand it over through SNS (then SQS, then the `on_sqs_message` worker).

Accepting starts the turn (`admission.start_turn`) before anything is published, so the turn's
status is known from then on, a retry with the same turn id is recognised, and the worker
resumes exactly the attempt that was accepted. No LangChain here: accepting stays light.

The worker runs at most WORKER_CONCURRENCY turns at once (what the model generates at once):
beyond that, turns wait in the queue, and `queued_ahead` tells the client how many are before it.
"""

import logging
import secrets

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from chalicelib.admission import start_turn
from chalicelib.claims import Claim, TurnStart
from chalicelib.errors import TurnsUnavailable
from chalicelib.store import ChatStore
from chalicelib.validation import ChatRequest

logger = logging.getLogger(__name__)
# SQS's approximate counts: turns waiting for a worker, and turns a worker has taken.
WAITING, TAKEN = "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"


class ReplyTo(BaseModel):
    """The WebSocket connection that the worker streams the answer to."""

    connection_id: str
    domain_name: str
    stage: str


class HandedOverTurn(BaseModel):
    """The message on the turns topic: everything the worker needs to answer the turn."""

    owner: str
    sessionid: str
    query: str
    turn: str
    attempt: str
    replaces: str | None = None
    reply_to: ReplyTo | None = None


class TurnHandover:
    def __init__(self, sns, topic_arn: str | None, store: ChatStore, settings, sqs=None):
        self._sns = sns
        self._topic_arn = topic_arn
        self._store = store
        self._settings = settings
        self._sqs = sqs
        self._queue_url: str | None = None  # looked up once per container

    def accept(self, owner: str, request: ChatRequest) -> TurnStart:
        """Start `owner`'s turn as a synchronous one would be, claimed for the worker for
        WORKER_TIMEOUT_SECONDS: the claim to `publish`, or the stored turn if the same turn id
        was answered already."""
        if self._topic_arn is None:
            raise TurnsUnavailable("asynchronous turns are not configured (TURNS_TOPIC_ARN)")
        return start_turn(self._store, self._settings, owner, request.sessionid, request.query,
                          request.turn or secrets.token_hex(16), self._settings.worker_timeout_seconds,
                          request.replaces)

    def publish(self, claim: Claim, request: ChatRequest, reply_to: ReplyTo | None = None) -> None:
        """Hand the accepted turn to the worker; if that fails, the turn fails with it."""
        message = HandedOverTurn(owner=claim.owner, sessionid=claim.session_id, query=request.query,
                                 turn=claim.turn_id, attempt=claim.attempt, replaces=request.replaces,
                                 reply_to=reply_to)
        try:
            self._sns.publish(TopicArn=self._topic_arn, Message=message.model_dump_json())
        except (BotoCoreError, ClientError) as error:
            failure = TurnsUnavailable("the turn could not be handed to the worker; try again shortly")
            self._store.claims.release(claim, request.query, failure)
            raise failure from error

    def queued_ahead(self) -> int | None:
        """When every worker is busy, how many turns wait in the queue before one handed over now
        (SQS's approximate counts); None when a worker is free. Only for the client to see: when
        the queue cannot be read, the turn goes on without it.

        The busy workers are SQS's in-flight messages (ApproximateNumberOfMessagesNotVisible), which
        also count those whose worker failed until their visibility timeout (6 x the worker's
        timeout, infrastructure/turns.py) passes: for that long after a worker crash, a turn may be
        told it is queued while workers are free."""
        if self._sqs is None or self._settings.turns_queue_name is None:
            return None
        try:
            if self._queue_url is None:
                self._queue_url = self._sqs.get_queue_url(QueueName=self._settings.turns_queue_name)["QueueUrl"]
            counts = self._sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=[WAITING, TAKEN])
        except (BotoCoreError, ClientError):
            logger.warning("the turns queue's length is unknown", exc_info=True)
            return None
        if int(counts["Attributes"][TAKEN]) < self._settings.worker_concurrency:
            return None
        return int(counts["Attributes"][WAITING])
