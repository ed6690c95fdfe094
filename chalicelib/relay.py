"""One turn's frames on its WebSocket connection: `accepted` (and `queued` when every worker is
busy) from the handler; then from the worker `delta` frames as the text comes, and exactly one
`done` or `error` (the protocol is in docs/api.md); before any text, `status` frames while the
model wakes up.

Frames go out at most every FRAME_INTERVAL_SECONDS (the first at once), each far below API
Gateway's 32 KB frame limit. A connection that has gone stops the sending, not the turn: the
handler still hands it over, the worker still stores it, and it shows when the conversation is
opened again.
"""

import json
import logging
import time

from botocore.exceptions import BotoCoreError, ClientError
from chalice import WebsocketDisconnectedError

from chalicelib.errors import ServiceError, error_body

FRAME_INTERVAL_SECONDS = 0.05
# json.dumps escapes a character to at most 12 bytes (a surrogate pair): 2000 make 24 KB.
MAX_DELTA_CHARACTERS = 2000

logger = logging.getLogger(__name__)


class Relay:
    def __init__(self, send, turn_id: str, clock=time.monotonic):
        """`send(text)` sends one WebSocket message (Chalice's `websocket_api.send`, bound
        to the connection)."""
        self._send_text = send
        self._turn = turn_id
        self._clock = clock
        self._pending = ""
        self._last_frame = float("-inf")
        self.gone = False

    def accepted(self, sessionid: str) -> None:
        self._send({"type": "accepted", "sessionid": sessionid, "turn": self._turn})

    def queued(self, ahead: int) -> None:
        """Every worker is busy: the turn waits in the queue behind about `ahead` others."""
        self._send({"type": "status", "status": "queued", "turn": self._turn, "ahead": ahead})

    def text(self, delta: str) -> None:
        self._pending += delta
        if self._clock() - self._last_frame >= FRAME_INTERVAL_SECONDS:
            self._flush()

    def waking(self, retry_after: int) -> None:
        """The model is starting; the turn waits for it (about `retry_after` seconds)."""
        self._send({"type": "status", "status": "model_waking", "turn": self._turn, "retry_after": retry_after})

    def done(self, reply: dict) -> None:
        self._flush()
        self._send({"type": "done", **reply})

    def error(self, failure: ServiceError) -> None:
        """The turn failed: text relayed so far is no answer, so nothing more of it is sent."""
        self._pending = ""
        self._send({"type": "error", "turn": self._turn, **error_body(failure)})

    def _flush(self) -> None:
        pending, self._pending = self._pending, ""
        for start in range(0, len(pending), MAX_DELTA_CHARACTERS):
            self._send({"type": "delta", "turn": self._turn, "text": pending[start : start + MAX_DELTA_CHARACTERS]})
        self._last_frame = self._clock()

    def _send(self, message: dict) -> None:
        if self.gone:
            return
        try:
            self._send_text(json.dumps(message))
        except WebsocketDisconnectedError:
            self.gone = True
            logger.info("turn %s: the client disconnected; the answer is still stored", self._turn)
        except (BotoCoreError, ClientError):
            self.gone = True
            logger.warning("turn %s: the answer cannot be sent; it is still stored", self._turn, exc_info=True)
