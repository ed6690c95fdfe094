"""One conversation turn: read the history window, prompt the model, append the turn."""

import dataclasses
import time

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from chalicelib import llm
from chalicelib.errors import InvalidRequest, ModelInputTooLong
from chalicelib.history import ChatHistory, Turn

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "{system}"), MessagesPlaceholder("history"), ("human", "{query}")]
)


@dataclasses.dataclass(frozen=True)
class Reply:
    sessionid: str
    answer: str
    turn: Turn
    history_turns: int

    def as_json(self) -> dict:
        return {
            "sessionid": self.sessionid,
            "answer": self.answer,
            "asked_at": self.turn.asked_at,
            "answered_at": self.turn.answered_at,
            "history_turns": self.history_turns,
        }


def fit_window(turns: list[Turn], token_budget: int) -> list[Turn]:
    """The newest turns whose messages fit in `token_budget`; the oldest go first."""
    kept = 0
    for turn in reversed(turns):
        token_budget -= llm.token_upper_bound(turn.query) + llm.token_upper_bound(turn.answer)
        if token_budget < 0:
            break
        kept += 1
    return turns[len(turns) - kept :]


class ChatService:
    def __init__(self, settings, history: ChatHistory, model, clock=time.time):
        self._settings = settings
        self._history = history
        self._chain = PROMPT | model
        self._clock = clock

    def reply(self, session_id: str, query: str) -> Reply:
        asked_at = self._clock()
        budget = self._history_token_budget(query)
        turns = fit_window(self._history.recent_turns(session_id, self._settings.history_max_turns), budget)
        try:
            answer = self._ask(turns, query)
        except ModelInputTooLong:
            if not turns:
                raise InvalidRequest("'query' is too long for the model's context", field="query") from None
            # Our count is an upper bound, so this should not happen; if the endpoint
            # still disagrees, keep the newer half of the window and try once more.
            turns = turns[(len(turns) + 1) // 2 :]
            answer = self._ask(turns, query)
        turn = self._history.append_turn(session_id, query, answer, asked_at)
        return Reply(session_id, answer, turn, len(turns))

    def _history_token_budget(self, query: str) -> int:
        """Tokens left for history once the system prompt and query are in; 400 if none."""
        fixed = llm.prompt_token_upper_bound(
            [SystemMessage(self._settings.system_prompt), HumanMessage(query)]
        )
        budget = self._settings.prompt_token_budget - fixed
        if budget < 0:
            raise InvalidRequest(
                f"'query' is too long for the model's context: about {fixed} tokens with the system "
                f"prompt, {self._settings.prompt_token_budget} allowed",
                field="query",
            )
        return budget

    def _ask(self, turns: list[Turn], query: str) -> str:
        history = [message for turn in turns for message in (HumanMessage(turn.query), AIMessage(turn.answer))]
        try:
            return self._chain.invoke(
                {"system": self._settings.system_prompt, "history": history, "query": query}
            ).content
        except Exception as error:
            raise llm.model_failure(error) from error
