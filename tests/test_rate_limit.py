"""The per-user limit on new turns a minute (TURNS_PER_MINUTE), on every path that starts one."""

import json
import os

import pytest

from chalicelib.sessions import Sessions
from chalicelib.settings import get_settings
from chalicelib.store import ChatStore
from chalicelib.table import PARTITION_KEY, RATE_PREFIX
from local.identity import OTHER_USER, USER
from tests.conftest import stored_items
from tests.test_async_turns import chat, turns  # noqa: F401 (the `turns` fixture)

JSON = {"content-type": "application/json"}


@pytest.fixture
def two_a_minute(settings_env, monkeypatch):
    settings_env.setenv("TURNS_PER_MINUTE", "2")
    # Early in a minute, so that its window does not end mid-test.
    now = [60 * 29_000_000 + 1.5]
    real_open = ChatStore.open.__func__

    def at_now(cls, client, table_name, ttl_days, clock=None):
        return real_open(cls, client, table_name, ttl_days, clock=lambda: now[0])

    monkeypatch.setattr(ChatStore, "open", classmethod(at_now))
    return now


def post(http, query, turn=None, asynchronous=False):
    body = {"sessionid": "s", "query": query, **({"turn": turn} if turn else {}), "async": asynchronous}
    return http.post("/chat", headers=JSON, body=json.dumps(body))


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"], indirect=True)
def test_a_user_over_the_limit_gets_429_with_retry_after_until_the_next_minute(api, dynamodb, two_a_minute):
    assert post(api.http, "one").status_code == 200
    assert api.http.get("/chat?sessionid=s&query=two").status_code == 200

    refused = post(api.http, "three")

    assert refused.status_code == 429
    assert refused.json_body["error"] == "rate_limited" and refused.json_body["retry_after"] == 59
    assert refused.headers["Retry-After"] == "59"
    assert len(api.http.get("/sessions/s/messages").json_body["messages"]) == 4  # nothing stored
    # Other users have their own limit; the next minute starts afresh.
    assert post(api.http.as_user(OTHER_USER), "three").status_code == 200
    two_a_minute[0] += 60
    assert post(api.http, "three").status_code == 200


def test_a_retry_of_a_stored_turn_is_answered_not_refused(api, dynamodb, two_a_minute):
    first = post(api.http, "one", turn="t-1").json_body
    post(api.http, "two", turn="t-2")

    again = post(api.http, "one", turn="t-1")

    assert again.status_code == 200 and again.json_body == first


def rate_counters(dynamodb, owner=USER) -> list[dict]:
    return dynamodb.query(
        TableName=os.environ["CHAT_TABLE_NAME"], KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": PARTITION_KEY}, ExpressionAttributeValues={":s": {"S": RATE_PREFIX + owner}},
    )["Items"]


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"], indirect=True)
def test_a_refused_turn_writes_nothing_and_may_be_sent_again_next_minute(api, dynamodb, two_a_minute):
    post(api.http, "one")
    post(api.http, "two")
    counters = rate_counters(dynamodb)

    refused = api.http.post("/chat", headers=JSON, body=json.dumps({"sessionid": "new", "query": "three",
                                                                    "turn": "t-3"}))

    assert refused.status_code == 429
    assert stored_items(dynamodb, "new") == [] and rate_counters(dynamodb) == counters
    assert api.http.get("/sessions/new/turns/t-3").status_code == 404
    assert api.http.get("/sessions/new/messages").status_code == 404
    assert api.http.delete("/sessions/new").status_code == 404
    assert [s["sessionid"] for s in api.http.get("/sessions").json_body["sessions"]] == ["s"]
    two_a_minute[0] += 60
    again = api.http.post("/chat", headers=JSON, body=json.dumps({"sessionid": "new", "query": "three",
                                                                  "turn": "t-3"}))
    assert again.status_code == 200 and again.json_body["turn"] == "t-3"


def test_asynchronous_turns_count_too(api, dynamodb, two_a_minute, turns):  # noqa: F811
    assert post(api.http, "one", asynchronous=True).status_code == 202
    assert post(api.http, "two", asynchronous=True).status_code == 202

    refused = post(api.http, "three", asynchronous=True)

    assert refused.status_code == 429 and refused.headers["Retry-After"] == "59"
    assert turns.work() == 2  # only the accepted turns were handed over


def test_websocket_turns_count_too_and_hear_the_same_error(api, dynamodb, two_a_minute, turns):  # noqa: F811
    turns.send("conn-1", chat(turn="t-1", query="one"))
    turns.send("conn-1", chat(turn="t-2", query="two"))
    turns.send("conn-1", chat(turn="t-3", query="three"))

    assert turns.connections.types("conn-1") == ["accepted", "accepted", "error"]
    error = turns.connections.received["conn-1"][-1]
    assert error == {
        "type": "error", "turn": "t-3", "error": "rate_limited",
        "message": "at most 2 turns a minute; try again in 59 s", "retry_after": 59,
    }
    assert turns.work() == 2
    # Its retry once answered is answered, whatever the count.
    turns.send("conn-1", chat(turn="t-1", query="one"))
    assert turns.connections.types("conn-1")[-1] == "done"


def test_the_limit_is_a_setting_with_a_default(settings_env):
    settings_env.delenv("TURNS_PER_MINUTE")
    get_settings.cache_clear()
    assert get_settings().turns_per_minute == 10


def test_a_failure_while_admitting_a_turn_is_recorded_so_its_retry_starts_at_once(api, dynamodb, monkeypatch):
    """Admission (count, then list) happens after the claim: when DynamoDB fails there, the
    claim is released with the failure, not left to block retries until its lease ends."""
    from chalicelib.errors import HistoryUnavailable

    real_record = Sessions.record_activity
    failures = [HistoryUnavailable("the history store is busy (ThrottlingException); try again shortly")]

    def busy_once(self, *args):
        if failures:
            raise failures.pop()
        return real_record(self, *args)

    monkeypatch.setattr(Sessions, "record_activity", busy_once)

    first = post(api.http, "hello", turn="t-1")
    status = api.http.get("/sessions/s/turns/t-1").json_body
    retried = post(api.http, "hello", turn="t-1")

    assert first.status_code == 503 and first.json_body["error"] == "history_unavailable"
    assert status["status"] == "failed" and status["error"] == "history_unavailable"
    assert retried.status_code == 200 and retried.json_body["turn"] == "t-1"
