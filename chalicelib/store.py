"""The chat table's stores over one DynamoDB client and clock: what a turn reads and writes."""

import dataclasses
import time

from chalicelib.claims import Claims
from chalicelib.history import History
from chalicelib.rate_limit import RateLimit
from chalicelib.sessions import Sessions


@dataclasses.dataclass(frozen=True)
class ChatStore:
    history: History
    claims: Claims
    sessions: Sessions
    rate_limit: RateLimit

    @classmethod
    def open(cls, client, table_name: str, ttl_days: int, clock=time.time) -> "ChatStore":
        sessions = Sessions(client, table_name, ttl_days, clock)
        history = History(client, table_name, ttl_days, sessions, clock)
        claims = Claims(client, table_name, ttl_days, history, clock)
        return cls(history, claims, sessions, RateLimit(client, table_name, clock))
