"""The history window fills the prompt budget with the endpoint's real token counts.

`test_a_long_english_conversation_fills_the_budget` counts with Llama 2's own tokenizer
(llama-tokenizer-js, in node_modules) through the fake endpoint, as a real TGI endpoint would.
"""

import pytest

from bench.memory_bench import LIMITS, converse
from chalicelib.chat import counted_tokens, fit_window, system_tokens, turn_tokens
from chalicelib.store import ChatStore
from chalicelib.token_bounds import LLAMA_2
from local.identity import USER
from tests.conftest import stored_items


def test_a_long_english_conversation_fills_the_budget_and_is_never_refused(settings_env):
    measured = tuple(range(15, 41))

    with_counts = converse(40, keep_counts=True, measured=measured)
    bound_only = converse(15, keep_counts=False, measured=(15,))

    shares = [with_counts[turn]["prompt_tokens"] / with_counts[turn]["budget"] for turn in measured]
    assert min(shares) >= 0.85 and max(shares) <= 1
    assert with_counts["too_long"] == 0
    assert with_counts[15]["history_turns"] >= 3 * bound_only[15]["history_turns"]
    assert int(LIMITS["MAX_INPUT_TOKENS"]) == with_counts[15]["budget"]


def test_turns_keep_the_endpoints_counts_and_the_listing_shows_them(api, dynamodb, endpoint):
    api.http.get("/chat?sessionid=s&query=hello")
    second = api.http.get("/chat?sessionid=s&query=and+again").json_body

    (first_item, second_item) = sorted(stored_items(dynamodb, "s"), key=lambda item: item["turn"]["S"])
    assert int(first_item["prompt_tokens"]["N"]) == endpoint.prompt_tokens[0]
    # The fake counts one token a byte, and the end of sequence.
    assert int(first_item["answer_tokens"]["N"]) == len("Answer 1 to: hello") + 1 + LLAMA_2.answer_template_tokens
    messages = api.http.get("/sessions/s/messages").json_body["messages"]
    assert [m["tokens"] for m in messages] == [
        int(first_item["query_tokens"]["N"]), int(first_item["answer_tokens"]["N"]),
        int(second_item["query_tokens"]["N"]), int(second_item["answer_tokens"]["N"]),
    ]
    assert second["history_turns"] == 1


def test_turns_stored_without_counts_use_the_bound_and_list_without_tokens(api, dynamodb, endpoint, settings_env):
    endpoint.reports_usage = False
    api.http.get("/chat?sessionid=s&query=hello")

    (item,) = stored_items(dynamodb, "s")
    assert not {"prompt_tokens", "query_tokens", "answer_tokens"} & set(item)
    assert all("tokens" not in m for m in api.http.get("/sessions/s/messages").json_body["messages"])
    turn = ChatStore.open(dynamodb, "chat-test", 30).history.recent_turns(USER, "s", 1)[0]
    assert turn_tokens(turn, LLAMA_2) == LLAMA_2.token_upper_bound(turn.query) + LLAMA_2.token_upper_bound(turn.answer)


def test_counted_tokens_take_the_answer_from_usage_and_a_share_of_the_prompt_for_the_question():
    usage = {"input_tokens": 100, "output_tokens": 40, "total_tokens": 140}

    counts = counted_tokens(LLAMA_2, "system", [], "a question of some length", usage)

    assert counts["prompt_tokens"] == 100 and counts["answer_tokens"] == 40 + LLAMA_2.answer_template_tokens
    assert 0 < counts["query_tokens"] <= LLAMA_2.token_upper_bound("a question of some length")
    assert counted_tokens(LLAMA_2, "system", [], "q", None) == {}


def _turn(query_tokens=10, answer_tokens=20, prompt_tokens=None, history_turns=0):
    from chalicelib.history import Turn

    return Turn("q", "a", prompt_tokens=prompt_tokens, query_tokens=query_tokens, answer_tokens=answer_tokens,
                history_turns=history_turns)


def test_the_system_prompts_real_count_is_learnt_from_the_previous_prompt():
    earlier = [_turn(), _turn()]
    previous = _turn(query_tokens=12, prompt_tokens=40 + 2 * 30 + 12, history_turns=2)

    assert system_tokens([*earlier, previous], LLAMA_2) == 40
    assert system_tokens([earlier[1], previous], LLAMA_2) is None  # its window is not all here
    assert system_tokens([_turn(query_tokens=None), _turn(), previous], LLAMA_2) is None  # a count unknown
    assert system_tokens([], LLAMA_2) is None


@pytest.mark.parametrize("budget, kept", [(90, 3), (89, 2), (30, 1), (29, 0)])
def test_fit_window_counts_known_turns_by_their_counts(budget, kept):
    turns = [_turn(), _turn(), _turn()]

    assert fit_window(turns, budget, LLAMA_2) == turns[len(turns) - kept :]
