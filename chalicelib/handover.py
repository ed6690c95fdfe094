"""Turns answered by the worker: the WebSocket handler and `POST /chat {"async": true}` accept
a turn and hand it over through SNS (then SQS, then the `on_sqs_message` worker).

Accepting claims the turn (`history.claim_turn`) before anything is published, so the turn's
status is known from then on, a retry with the same turn id is recognised, and the worker
resumes exactly the attempt that was accepted. No LangChain here: accepting stays light.
"""

import secrets

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, PrivateAttr

from chalicelib.errors import TurnsUnavailable
from chalicelib.history import ChatHistory, Claim, Turn
from chalicelib.token_bounds import fixed_prompt_tokens
from chalicelib.validation import ChatRequest


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
    reply_to: ReplyTo | None = None
    # The claim accepting made, kept to record a failure to publish (not part of the message).
    _claim: Claim | None = PrivateAttr(None)


class TurnHandover:
    def __init__(self, sns, topic_arn: str | None, history: ChatHistory, settings):
        self._sns = sns
        self._topic_arn = topic_arn
        self._history = history
        self._settings = settings

    def accept(self, owner: str, request: ChatRequest, reply_to: ReplyTo | None = None) -> HandedOverTurn | Turn:
        """Validate `owner`'s turn as a synchronous one would be, and claim it for the worker for
        WORKER_TIMEOUT_SECONDS. Returns the message to `publish`, or the stored Turn if the
        same turn id was answered already."""
        if self._topic_arn is None:
            raise TurnsUnavailable("asynchronous turns are not configured (TURNS_TOPIC_ARN)")
        fixed_prompt_tokens(self._settings, request.query)
        turn_id = request.turn or secrets.token_hex(16)
        claimed = self._history.claim_turn(
            owner, request.sessionid, turn_id, request.query, self._settings.worker_timeout_seconds
        )
        if isinstance(claimed, Turn):
            return claimed
        self._history.admit(claimed, request.query, self._settings.turns_per_minute)
        turn = HandedOverTurn(
            owner=owner, sessionid=request.sessionid, query=request.query, turn=turn_id, attempt=claimed.attempt,
            reply_to=reply_to,
        )
        turn._claim = claimed
        return turn

    def publish(self, turn: HandedOverTurn) -> None:
        """Hand the accepted turn to the worker; if that fails, the turn fails with it."""
        try:
            self._sns.publish(TopicArn=self._topic_arn, Message=turn.model_dump_json())
        except (BotoCoreError, ClientError) as error:
            failure = TurnsUnavailable("the turn could not be handed to the worker; try again shortly")
            self._history.release(turn._claim, turn.query, failure)
            raise failure from error
