"""The HTTP API through Chalice's test client, with moto's DynamoDB and a fake model."""

import json
from urllib.parse import urlencode

import pytest

from local.fake_model import http_response
from tests.conftest import stored_items

JSON = {"content-type": "application/json"}


def get_chat(api, **params):
    return api.http.get("/chat?" + urlencode(params))


def post_chat(api, body, headers=JSON):
    return api.http.post("/chat", headers=headers, body=body if isinstance(body, str) else json.dumps(body))


def test_the_readme_curl_answers_with_the_model_reply(api, endpoint):
    # curl --get .../chat --data-urlencode "sessionid=session_1" --data-urlencode "query='What is ...?'"
    response = get_chat(api, sessionid="session_1", query="'What is the capital of China?'")

    assert response.status_code == 200
    assert response.json_body["sessionid"] == "session_1"
    assert response.json_body["answer"] == "Answer 1 to: 'What is the capital of China?'"
    sent = endpoint.requests[0]
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][-1] == {"role": "user", "content": "'What is the capital of China?'"}
    assert sent["max_tokens"] == 512 and sent["stop"] == ["[INST]"]


def test_post_continues_the_conversation_started_with_get(api, endpoint):
    get_chat(api, sessionid="s1", query="My name is Ada.")
    response = post_chat(api, {"sessionid": "s1", "query": "What is my name?"})

    assert response.status_code == 200
    assert response.json_body["history_turns"] == 1
    assert [m["content"] for m in endpoint.requests[1]["messages"][1:]] == [
        "My name is Ada.",
        "Answer 1 to: My name is Ada.",
        "What is my name?",
    ]


def test_a_stop_sequence_ending_the_reply_is_cut_off(api, endpoint):
    # TGI leaves the stop sequence that ended generation at the end of the text.
    endpoint.fail_next(
        http_response(200, {"choices": [{"message": {"role": "assistant", "content": "Hello! [INST]"}}]})
    )

    response = get_chat(api, sessionid="s", query="say hello")

    assert response.json_body["answer"] == "Hello!"


def test_sessions_are_isolated(api, endpoint):
    get_chat(api, sessionid="alice", query="secret: 42")
    get_chat(api, sessionid="bob", query="what is the secret?")

    assert [m["role"] for m in endpoint.requests[1]["messages"]] == ["system", "user"]
    assert api.http.get("/sessions/bob/messages").json_body["messages"][0]["content"] == "what is the secret?"


def test_messages_are_listed_oldest_first_with_role_and_time(api):
    for query in ("one", "two", "three"):
        post_chat(api, {"sessionid": "s", "query": query})

    messages = api.http.get("/sessions/s/messages").json_body["messages"]

    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "one"), ("assistant", "Answer 1 to: one"),
        ("user", "two"), ("assistant", "Answer 2 to: two"),
        ("user", "three"), ("assistant", "Answer 3 to: three"),
    ]
    times = [m["time"] for m in messages]
    assert times == sorted(times) and all(t.endswith("+00:00") for t in times)


def test_messages_come_in_pages_that_follow_each_other(api):
    for turn in range(5):
        post_chat(api, {"sessionid": "paged", "query": f"q{turn}"})
    everything = api.http.get("/sessions/paged/messages").json_body
    pages, query = [], "limit=2"

    while True:
        page = api.http.get(f"/sessions/paged/messages?{query}").json_body
        pages.append(page["messages"])
        if "next" not in page:
            break
        query = urlencode({"limit": 2, "after": page["next"]})

    assert [len(p) for p in pages][:3] == [4, 4, 2]
    assert [m for p in pages for m in p] == everything["messages"] and "next" not in everything


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=51", "limit"), ("limit=ten", "limit"),
                                          ("after=not-a-cursor", "after")])
def test_bad_page_parameters_are_a_400(api, dynamodb_calls, query, field):
    response = api.http.get(f"/sessions/s/messages?{query}")

    assert response.status_code == 400 and response.json_body["field"] == field
    assert dynamodb_calls == []


def test_delete_forgets_the_session_only(api, dynamodb):
    post_chat(api, {"sessionid": "gone", "query": "hi"})
    post_chat(api, {"sessionid": "gone", "query": "again"})
    post_chat(api, {"sessionid": "kept", "query": "hi"})

    response = api.http.delete("/sessions/gone")

    assert response.json_body == {"sessionid": "gone", "deleted_turns": 2}
    assert api.http.get("/sessions/gone/messages").status_code == 404
    assert api.http.delete("/sessions/gone").status_code == 404
    assert [item["turn"]["S"] for item in stored_items(dynamodb, "gone")] == ["~deleted"]  # only the marker
    assert len(stored_items(dynamodb, "kept")) == 1


def test_an_unknown_session_is_not_found(api, dynamodb):
    for answer in (api.http.get("/sessions/never-seen/messages"), api.http.delete("/sessions/never-seen")):
        assert answer.status_code == 404
        assert answer.json_body == {"error": "not_found", "message": "you have no session never-seen"}
    assert stored_items(dynamodb, "never-seen") == []  # a refused deletion writes nothing


LONG = "x" * 3001


@pytest.mark.parametrize(
    "send, field, fragment",
    [
        (lambda api: get_chat(api, query="hi"), "sessionid", "is required"),
        (lambda api: get_chat(api, sessionid="s"), "query", "is required"),
        (lambda api: get_chat(api, sessionid="", query="hi"), "sessionid", "1 to 128 characters"),
        (lambda api: get_chat(api, sessionid="s", query=""), "query", "must not be empty"),
        (lambda api: get_chat(api, sessionid="s", query="   "), "query", "must not be empty"),
        (lambda api: get_chat(api, sessionid="a/b", query="hi"), "sessionid", "1 to 128 characters"),
        (lambda api: get_chat(api, sessionid="s p", query="hi"), "sessionid", "1 to 128 characters"),
        (lambda api: get_chat(api, sessionid="x" * 129, query="hi"), "sessionid", "1 to 128 characters"),
        (lambda api: get_chat(api, sessionid="s", query=LONG), "query", "at most 3000 characters"),
        (lambda api: post_chat(api, {"query": "hi"}), "sessionid", "is required"),
        (lambda api: post_chat(api, {"sessionid": "s", "query": ""}), "query", "must not be empty"),
        (lambda api: post_chat(api, {"sessionid": 7, "query": "hi"}), "sessionid", "must be a string"),
        (lambda api: post_chat(api, {"sessionid": "s", "query": ["hi"]}), "query", "must be a string"),
        (lambda api: post_chat(api, {"sessionid": "s", "query": LONG}), "query", "at most 3000 characters"),
        (lambda api: post_chat(api, '{"sessionid": "s", "query": '), None, "not valid JSON"),
        (lambda api: post_chat(api, '["s", "hi"]'), None, "must be a JSON object"),
        (lambda api: post_chat(api, ""), None, "not valid JSON"),
        (lambda api: post_chat(api, "sessionid=s&query=hi", {"content-type": "application/x-www-form-urlencoded"}),
         None, "Content-Type must be application/json"),
        (lambda api: post_chat(api, '{"sessionid": "s", "query": "hi"}', {"content-type": "text/plain"}),
         None, "Content-Type must be application/json"),
        (lambda api: post_chat(api, '{"sessionid": "s", "query": "hi"}', {}), None, "Content-Type"),
        (lambda api: get_chat(api, sessionid="s", query="\u0000\u0001"), "query", "no visible characters"),
        (lambda api: post_chat(api, {"sessionid": "s", "query": "\u200b\u2060 \n"}), "query", "no visible characters"),
        (lambda api: post_chat(api, '{"sessionid": "s", "query": "\\ud800"}'), None, "not valid JSON"),
        (lambda api: get_chat(api, sessionid=".", query="hi"), "sessionid", "not '.' or '..'"),
        (lambda api: post_chat(api, {"sessionid": "..", "query": "hi"}), "sessionid", "not '.' or '..'"),
        (lambda api: get_chat(api, sessionid="s", query="hi", turn=""), "turn", "1 to 64 characters"),
        (lambda api: get_chat(api, sessionid="s", query="hi", turn="a b"), "turn", "1 to 64 characters"),
        (lambda api: post_chat(api, {"sessionid": "s", "query": "hi", "turn": "x" * 65}), "turn", "1 to 64"),
        (lambda api: post_chat(api, {"sessionid": "s", "query": "hi", "turn": 7}), "turn", "must be a string"),
        (lambda api: api.http.get("/sessions/bad%20id/messages"), "sessionid", "1 to 128 characters"),
        (lambda api: api.http.delete("/sessions/.."), "sessionid", "not '.' or '..'"),
        (lambda api: api.http.delete("/sessions/" + "x" * 129), "sessionid", "1 to 128 characters"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem_and_touches_nothing(
    api, endpoint, dynamodb_calls, send, field, fragment
):
    response = send(api)

    assert response.status_code == 400
    assert response.json_body["error"] == "invalid_request"
    assert fragment in response.json_body["message"]
    assert response.json_body.get("field") == field
    assert endpoint.requests == [] and dynamodb_calls == []


def test_query_limit_is_a_setting(api, endpoint, settings_env):
    settings_env.setenv("MAX_QUERY_CHARS", "10")

    response = get_chat(api, sessionid="s", query="eleven char")

    assert response.status_code == 400 and "at most 10 characters" in response.json_body["message"]


def test_a_query_that_cannot_fit_the_context_alone_is_a_400(api, endpoint, dynamodb_calls, settings_env):
    settings_env.setenv("MAX_QUERY_CHARS", "10000")

    response = get_chat(api, sessionid="s", query="y" * 3600)

    assert response.status_code == 400
    assert response.json_body["field"] == "query"
    assert "too long for the model's context" in response.json_body["message"]
    assert endpoint.requests == [] and dynamodb_calls == []


def test_missing_setting_is_reported_by_name(api, settings_env):
    settings_env.delenv("SAGEMAKER_ENDPOINT_NAME")

    response = get_chat(api, sessionid="s", query="hi")

    assert response.status_code == 500
    assert response.json_body["error"] == "configuration_error"
    assert "SAGEMAKER_ENDPOINT_NAME" in response.json_body["message"]
