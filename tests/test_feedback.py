"""Feedback on an answer: PUT and DELETE /sessions/{id}/turns/{turn}/feedback, shown in the
messages listing, counted as a metric by rating, its comment never logged; on moto and dynalite."""

import json

import pytest

from local.identity import OTHER_USER
from tests.conftest import stored_items
from tests.test_observability import lines, metrics

JSON = {"content-type": "application/json"}
COMMENT = "my private comment about penguins"


def post(http, query, turn=None, replaces=None):
    body = {"sessionid": "s", "query": query, **({"turn": turn} if turn else {}),
            **({"replaces": replaces} if replaces else {})}
    response = http.post("/chat", headers=JSON, body=json.dumps(body))
    assert response.status_code == 200, response.json_body
    return response.json_body


def rate(http, turn, body, sessionid="s"):
    return http.put(f"/sessions/{sessionid}/turns/{turn}/feedback", headers=JSON, body=json.dumps(body))


def answer_feedback(http) -> list:
    messages = http.get("/sessions/s/messages").json_body["messages"]
    return [message.get("feedback") for message in messages if message["role"] == "assistant"]


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"], indirect=True)
class TestFeedback:
    def test_a_rating_with_a_comment_is_shown_changed_and_taken_back(self, api, endpoint, dynamodb):
        post(api.http, "one", "t-1")
        post(api.http, "two", "t-2")

        given = rate(api.http, "t-1", {"rating": "up", "comment": COMMENT})

        assert given.status_code == 200
        assert given.json_body["feedback"] == {"rating": "up", "comment": COMMENT, "time": given.json_body[
            "feedback"]["time"]}
        assert answer_feedback(api.http) == [given.json_body["feedback"], None]
        changed = rate(api.http, "t-1", {"rating": "down"}).json_body["feedback"]
        assert changed["rating"] == "down" and "comment" not in changed
        taken_back = api.http.delete("/sessions/s/turns/t-1/feedback")
        assert taken_back.status_code == 200 and taken_back.json_body["feedback"] is None
        assert answer_feedback(api.http) == [None, None]

    def test_a_turn_sent_without_an_id_is_rated_by_the_id_it_was_answered_with(self, api, endpoint, dynamodb):
        turn = post(api.http, "one")["turn"]

        assert rate(api.http, turn, {"rating": "down"}).status_code == 200
        assert answer_feedback(api.http)[0]["rating"] == "down"

    def test_unknown_replaced_and_other_users_turns_are_not_found_and_nothing_changes(self, api, endpoint, dynamodb):
        post(api.http, "one", "t-1")
        post(api.http, "one", "t-2", replaces="t-1")
        before = stored_items(dynamodb, "s")

        for http, turn in ((api.http, "never"), (api.http, "t-1"), (api.http.as_user(OTHER_USER), "t-2")):
            refused = rate(http, turn, {"rating": "up"})
            assert (refused.status_code, refused.json_body["error"]) == (404, "not_found"), turn
            assert http.delete(f"/sessions/s/turns/{turn}/feedback").status_code == 404
        assert rate(api.http, "t-2", {"rating": "up"}, sessionid="other").status_code == 404
        assert stored_items(dynamodb, "s") == before

    @pytest.mark.parametrize("body, field", [
        ({"rating": "meh"}, "rating"), ({}, "rating"), ({"rating": "up", "comment": "x" * 1001}, "comment"),
        ({"rating": "up", "comment": 5}, "comment"), ({"rating": "up", "stars": 5}, "stars")])
    def test_bad_feedback_is_a_400_naming_the_field_and_changes_nothing(self, api, endpoint, dynamodb, body, field):
        post(api.http, "one", "t-1")
        before = stored_items(dynamodb, "s")

        refused = rate(api.http, "t-1", body)

        assert refused.status_code == 400 and refused.json_body["field"] == field, refused.json_body
        assert stored_items(dynamodb, "s") == before


def test_each_rating_is_a_metric_by_rating_and_the_comment_is_never_logged(api, endpoint, capsys):
    post(api.http, "one", "t-1")
    capsys.readouterr()

    rate(api.http, "t-1", {"rating": "up", "comment": COMMENT})
    rate(api.http, "t-1", {"rating": "down", "comment": COMMENT})
    api.http.delete("/sessions/s/turns/t-1/feedback")

    output = lines(capsys)
    feedback = [metric for metric in metrics(output) if "Feedback" in metric["units"]]
    assert [(metric["Rating"], metric["Feedback"]) for metric in feedback] == [("up", [1.0]), ("down", [1.0])]
    assert feedback[0]["dimensions"] == [["Stage", "Rating"]] and feedback[0]["units"] == {"Feedback": "Count"}
    assert COMMENT not in json.dumps(output)
