"""GET /sessions/{id}/export: the conversation as a file, Markdown or JSON, as it now stands."""

import json

import pytest

from chalicelib import export
from local.identity import OTHER_USER

JSON = {"content-type": "application/json"}


def post(http, query, turn, replaces=None):
    body = {"sessionid": "s", "query": query, "turn": turn, **({"replaces": replaces} if replaces else {})}
    response = http.post("/chat", headers=JSON, body=json.dumps(body))
    assert response.status_code == 200, response.json_body
    return response.json_body


@pytest.fixture
def conversation(api, endpoint):
    first = post(api.http, "What is **Rome** known for?", "t-1")
    post(api.http, "And Paris?", "t-2")
    second = post(api.http, "And Paris, briefly?", "t-3", replaces="t-2")
    api.http.put("/sessions/s/turns/t-1/feedback", headers=JSON, body=json.dumps({"rating": "up"}))
    api.http.request("PATCH", "/sessions/s", headers=JSON, body=json.dumps({"title": "Cities"}).encode())
    return first, second


def test_markdown_is_a_download_with_the_title_and_every_turn_as_it_stands(api, conversation):
    first, second = conversation

    response = api.http.get("/sessions/s/export")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="s.md"'
    text = response.body.decode()
    assert text.startswith("# Cities\n")
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        f"## You, {first['asked_at']}", f"## Assistant, {first['answered_at']}",
        f"## You, {second['asked_at']}", f"## Assistant, {second['answered_at']}"]
    assert "What is **Rome** known for?" in text and second["answer"] in text and "And Paris?\n" not in text
    assert "*Rated up*" in text


def test_json_holds_the_turns_their_replacements_and_ratings(api, conversation):
    first, second = conversation

    response = api.http.get("/sessions/s/export?format=json")

    assert response.headers["Content-Disposition"] == 'attachment; filename="s.json"'
    document = json.loads(response.body)
    assert document["sessionid"] == "s" and document["title"] == "Cities"
    assert document["last_activity"] and document["exported_at"]
    assert [turn["turn"] for turn in document["turns"]] == ["t-1", "t-3"]
    assert document["turns"][0]["feedback"]["rating"] == "up" and document["turns"][1]["replaces"] == ["t-2"]
    assert document["turns"][1] == {**document["turns"][1], "question": "And Paris, briefly?",
                                    "answer": second["answer"], "asked_at": second["asked_at"]}


def test_another_users_or_an_unknown_session_is_not_found_and_a_bad_format_a_400(api, conversation):
    assert api.http.as_user(OTHER_USER).get("/sessions/s/export").status_code == 404
    assert api.http.get("/sessions/never/export").status_code == 404
    refused = api.http.get("/sessions/s/export?format=pdf")
    assert refused.status_code == 400 and refused.json_body["field"] == "format"


def test_a_conversation_too_large_to_answer_is_a_413(api, conversation, monkeypatch):
    monkeypatch.setattr(export, "MAX_EXPORT_BYTES", 100)

    refused = api.http.get("/sessions/s/export")

    assert (refused.status_code, refused.json_body["error"]) == (413, "export_too_large")


def test_a_long_conversation_is_exported_whole(api, endpoint, monkeypatch):
    from chalicelib import history

    monkeypatch.setattr(history, "EVERY_TURN_PAGE", 2)  # read it two turns a Query
    for number in range(5):
        post(api.http, f"question {number}", f"t-{number}")

    document = json.loads(api.http.get("/sessions/s/export?format=json").body)

    assert [turn["question"] for turn in document["turns"]] == [f"question {number}" for number in range(5)]
