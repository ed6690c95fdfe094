"""The chat table's stores over one DynamoDB client and clock: what a turn reads and writes."""

import dataclasses
import time
from collections.abc import Callable

from chalicelib.claims import Claims
from chalicelib.errors import NotFound
from chalicelib.history import History, Turn
from chalicelib.rate_limit import RateLimit
from chalicelib.sessions import Sessions
from chalicelib.table import iso_time


@dataclasses.dataclass(frozen=True)
class ChatStore:
    history: History
    claims: Claims
    sessions: Sessions
    rate_limit: RateLimit

    clock: Callable[[], float] = time.time

    @classmethod
    def open(cls, client, table_name: str, ttl_days: int, clock=time.time) -> "ChatStore":
        sessions = Sessions(client, table_name, ttl_days, clock)
        history = History(client, table_name, ttl_days, sessions, clock)
        claims = Claims(client, table_name, ttl_days, history, clock)
        return cls(history, claims, sessions, RateLimit(client, table_name, clock), clock)

    def rate(self, owner: str, session_id: str, turn_id: str, rating: str | None, comment: str | None) -> Turn:
        """The owner's rating of a turn's answer (and a comment); with no rating, the rating is taken
        back. NotFound for a turn the owner's session does not have (or no longer shows)."""
        turn = self.claims.stored(owner, session_id, turn_id)
        if turn is None:
            raise NotFound(f"session {session_id} has no turn {turn_id}")
        feedback = None
        if rating is not None:
            feedback = {"rating": rating, **({"comment": comment} if comment else {}), "time": iso_time(self.clock())}
        return self.history.set_feedback(owner, session_id, turn, feedback)
