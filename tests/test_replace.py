"""Regenerate and edit-and-resend: a turn that `replaces` the conversation's last turn takes its
place, on every path that starts a turn, and the replaced turn is kept; on moto and dynalite."""

import json

import pytest

from chalicelib import services
from chalicelib.history import MAX_VERSIONS
from local.identity import USER
from local.tgi import TgiError
from tests.conftest import stored_items
from tests.test_async_turns import chat, turns  # noqa: F401 (the `turns` fixture)

JSON = {"content-type": "application/json"}


def post(http, query, turn=None, replaces=None, sessionid="s", **extra):
    body = {"sessionid": sessionid, "query": query, **({"turn": turn} if turn else {}),
            **({"replaces": replaces} if replaces else {}), **extra}
    return http.post("/chat", headers=JSON, body=json.dumps(body))


def listed(http, sessionid="s") -> list[dict]:
    return http.get(f"/sessions/{sessionid}/messages").json_body["messages"]


def contents(http, sessionid="s") -> list[str]:
    return [message["content"] for message in listed(http, sessionid)]


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"], indirect=True)
class TestReplace:
    def test_regenerate_replaces_the_last_turn_in_the_listing_and_every_later_prompt(self, api, endpoint, dynamodb):
        first = post(api.http, "one", turn="t-1").json_body
        post(api.http, "two", turn="t-2")

        again = post(api.http, "two", turn="t-3", replaces="t-2")

        assert again.status_code == 200, again.json_body
        assert again.json_body["replaces"] == ["t-2"] and again.json_body["history_turns"] == 1
        # The regenerated answer was asked with what came before the replaced turn only.
        assert [m["content"] for m in endpoint.requests[-1]["messages"][1:]] == ["one", first["answer"], "two"]
        messages = listed(api.http)
        assert [(m["turn"], m["content"]) for m in messages] == [
            ("t-1", "one"), ("t-1", first["answer"]), ("t-3", "two"), ("t-3", again.json_body["answer"])]
        assert messages[2]["replaces"] == messages[3]["replaces"] == ["t-2"] and "replaces" not in messages[0]
        post(api.http, "three", turn="t-4")
        assert [m["content"] for m in endpoint.requests[-1]["messages"][1:]] == [
            "one", first["answer"], "two", again.json_body["answer"], "three"]
        assert len([item for item in stored_items(dynamodb, "s") if "answer" in item]) == 3

    def test_edit_sends_a_changed_question_in_place_of_the_last(self, api, endpoint):
        post(api.http, "one", turn="t-1")
        post(api.http, "two, badly put", turn="t-2")

        edited = post(api.http, "two, well put", turn="t-3", replaces="t-2").json_body

        assert contents(api.http)[2:] == ["two, well put", edited["answer"]]

    def test_the_replaced_turn_is_kept_and_read_by_its_id(self, api):
        replaced = post(api.http, "one", turn="t-1").json_body
        post(api.http, "one", turn="t-2", replaces="t-1")
        third = post(api.http, "one", turn="t-3", replaces="t-2").json_body

        status = api.http.get("/sessions/s/turns/t-1").json_body
        assert status == {"status": "done", **replaced, "replaced_by": "t-3", "query": "one"}
        assert third["replaces"] == ["t-1", "t-2"]
        # Sending the replaced turn again answers it as it was stored, and asks nothing.
        assert post(api.http, "one", turn="t-1").json_body == {**replaced, "replaced_by": "t-3"}

    def test_only_the_last_turn_may_be_replaced_and_a_refusal_changes_nothing(self, api, endpoint, dynamodb):
        post(api.http, "one", turn="t-1")
        post(api.http, "two", turn="t-2")
        before, asked = stored_items(dynamodb, "s"), len(endpoint.requests)

        for replaces in ("t-1", "never-sent"):
            refused = post(api.http, "again", turn="t-9", replaces=replaces)
            assert (refused.status_code, refused.json_body["error"]) == (409, "not_last_turn"), replaces
        refused_elsewhere = post(api.http, "again", replaces="t-2", sessionid="empty")

        assert (refused_elsewhere.status_code, refused_elsewhere.json_body["error"]) == (409, "not_last_turn")
        assert stored_items(dynamodb, "s") == before and stored_items(dynamodb, "empty") == []
        assert len(endpoint.requests) == asked
        assert api.http.get("/sessions/s/turns/t-9").status_code == 404

    def test_a_retried_replacement_is_stored_once(self, api, endpoint):
        post(api.http, "one", turn="t-1")
        first = post(api.http, "one", turn="t-2", replaces="t-1").json_body
        retry = post(api.http, "one", turn="t-2", replaces="t-1").json_body

        assert retry == first and len(endpoint.requests) == 2
        assert contents(api.http) == ["one", first["answer"]]

    def test_a_replacement_that_fails_leaves_the_conversation_as_it_was(self, api, endpoint, dynamodb):
        post(api.http, "one", turn="t-1")
        before = listed(api.http)
        endpoint.fail_next(TgiError(500, "CUDA out of memory", "generation"))

        failed = post(api.http, "one", turn="t-2", replaces="t-1")

        assert failed.status_code == 502
        assert listed(api.http) == before
        assert post(api.http, "one", turn="t-2", replaces="t-1").status_code == 200  # and it may be retried

    def test_a_turn_replaced_while_its_replacement_was_being_answered_is_a_409(self, api, endpoint, dynamodb):
        post(api.http, "one", turn="t-1")
        answer = endpoint.invoke

        def another_replacement_lands_first(body, **streaming):
            endpoint.invoke = answer
            assert post(api.http, "one", turn="t-3", replaces="t-1").status_code == 200
            return answer(body, **streaming)

        endpoint.invoke = another_replacement_lands_first
        late = post(api.http, "one", turn="t-2", replaces="t-1")

        assert (late.status_code, late.json_body["error"]) == (409, "not_last_turn")
        assert [m["turn"] for m in listed(api.http)] == ["t-3", "t-3"]
        assert api.http.get("/sessions/s/turns/t-2").json_body["error"] == "not_last_turn"

    def test_a_turn_keeps_its_newest_previous_versions(self, api, dynamodb):
        post(api.http, "q", turn="v-0")
        for number in range(1, MAX_VERSIONS + 3):
            assert post(api.http, "q", turn=f"v-{number}", replaces=f"v-{number - 1}").status_code == 200

        (item,) = [item for item in stored_items(dynamodb, "s") if "answer" in item]
        assert len(item["versions"]["L"]) == MAX_VERSIONS
        assert len(item["replaces"]["L"]) == MAX_VERSIONS + 2  # the ids of all it replaced
        assert api.http.get("/sessions/s/turns/v-0").status_code == 404  # dropped with its version
        assert api.http.get(f"/sessions/s/turns/v-{MAX_VERSIONS + 1}").json_body["replaced_by"] == \
            f"v-{MAX_VERSIONS + 2}"


def test_a_turn_sent_without_ids_can_be_replaced_by_its_answered_id(api, endpoint, dynamodb):
    first = post(api.http, "one").json_body  # no turn id: no claim is written

    again = post(api.http, "one", replaces=first["turn"]).json_body

    assert again["replaces"] == [first["turn"]] and contents(api.http) == ["one", again["answer"]]
    assert api.http.get(f"/sessions/s/turns/{first['turn']}").json_body["replaced_by"] == again["turn"]


def test_get_chat_takes_replaces_too(api, endpoint):
    post(api.http, "one", turn="t-1")

    again = api.http.get("/chat?sessionid=s&query=one&turn=t-2&replaces=t-1")

    assert again.status_code == 200 and again.json_body["replaces"] == ["t-1"]
    assert [m["turn"] for m in listed(api.http)] == ["t-2", "t-2"]


def test_replaces_must_be_a_turn_id(api):
    refused = post(api.http, "one", replaces="not a turn id!")

    assert refused.status_code == 400 and refused.json_body["field"] == "replaces"


def test_asynchronous_replacements_are_answered_by_the_worker_and_only_one_takes_the_place(api, dynamodb,
                                                                                           turns):  # noqa: F811
    post(api.http, "one", turn="t-1")

    # Both are accepted while t-1 is the last turn; the worker stores the first and refuses the
    # second, whose turn is no longer the last by then.
    accepted = [post(api.http, "one", turn=turn, replaces="t-1", **{"async": True}) for turn in ("t-2", "t-3")]
    turns.work()

    assert [response.status_code for response in accepted] == [202, 202]
    statuses = {turn: api.http.get(f"/sessions/s/turns/{turn}").json_body for turn in ("t-2", "t-3")}
    (done,) = [turn for turn, status in statuses.items() if status["status"] == "done"]
    (failed,) = [status for status in statuses.values() if status["status"] == "failed"]
    assert statuses[done]["replaces"] == ["t-1"] and failed["error"] == "not_last_turn"
    assert [m["turn"] for m in listed(api.http)] == [done, done]


def test_a_websocket_replacement_streams_and_replaces(api, dynamodb, turns):  # noqa: F811
    post(api.http, "hello", turn="t-1")

    turns.send("conn-1", {**chat(turn="t-2"), "replaces": "t-1"})
    turns.work()
    turns.send("conn-1", {**chat(turn="t-3"), "replaces": "t-1"})

    assert turns.connections.types("conn-1")[:1] == ["accepted"] and "done" in turns.connections.types("conn-1")
    done = next(m for m in turns.connections.received["conn-1"] if m["type"] == "done")
    assert done["replaces"] == ["t-1"]
    assert turns.connections.received["conn-1"][-1] == {
        "type": "error", "turn": "t-3", "error": "not_last_turn",
        "message": "'replaces' must name the conversation's last turn, and t-1 is not; nothing was changed"}
    assert services.store().history.last_turn(USER, "s").turn_id == "t-2"
