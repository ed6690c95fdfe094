"""The WebSocket chat protocol (docs/api.md): send a turn, read its messages until it ends,
each message kept with the time it was read, for timings."""

import json
import time
from dataclasses import dataclass, field

# The messages that end a turn on the WebSocket.
TURN_ENDS = ("done", "error")


@dataclass
class Transcript:
    """What one connection received for a turn: each message with the seconds since it was sent."""

    sent_at: float
    received: list[tuple[float, dict]] = field(default_factory=list)

    @property
    def messages(self) -> list[dict]:
        return [message for _, message in self.received]

    @property
    def types(self) -> list[str]:
        return [message["type"] for message in self.messages]

    @property
    def last(self) -> dict:
        return self.messages[-1]

    @property
    def streamed_text(self) -> str:
        """The deltas' texts joined: the answer, once `done` came."""
        return "".join(message["text"] for message in self.messages if message["type"] == "delta")

    def seconds_to(self, message_type: str) -> float:
        """From sending the turn to the first message of this type."""
        return next(seconds for seconds, message in self.received if message["type"] == message_type)


def send_chat(connection, sessionid: str, query: str, turn: str | None = None) -> Transcript:
    """Send one chat turn on an open connection (websockets' sync client)."""
    message = {"action": "chat", "sessionid": sessionid, "query": query, **({"turn": turn} if turn else {})}
    sent_at = time.perf_counter()
    connection.send(json.dumps(message))
    return Transcript(sent_at)


def receive(connection, transcript: Transcript, until=TURN_ENDS, timeout: float = 60) -> Transcript:
    """Read messages into `transcript` up to and including the first whose type is in `until`;
    TimeoutError if none comes within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(connection.recv(timeout=max(0.0, deadline - time.monotonic())))
        transcript.received.append((time.perf_counter() - transcript.sent_at, message))
        if message["type"] in until:
            return transcript
