"""Sign-in and ownership: every route but the page and its config needs a user, and a user
reaches only their own sessions, whatever ids they send (the owner is part of the key)."""

import json
import time

import pytest

from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from local.identity import OTHER_USER, USER
from tests.conftest import stored_items

JSON = {"content-type": "application/json"}

SIGNED_IN_ROUTES = [
    ("GET", "/chat?sessionid=s&query=hi", b""),
    ("POST", "/chat", json.dumps({"sessionid": "s", "query": "hi"}).encode()),
    ("GET", "/sessions", b""),
    ("GET", "/sessions/s/messages", b""),
    ("GET", "/sessions/s/turns/t", b""),
    ("DELETE", "/sessions/s", b""),
    ("PATCH", "/sessions/s", json.dumps({"title": "mine"}).encode()),
    ("GET", "/sessions/s/export", b""),
    ("PUT", "/sessions/s/turns/t/feedback", json.dumps({"rating": "up"}).encode()),
    ("DELETE", "/sessions/s/turns/t/feedback", b""),
]


@pytest.mark.parametrize("method, path, body", SIGNED_IN_ROUTES, ids=[f"{m} {p}" for m, p, _ in SIGNED_IN_ROUTES])
def test_every_api_route_refuses_a_request_without_a_user(api, dynamodb, method, path, body):
    response = api.http.as_user(None).request(method, path, headers=JSON, body=body)

    assert response.status_code == 401
    assert response.json_body["error"] == "unauthorized"
    assert dynamodb.scan(TableName="chat-test")["Items"] == []  # nothing was written


def test_the_page_and_its_config_need_no_user(api):
    signed_out = api.http.as_user(None)

    assert signed_out.get("/").status_code == 200
    assert signed_out.get("/config").status_code == 200


def test_every_route_but_the_page_and_its_config_is_behind_the_user_pool():
    from app import app

    open_routes = {
        (path, method) for path, methods in app.routes.items() for method, entry in methods.items()
        if entry.authorizer is None
    }
    assert open_routes == {("/", "GET"), ("/config", "GET")}
    authorizers = {entry.authorizer.name for methods in app.routes.values() for entry in methods.values()
                   if entry.authorizer}
    assert authorizers == {"users"}


def a_conversation(api, sessionid="shared-id"):
    for number in range(3):
        response = api.http.post("/chat", headers=JSON, body=json.dumps(
            {"sessionid": sessionid, "query": f"secret {number}", "turn": f"t-{number}"}))
        assert response.status_code == 200, response.json_body


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"], indirect=True)
class TestOwnership:
    def test_another_user_cannot_read_page_or_see_the_turns_of_a_session(self, api, dynamodb):
        a_conversation(api)
        other = api.http.as_user(OTHER_USER)

        # Exactly what an id never used answers: 404, so ids cannot be probed.
        for path in ("/sessions/shared-id/messages", "/sessions/shared-id/messages?after=00000000000000001-00000000",
                     "/sessions/shared-id/turns/t-0", "/sessions/never-used/messages"):
            answer = other.get(path)
            assert (answer.status_code, answer.json_body["error"]) == (404, "not_found"), path
        assert other.get("/sessions").json_body == {"sessions": []}

    def test_another_user_cannot_delete_a_session(self, api, dynamodb):
        a_conversation(api)

        deleted = api.http.as_user(OTHER_USER).delete("/sessions/shared-id")

        assert (deleted.status_code, deleted.json_body["error"]) == (404, "not_found")
        assert len(api.http.get("/sessions/shared-id/messages").json_body["messages"]) == 6

    def test_the_same_id_from_another_user_is_their_own_new_conversation(self, api, dynamodb, endpoint):
        a_conversation(api)
        other = api.http.as_user(OTHER_USER)

        # The same turn id is a new turn for them, not the owner's answer; their prompt has no history.
        again = other.post("/chat", headers=JSON, body=json.dumps(
            {"sessionid": "shared-id", "query": "secret 0", "turn": "t-0"})).json_body
        assert again["history_turns"] == 0
        assert [m["role"] for m in endpoint.requests[-1]["messages"]] == ["system", "user"]
        assert [m["content"] for m in other.get("/sessions/shared-id/messages").json_body["messages"]] == [
            "secret 0", again["answer"]]
        owners, others = stored_items(dynamodb, "shared-id"), stored_items(dynamodb, "shared-id", OTHER_USER)
        assert (len(owners), len(others)) == (6, 2)  # three turns and claims; one of each
        assert len(api.http.get("/sessions/shared-id/messages").json_body["messages"]) == 6

    def test_turns_stored_before_sign_in_are_reachable_by_no_one(self, api, dynamodb, settings_env):
        import os

        table = os.environ["CHAT_TABLE_NAME"]
        # As the app stored a turn before sign-in: the bare session id as the partition key.
        dynamodb.put_item(TableName=table, Item={
            PARTITION_KEY: {"S": "old-session"}, SORT_KEY: {"S": "00001700000000000000-0a1b2c3d"},
            "query": {"S": "an old question"}, "answer": {"S": "an old answer"},
            TTL_ATTRIBUTE: {"N": str(int(time.time()) + 86400)},
        })

        for user in (USER, OTHER_USER):
            http = api.http.as_user(user)
            assert http.get("/sessions/old-session/messages").status_code == 404
            assert http.get("/sessions").json_body == {"sessions": []}
            assert http.delete("/sessions/old-session").status_code == 404
        # Still there, untouched, until its TTL runs out.
        (item,) = dynamodb.query(TableName=table, KeyConditionExpression="sessionid = :s",
                                 ExpressionAttributeValues={":s": {"S": "old-session"}})["Items"]
        assert item["query"] == {"S": "an old question"}
