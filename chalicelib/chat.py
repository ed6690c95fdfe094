"""One conversation turn: read the history window, prompt the model, append the turn."""

import dataclasses
import time

from botocore.exceptions import BotoCoreError, ClientError
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from chalicelib import llm
from chalicelib.errors import InvalidRequest, ModelInputTooLong, ServiceError
from chalicelib.history import ChatHistory, Turn

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "{system}"), MessagesPlaceholder("history"), ("human", "{query}")]
)


@dataclasses.dataclass(frozen=True)
class Reply:
    sessionid: str
    turn: Turn
    history_turns: int

    def as_json(self) -> dict:
        return {
            "sessionid": self.sessionid,
            "answer": self.turn.answer,
            "asked_at": self.turn.asked_at,
            "answered_at": self.turn.answered_at,
            "history_turns": self.history_turns,
        }


def turn_tokens(turn: Turn) -> int:
    return llm.token_upper_bound(turn.query) + llm.token_upper_bound(turn.answer)


def fit_window(turns: list[Turn], token_budget: int) -> list[Turn]:
    """The newest turns whose messages fit in `token_budget`; the oldest go first."""
    kept = 0
    for turn in reversed(turns):
        token_budget -= turn_tokens(turn)
        if token_budget < 0:
            break
        kept += 1
    return turns[len(turns) - kept :]


def _smaller_history_budget(too_long: ModelInputTooLong, turns: list[Turn], fixed_tokens: int) -> int:
    """A history budget the endpoint should accept, after it refused `turns` as too long.

    Our count is an upper bound for Llama 2, so only an endpoint whose limits or
    tokenizer differ from the settings gets here: its own count rescales ours.
    """
    history_tokens = sum(map(turn_tokens, turns))
    ours_per_theirs = (fixed_tokens + history_tokens) / too_long.given
    return int(too_long.allowed * ours_per_theirs * 0.9) - fixed_tokens


def _query_too_long_for_endpoint() -> InvalidRequest:
    return InvalidRequest("'query' is too long for the model's context", field="query")


class ChatService:
    def __init__(self, settings, history: ChatHistory, model, clock=time.time):
        self._settings = settings
        self._history = history
        self._chain = PROMPT | model
        self._clock = clock

    def reply(self, session_id: str, query: str) -> Reply:
        asked_at = self._clock()
        fixed_tokens = self._fixed_tokens(query)
        recent = self._history.recent_turns(session_id, self._settings.history_max_turns)
        window = fit_window(recent, self._settings.prompt_token_budget - fixed_tokens)
        window, answer = self._ask_within_endpoint_limits(window, query, fixed_tokens)
        turn = self._history.append_turn(session_id, query, answer, asked_at)
        return Reply(session_id, turn, len(window))

    def _ask_within_endpoint_limits(self, window: list[Turn], query: str, fixed_tokens: int):
        """Ask; if the endpoint refuses the prompt as too long, ask once more with a smaller
        window. Returns the window used and the answer."""
        try:
            return window, self._ask(window, query)
        except ModelInputTooLong as too_long:
            if not window:
                raise _query_too_long_for_endpoint() from None
            smaller = fit_window(window, _smaller_history_budget(too_long, window, fixed_tokens))
        try:
            return smaller, self._ask(smaller, query)
        except ModelInputTooLong:
            if not smaller:
                raise _query_too_long_for_endpoint() from None
            raise

    def _fixed_tokens(self, query: str) -> int:
        """Prompt tokens besides the history; a 400 if they alone leave no room."""
        fixed = llm.prompt_token_upper_bound([SystemMessage(self._settings.system_prompt), HumanMessage(query)])
        if fixed > self._settings.prompt_token_budget:
            raise InvalidRequest(
                f"'query' is too long for the model's context: about {fixed} tokens with the system "
                f"prompt, {self._settings.prompt_token_budget} allowed",
                field="query",
            )
        return fixed

    def _ask(self, turns: list[Turn], query: str) -> str:
        history = [message for turn in turns for message in (HumanMessage(turn.query), AIMessage(turn.answer))]
        try:
            return self._chain.invoke(
                {"system": self._settings.system_prompt, "history": history, "query": query}
            ).content
        except (BotoCoreError, ClientError, ServiceError) as error:
            raise llm.model_failure(error) from error
