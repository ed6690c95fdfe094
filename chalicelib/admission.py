"""Starting a turn: the one way, for a synchronous reply (`ChatService.reply`) and for a turn
handed over to the worker (`TurnHandover.accept`). No LangChain here: accepting stays light."""

import logging

from chalicelib.claims import TurnStart
from chalicelib.errors import NotLastTurn, RateLimited, ServiceError
from chalicelib.store import ChatStore
from chalicelib.token_bounds import fixed_prompt_tokens

logger = logging.getLogger(__name__)


def start_turn(store: ChatStore, settings, owner: str, session_id: str, query: str, turn_id: str | None,
               lease_seconds: float, replaces: str | None = None) -> TurnStart:
    """Check that the question fits the prompt budget (and that the turn it `replaces`, if any, is
    the conversation's last), claim the turn for `lease_seconds` (a retry of a turn answered
    already ends here, uncounted), count it against the owner's turns this minute, and list its
    session. A turn that may not replace what it names is refused before anything is written.

    A turn over the limit leaves nothing behind: its claim is withdrawn. A failure to count or to
    list is recorded on the claim, so the turn's status tells it and a retry may start at once,
    not after the lease. Listing before the model is asked means a stored turn is always listed (a
    failed turn may leave its session listed without it, which is harmless)."""
    fixed_prompt_tokens(settings, query)
    start = store.claims.claim(owner, session_id, turn_id, query, lease_seconds,
                               _replaced_key(store, owner, session_id, turn_id, replaces))
    if start.answered is not None:
        return start
    try:
        store.rate_limit.count_turn(owner, settings.turns_per_minute)
        store.sessions.record_activity(owner, session_id, query)
    except RateLimited:
        _withdraw(store, start)
        raise
    except ServiceError as failure:
        store.claims.release(start.claim, query, failure)
        raise
    return start


def _replaced_key(store: ChatStore, owner: str, session_id: str, turn_id: str | None,
                  replaces: str | None) -> str | None:
    """Where a turn that `replaces` another is stored: in the item of the turn it replaces, which
    must be the conversation's last (or is already this very turn: a retry)."""
    if replaces is None:
        return None
    last = store.history.last_turn(owner, session_id)
    if last is None or last.turn_id not in (replaces, turn_id):
        raise NotLastTurn(f"'replaces' must name the conversation's last turn, and {replaces} is not; "
                          "nothing was changed")
    return last.key


def _withdraw(store: ChatStore, start: TurnStart) -> None:
    try:
        store.claims.withdraw(start.claim)
    except ServiceError:
        # The client hears of the refusal all the same; a retry waits out the lease.
        logger.exception("could not withdraw the refused turn %s", start.claim.turn_id)
