"""GET /sessions: the user's sessions, newest activity first, paged; on moto and dynalite."""

import json
from urllib.parse import urlencode

import pytest

from chalicelib.sessions import TITLE_CHARS, _title
from local.identity import OTHER_USER

JSON = {"content-type": "application/json"}


def ask(http, sessionid, query):
    response = http.post("/chat", headers=JSON, body=json.dumps({"sessionid": sessionid, "query": query}))
    assert response.status_code == 200, response.json_body


def listed(http, limit):
    """Every listed session, following `next` as the page does."""
    sessions, query = [], {"limit": limit}
    while True:
        response = http.get(f"/sessions?{urlencode(query)}")
        assert response.status_code == 200, response.json_body
        sessions += response.json_body["sessions"]
        if "next" not in response.json_body:
            return sessions
        query["after"] = response.json_body["next"]


def test_a_title_is_the_first_words_that_fit():
    assert _title("What is the capital of China?") == "What is the capital of China?"
    long = _title("word " * 40)
    assert len(long) <= TITLE_CHARS and long.endswith("word…")
    assert _title("x" * 100) == "x" * (TITLE_CHARS - 1) + "…"


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"], indirect=True)
class TestSessions:
    def test_sessions_are_listed_newest_activity_first_with_their_first_question(self, api, dynamodb):
        ask(api.http, "first", "What is the capital of China?")
        ask(api.http, "second", "Tell me a joke")
        ask(api.http, "first", "And of France?")  # activity moves it to the top; its title stays

        sessions = api.http.get("/sessions").json_body["sessions"]

        assert [(s["sessionid"], s["title"]) for s in sessions] == [
            ("first", "What is the capital of China?"), ("second", "Tell me a joke")]
        assert sessions[0]["last_activity"] > sessions[1]["last_activity"]

    def test_pages_follow_the_cursor_and_never_show_another_users_sessions(self, api, dynamodb):
        for number in range(5):
            ask(api.http, f"s{number}", f"question {number}")
        ask(api.http.as_user(OTHER_USER), "theirs", "their question")

        assert [s["sessionid"] for s in listed(api.http, 2)] == ["s4", "s3", "s2", "s1", "s0"]
        first_page = api.http.get("/sessions?limit=2").json_body
        # Another user's cursor goes on in their own sessions only.
        theirs = api.http.as_user(OTHER_USER).get(f"/sessions?after={first_page['next']}").json_body
        assert all(s["sessionid"] == "theirs" for s in theirs["sessions"])
        assert [s["sessionid"] for s in listed(api.http.as_user(OTHER_USER), 1)] == ["theirs"]

    def test_a_deleted_session_is_no_longer_listed(self, api, dynamodb):
        ask(api.http, "gone", "hi")
        ask(api.http, "kept", "hello")

        assert api.http.delete("/sessions/gone").json_body == {"sessionid": "gone", "deleted_turns": 1}

        assert [s["sessionid"] for s in api.http.get("/sessions").json_body["sessions"]] == ["kept"]


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=51", "limit"), ("limit=x", "limit"),
    ("after=not%20base64", "after"), ("after=bm90IGpzb24", "after"), ("after=WzEsMl0", "after"),
])
def test_bad_paging_is_a_400_naming_the_field(api, query, field):
    response = api.http.get(f"/sessions?{query}")

    assert response.status_code == 400 and response.json_body["field"] == field, response.json_body
