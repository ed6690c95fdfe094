"""The worker's side of a handed-over turn: the same steps as a synchronous turn, with the
answer streamed to the client's WebSocket connection, if it has one.

How failures end (SQS retries a message whose handler raises, then moves it to the DLQ):
- a ServiceError (the model refused or failed, the history is unavailable...) is the turn's
  answer: the client gets `error`, the claim records it for `GET /sessions/S/turns/T`, and
  the message is done with; the client may retry with the same turn id;
- anything else is a fault of the worker: the client gets `error` and the message is retried;
  after the retries it lands in the DLQ.
A redelivered message whose turn is already stored, or whose attempt is over, sends nothing.

A model that is waking up (scaled to zero) is waited for within the worker's deadline, with a
`status` frame before each wait; when the deadline leaves no time, the turn fails `model_waking`.
"""

import logging

from chalicelib import observability, waking
from chalicelib.errors import InternalError, ServiceError
from chalicelib.handover import HandedOverTurn
from chalicelib.relay import Relay

logger = logging.getLogger(__name__)


def answer(message: str, chat, websocket_api) -> None:
    """Answer the turn in one message of the turns queue, with `chat` (the ChatService)."""
    turn = HandedOverTurn.model_validate_json(message)
    observability.bind(turn.sessionid, turn.turn)
    relay = None
    if turn.reply_to is not None:
        websocket_api.configure(turn.reply_to.domain_name, turn.reply_to.stage)
        relay = Relay(lambda text: websocket_api.send(turn.reply_to.connection_id, text), turn.turn)

    def on_wait(retry_after: int) -> None:
        logger.info("turn %s: the model is waking up; waiting", turn.turn)
        if relay:
            relay.waking(retry_after)

    try:
        with waking.waiting(on_wait):
            answered = chat.continue_turn(
                turn.owner, turn.sessionid, turn.query, turn.turn, turn.attempt, turn.replaces,
                on_text=relay.text if relay else None,
            )
    except ServiceError as failure:
        logger.info("turn %s failed: %s", turn.turn, failure.code)
        observability.error_metric(failure.code)
        if relay:
            relay.error(failure)
        return
    except Exception:
        fault = InternalError("the worker failed; the turn is retried")
        observability.error_metric(fault.code)
        if relay:
            relay.error(fault)
        raise
    if answered is None:
        logger.info("turn %s: nothing left to do (stored already, or its attempt is over)", turn.turn)
    elif relay:
        relay.done(answered.as_reply(turn.sessionid))
