"""The prompt always fits the model, whatever the length of the conversation."""

from urllib.parse import urlencode

import pytest

from chalicelib.chat import fit_window
from chalicelib.history import Turn
from chalicelib.token_bounds import LLAMA_2, LLAMA_3_1, MISTRAL_V3


def test_token_upper_bound_counts_utf8_bytes_plus_template():
    for family in (LLAMA_2, LLAMA_3_1, MISTRAL_V3):
        assert family.token_upper_bound("abc") == 3 + family.template_tokens_per_message
        assert family.token_upper_bound("北京") == 6 + family.template_tokens_per_message


def test_fit_window_drops_the_oldest_turns_first():
    turns = [Turn(f"q{i}", "a" * 10) for i in range(5)]
    per_turn = LLAMA_2.token_upper_bound("q0") + LLAMA_2.token_upper_bound("a" * 10)

    assert fit_window(turns, 2 * per_turn, LLAMA_2) == turns[3:]
    assert fit_window(turns, 2 * per_turn - 1, LLAMA_2) == turns[4:]
    assert fit_window(turns, 0, LLAMA_2) == []
    assert fit_window(turns, 100 * per_turn, LLAMA_2) == turns


# dynalite: its Query reads a key range as DynamoDB does, where moto's (which copies the whole
# partition at each call) grew slow enough with 300 turns to outrun a turn's deadline on a busy machine.
@pytest.mark.parametrize("dynamodb", ["dynalite"], indirect=True)
def test_300_turns_never_exceed_the_endpoint_limits(api, endpoint, dynamodb_calls, settings_env):
    settings_env.setenv("HISTORY_MAX_TURNS", "1000")  # let the token budget be what limits the window
    history_sizes = []

    for turn in range(300):
        query = f"question {turn}: " + "lorem ipsum dolor sit amet " * 8
        dynamodb_calls.clear()
        response = api.http.get("/chat?" + urlencode({"sessionid": "long", "query": query}))
        assert response.status_code == 200, response.json_body
        assert dynamodb_calls == ["UpdateItem", "UpdateItem", "Query", "PutItem"]  # count, list, read, write
        history_sizes.append(response.json_body["history_turns"])
        sent = endpoint.requests[-1]["messages"]
        assert sent[-1]["content"] == query
        if turn:
            assert sent[-3]["content"].startswith(f"question {turn - 1}:")  # the newest turn stays

    assert len(endpoint.requests) == 300  # no request was refused and retried
    assert max(endpoint.prompt_tokens) <= endpoint.max_input_tokens
    assert max(endpoint.prompt_tokens) + 512 <= endpoint.max_total_tokens
    assert history_sizes[:3] == [0, 1, 2]
    plateau = history_sizes[-1]
    assert 0 < plateau < 100 and history_sizes[-50:] == [plateau] * 50


def test_an_endpoint_that_still_says_too_long_gets_one_retry_with_a_smaller_window(api, endpoint):
    for turn in range(6):
        api.http.get(f"/chat?sessionid=s&query=turn+{turn}+" + "word+" * 40)
    endpoint.max_input_tokens = 1000  # stricter than the settings the app budgets with

    response = api.http.get("/chat?sessionid=s&query=last")

    assert response.status_code == 200
    too_long, retried = endpoint.requests[-2:]
    assert len(retried["messages"]) < len(too_long["messages"])
    assert retried["messages"][-1]["content"] == "last"
    assert response.json_body["history_turns"] == (len(retried["messages"]) - 2) // 2


def test_too_long_for_the_endpoint_even_alone_is_a_400_and_stores_nothing(api, endpoint):
    endpoint.max_input_tokens = 50

    response = api.http.get("/chat?sessionid=s&query=" + "z" * 100)

    assert response.status_code == 400 and response.json_body["field"] == "query"
    assert api.http.get("/sessions/s/messages").json_body["messages"] == []



def test_a_query_the_endpoint_refuses_even_after_the_retry_is_a_400(api, endpoint):
    for turn in range(3):
        api.http.get(f"/chat?sessionid=s&query=turn+{turn}")
    endpoint.max_input_tokens = 60

    response = api.http.get("/chat?sessionid=s&query=" + "z" * 100)

    assert response.status_code == 400 and response.json_body["field"] == "query"
    assert len(api.http.get("/sessions/s/messages").json_body["messages"]) == 6
