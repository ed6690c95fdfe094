"""One conversation turn: start it, read the history window, prompt the model, append the turn."""

import logging
import math
import time

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from chalicelib import deadline, llm, observability, token_bounds
from chalicelib.admission import start_turn
from chalicelib.claims import Claim
from chalicelib.clients import QUICK_CALL_ATTEMPT_SECONDS
from chalicelib.errors import InvalidRequest, ModelInputTooLong, ModelTimeout, NotLastTurn, ServiceError
from chalicelib.history import Turn
from chalicelib.store import ChatStore
from chalicelib.token_bounds import ModelFamily

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "{system}"), MessagesPlaceholder("history"), ("human", "{query}")]
)
# What the model's read timeout leaves of a request's deadline: the turn's write,
# and the consistent read that settles a write whose outcome is unknown.
HISTORY_WRITE_RESERVE_SECONDS = 2 * QUICK_CALL_ATTEMPT_SECONDS + 0.5
# The model gets at least this long, or is not asked at all.
MIN_MODEL_SECONDS = 1

logger = logging.getLogger(__name__)


# A question's share of its prompt's real count is estimated from its share of the prompt's
# upper bound: denser text than the prompt's average (digits, code) would be undercounted,
# hence this margin. The endpoint's "too long" retry remains the backstop.
QUERY_ESTIMATE_MARGIN = 1.15


def turn_tokens(turn: Turn, family: ModelFamily) -> int:
    """What the turn takes in a prompt's history: the endpoint's counts where they are known,
    the safe upper bound where not (turns stored before counts were kept)."""
    query = turn.query_tokens if turn.query_tokens is not None else family.token_upper_bound(turn.query)
    answer = turn.answer_tokens if turn.answer_tokens is not None else family.token_upper_bound(turn.answer)
    return query + answer


def counted_tokens(family: ModelFamily, system_prompt: str, window: list[Turn], query: str,
                   usage: dict | None) -> dict:
    """The new turn's token counts from the endpoint's usage (`input_tokens`: the whole prompt,
    `output_tokens`: the answer), for `history.append_turn`; {} without usage.

    The answer's is what was generated, plus its template. The question's is its share of the
    prompt's real count, in proportion to its share of the prompt's upper bound (the endpoint
    counts only whole prompts), with a margin, and never above its own upper bound.
    """
    if not usage:
        return {}
    prompt_bound = family.prompt_token_upper_bound(
        [system_prompt, *(text for turn in window for text in (turn.query, turn.answer)), query]
    )
    share = min(1.0, usage["input_tokens"] / prompt_bound)
    query_bound = family.token_upper_bound(query)
    return {
        "prompt_tokens": usage["input_tokens"],
        "query_tokens": min(query_bound, math.ceil(query_bound * share * QUERY_ESTIMATE_MARGIN)),
        "answer_tokens": usage["output_tokens"] + family.answer_template_tokens,
    }


def system_tokens(recent: list[Turn], family: ModelFamily) -> int | None:
    """The real tokens of the prompt's fixed part (the system prompt, its template and BOS),
    learnt from the previous turn's prompt: what the endpoint counted, less its history and
    question as counted. None when any of those counts is unknown. `recent` holds the
    previous turn last, after the turns of its window."""
    if not recent:
        return None
    previous = recent[-1]
    earlier = recent[len(recent) - 1 - previous.history_turns : -1] if previous.history_turns < len(recent) else None
    if earlier is None or previous.prompt_tokens is None or previous.query_tokens is None:
        return None
    if any(turn.query_tokens is None or turn.answer_tokens is None for turn in earlier):
        return None
    # Counts err high (margins), so this errs low: never below nothing.
    return max(0, previous.prompt_tokens - previous.query_tokens - sum(turn_tokens(t, family) for t in earlier))


def fit_window(turns: list[Turn], token_budget: int, family: ModelFamily) -> list[Turn]:
    """The newest turns whose messages fit in `token_budget`; the oldest go first."""
    kept = 0
    for turn in reversed(turns):
        token_budget -= turn_tokens(turn, family)
        if token_budget < 0:
            break
        kept += 1
    return turns[len(turns) - kept :]


def _smaller_history_budget(too_long: ModelInputTooLong, turns: list[Turn], fixed_tokens: int,
                            family: ModelFamily) -> int:
    """A history budget the endpoint should accept, after it refused `turns` as too long.

    Our count is an upper bound for the model's family, so only an endpoint whose limits or
    tokenizer differ from the settings gets here: its own count rescales ours. (vLLM counts a
    refused prompt only to one token past its room, "at least": the window then shrinks by the
    margin alone.)
    """
    history_tokens = sum(turn_tokens(turn, family) for turn in turns)
    ours_per_theirs = (fixed_tokens + history_tokens) / too_long.given
    return int(too_long.allowed * ours_per_theirs * 0.9) - fixed_tokens


def _query_too_long_for_endpoint() -> InvalidRequest:
    return InvalidRequest("'query' is too long for the model's context", field="query")


class ChatService:
    def __init__(self, settings, store: ChatStore, model_for):
        """`model_for(read_timeout_seconds)` gives the chat model with that read timeout."""
        self._settings = settings
        self._family = settings.model.family
        self._store = store
        self._model_for = model_for
        # The system prompt's part of `token_bounds.fixed_prompt_tokens` (with the prompt's start).
        self._system_bound = self._family.prompt_token_upper_bound([settings.system_prompt])

    def reply(self, owner: str, session_id: str, query: str, turn_id: str | None = None,
              replaces: str | None = None) -> Turn:
        """`owner`'s answered turn: a new one (in place of the last turn, which it `replaces`), or
        the one already stored under `turn_id`."""
        start = start_turn(self._store, self._settings, owner, session_id, query, turn_id, self._lease_seconds(),
                           replaces)
        if start.answered is not None:
            return start.answered
        return self._answer(start.claim, query, replaces, on_text=None)

    def continue_turn(self, owner: str, session_id: str, query: str, turn_id: str, attempt: str,
                      replaces: str | None = None, on_text=None) -> Turn | None:
        """The worker's side of a turn accepted elsewhere (`start_turn` by the WebSocket or REST
        handler): the same steps as `reply`, under the attempt started then. None when nothing is
        left to do: the turn is stored (a redelivered message), or its attempt is over (it failed,
        or a client's retry took the turn over). With `on_text`, the answer streams: each piece of
        text is passed to it as it comes."""
        claim = self._store.claims.resume(owner, session_id, turn_id, query, attempt, self._lease_seconds())
        if claim is None:
            return None
        return self._answer(claim, query, replaces, on_text)

    def _answer(self, claim: Claim, query: str, replaces: str | None, on_text) -> Turn:
        """Read the window, prompt, ask the model, append the turn (in place of the last one, which
        it `replaces`: the prompt holds what came before it). A failure is recorded on the claim, so
        that the turn's status tells it and a retry may start at once."""
        observability.bind(turn=claim.turn_id)
        try:
            fixed_tokens = token_bounds.fixed_prompt_tokens(self._settings, query)
            # One turn more than a window holds: the previous turn's window, for `system_tokens`.
            recent = self._store.history.recent_turns(
                claim.owner, claim.session_id, self._settings.history_max_turns + 1 + bool(replaces))
            replacing = None
            if replaces:
                if not recent or recent[-1].turn_id != replaces:
                    raise NotLastTurn(f"turn {replaces} is no longer the conversation's last turn; nothing was changed")
                replacing, recent = recent[-1], recent[:-1]
            system = system_tokens(recent, self._family)
            if system is not None:  # the system prompt as the endpoint counts it, not its bound
                fixed_tokens = min(fixed_tokens, fixed_tokens - self._system_bound + system)
            window = fit_window(
                recent[max(0, len(recent) - self._settings.history_max_turns) :],
                self._settings.prompt_token_budget - fixed_tokens,
                self._family,
            )
            window, (answer, usage, timing) = self._ask_within_endpoint_limits(window, query, fixed_tokens, on_text)
            counts = counted_tokens(self._family, self._settings.system_prompt, window, query, usage)
            turn = self._store.history.append_turn(claim, query, answer, len(window), {**counts, **timing},
                                                   replacing)
            observability.turn_metrics(usage, **timing)
            return turn
        except ServiceError as failure:
            self._release(claim, query, failure)
            raise

    def _lease_seconds(self) -> float:
        """How long a claimed turn may take: until the request's deadline."""
        current = deadline.current()
        return current.remaining() if current else self._settings.request_timeout_seconds

    def _release(self, claim: Claim, query: str, failure: ServiceError) -> None:
        try:
            self._store.claims.release(claim, query, failure)
        except ServiceError:
            # The client hears of the turn's own failure; a retry waits out the lease.
            logger.exception("could not record the failure of turn %s", claim.turn_id)

    def _ask_within_endpoint_limits(self, window: list[Turn], query: str, fixed_tokens: int, on_text):
        """Ask; if the endpoint refuses the prompt as too long (before any text was
        relayed), ask once more with a smaller window. Returns the window used and the answer."""
        try:
            return window, self._ask(window, query, on_text)
        except ModelInputTooLong as too_long:
            if not window or too_long.after_text:
                raise _query_too_long_for_endpoint() from None
            smaller = fit_window(window, _smaller_history_budget(too_long, window, fixed_tokens, self._family),
                                 self._family)
        try:
            return smaller, self._ask(smaller, query, on_text)
        except ModelInputTooLong:
            if not smaller:
                raise _query_too_long_for_endpoint() from None
            raise

    def _ask(self, turns: list[Turn], query: str, on_text) -> tuple[str, dict | None, dict]:
        """The answer, the endpoint's usage (LangChain's usage metadata) if it gave one, and the
        model's timing in ms: `first_token_ms`, when its first text came (a whole answer's comes
        with its end), and `model_ms`, its end (both include waiting for a model waking up)."""
        history = [message for turn in turns for message in (HumanMessage(turn.query), AIMessage(turn.answer))]
        chain = PROMPT | self._model_for(self._model_read_timeout())
        prompt = {"system": self._settings.system_prompt, "history": history, "query": query}
        started = time.perf_counter()

        def ms_since_start(moment: float) -> int:
            return round((moment - started) * 1000)

        if on_text is None:
            # A failed call is already the ServiceError it amounts to (llm.ChatEndpoint).
            reply = chain.invoke(prompt)
            model_ms = ms_since_start(time.perf_counter())
            return reply.content, reply.usage_metadata, {"first_token_ms": model_ms, "model_ms": model_ms}
        answer = llm.AnswerStream(chain.stream(prompt), self._settings.stop_sequences, self._settings.max_new_tokens,
                                  self._family.longest_token_bytes)
        try:
            for text in answer:
                on_text(text)
        except ModelInputTooLong as too_long:
            too_long.after_text = answer.relayed
            raise
        model_ms = ms_since_start(time.perf_counter())
        return answer.text, answer.usage, {"first_token_ms": ms_since_start(answer.first_text_at), "model_ms": model_ms}

    def _model_read_timeout(self) -> int:
        """MODEL_TIMEOUT_SECONDS, or what the request's deadline leaves after the history
        write, in whole seconds (so that clients are reused)."""
        seconds = self._settings.model_timeout_seconds
        if current := deadline.current():
            seconds = min(seconds, current.remaining() - HISTORY_WRITE_RESERVE_SECONDS)
        if seconds < MIN_MODEL_SECONDS:
            raise ModelTimeout("no time was left to ask the model; try again")
        return int(seconds)
