"""GET /sessions: the user's sessions, newest activity first, paged, searched by title; renaming
one (PATCH /sessions/{id}); on moto and dynalite."""

import json
from urllib.parse import urlencode

import pytest

from chalicelib.sessions import TITLE_CHARS, _title
from local.identity import OTHER_USER

JSON = {"content-type": "application/json"}


def ask(http, sessionid, query):
    response = http.post("/chat", headers=JSON, body=json.dumps({"sessionid": sessionid, "query": query}))
    assert response.status_code == 200, response.json_body


def listed(http, limit, **search):
    """Every listed session, following `next` as the page does."""
    sessions, query = [], {"limit": limit, **search}
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


    # Rename

    def test_a_renamed_session_is_listed_by_its_new_title_which_later_turns_keep(self, api, dynamodb):
        ask(api.http, "trip", "What should I see in Rome?")

        renamed = rename(api.http, "trip", {"title": "  Holiday in Rome  "})
        ask(api.http, "trip", "And where should I eat?")

        assert renamed.status_code == 200
        assert renamed.json_body == {**renamed.json_body, "sessionid": "trip", "title": "Holiday in Rome"}
        assert [s["title"] for s in api.http.get("/sessions").json_body["sessions"]] == ["Holiday in Rome"]

    @pytest.mark.parametrize("body", [
        {"title": ""}, {"title": "   "}, {"title": "x" * 121}, {"title": "two\nlines"}, {"title": 5}, {},
        {"title": "ok", "other": 1}])
    def test_a_bad_title_is_a_400_naming_it_and_changes_nothing(self, api, dynamodb, body):
        ask(api.http, "trip", "What should I see in Rome?")

        refused = rename(api.http, "trip", body)

        assert refused.status_code == 400 and refused.json_body["field"] in ("title", "other"), refused.json_body
        assert [s["title"] for s in api.http.get("/sessions").json_body["sessions"]] == [
            "What should I see in Rome?"]

    def test_another_users_unknown_or_deleted_session_cannot_be_renamed(self, api, dynamodb):
        ask(api.http, "trip", "What should I see in Rome?")
        ask(api.http, "gone", "hi")
        api.http.delete("/sessions/gone")

        for http, sessionid in ((api.http.as_user(OTHER_USER), "trip"), (api.http, "never"), (api.http, "gone")):
            refused = rename(http, sessionid, {"title": "Mine now"})
            assert (refused.status_code, refused.json_body["error"]) == (404, "not_found"), sessionid
        assert api.http.as_user(OTHER_USER).get("/sessions").json_body == {"sessions": []}
        assert [s["title"] for s in api.http.get("/sessions").json_body["sessions"]] == [
            "What should I see in Rome?"]

    # Search

    def test_a_search_lists_the_sessions_whose_titles_hold_the_words_in_any_case(self, api, dynamodb):
        for sessionid, question in (("a", "Trip to ROME in May"), ("b", "Pasta recipes"), ("c", "rome: where to eat"),
                                    ("d", "A trip to Paris"), ("e", "Die Straße in Rom")):
            ask(api.http, sessionid, question)
        ask(api.http.as_user(OTHER_USER), "theirs", "Rome too")

        def found(q, limit=20):
            return [s["sessionid"] for s in listed(api.http, limit, q=q)]

        assert found("rome") == ["c", "a"]
        assert found("rome") == found("ROME") == found("rome", limit=1)  # paged like the plain listing
        assert found("TRIP rome") == ["a"] and found("strasse") == ["e"]
        assert found("lisbon") == []

    def test_a_search_that_reads_more_than_one_query_goes_on_where_it_stopped(self, api, dynamodb, monkeypatch):
        from chalicelib import sessions

        monkeypatch.setattr(sessions, "SEARCH_QUERY_LIMIT", 2)  # every Query reads two summaries
        for number in range(7):
            ask(api.http, f"s{number}", f"{'match' if number % 3 == 0 else 'other'} {number}")

        assert [s["sessionid"] for s in listed(api.http, 2, q="match")] == ["s6", "s3", "s0"]


def rename(http, sessionid, body):
    return http.request("PATCH", f"/sessions/{sessionid}", headers=JSON, body=json.dumps(body).encode())


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=51", "limit"), ("limit=x", "limit"),
    ("after=not%20base64", "after"), ("after=bm90IGpzb24", "after"), ("after=WzEsMl0", "after"),
    ("q=", "q"), ("q=%20%20", "q"), ("q=" + "x" * 101, "q"),
])
def test_bad_paging_is_a_400_naming_the_field(api, query, field):
    response = api.http.get(f"/sessions?{query}")

    assert response.status_code == 400 and response.json_body["field"] == field, response.json_body
