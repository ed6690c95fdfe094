"""The DynamoDB history: append-only items, TTL, deletes, concurrent turns."""

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from chalicelib.history import ChatHistory
from chalicelib.table import TTL_ATTRIBUTE
from tests.conftest import TABLE_NAME, stored_items

DAY = 86400


def test_each_turn_is_one_item_with_a_ttl_from_settings(api, dynamodb, settings_env):
    settings_env.setenv("HISTORY_TTL_DAYS", "7")
    response = api.http.get("/chat?sessionid=s&query=hello").json_body

    (item,) = stored_items(dynamodb, "s")
    assert item["query"] == {"S": "hello"} and item["answer"] == {"S": response["answer"]}
    written = datetime.fromisoformat(item["answered_at"]["S"]).timestamp()
    assert abs(int(item[TTL_ATTRIBUTE]["N"]) - (written + 7 * DAY)) < 2


def test_expired_turns_are_ignored_before_dynamodb_deletes_them(dynamodb):
    now = [1_000_000.0]
    history = ChatHistory(dynamodb, TABLE_NAME, ttl_days=1, clock=lambda: now[0])
    history.append_turn("s", "old", "old answer", asked_at=now[0])
    now[0] += DAY / 2
    history.append_turn("s", "new", "new answer", asked_at=now[0])

    now[0] += DAY / 2 + 1  # the first turn has expired, the second has not

    assert [t.query for t in history.recent_turns("s", 10)] == ["new"]
    assert [t.query for t in history.turns_page("s", 10)[0]] == ["new"]
    assert len(stored_items(dynamodb, "s")) == 2  # still in the table, as after a lagging TTL sweep


def test_recent_turns_reads_only_the_window_oldest_first(dynamodb):
    history = ChatHistory(dynamodb, TABLE_NAME, ttl_days=30)
    for i in range(10):
        history.append_turn("s", f"q{i}", f"a{i}", asked_at=1000 + i)

    assert [t.query for t in history.recent_turns("s", 3)] == ["q7", "q8", "q9"]
    assert history.recent_turns("s", 0) == []


def test_a_retried_put_whose_first_attempt_landed_is_not_an_error(dynamodb):
    history = ChatHistory(dynamodb, TABLE_NAME, ttl_days=30)
    first_attempts = []

    def land_a_first_attempt(params, **_):
        # As if an earlier attempt had written the item and its answer was lost.
        if not first_attempts:
            first_attempts.append(params["Item"])
            dynamodb.put_item(TableName=TABLE_NAME, Item=params["Item"])

    dynamodb.meta.events.register("provide-client-params.dynamodb.PutItem", land_a_first_attempt)
    try:
        history.append_turn("s", "q", "a", asked_at=0)
    finally:
        dynamodb.meta.events.unregister("provide-client-params.dynamodb.PutItem", land_a_first_attempt)

    assert len(stored_items(dynamodb, "s")) == 1


def test_delete_removes_sessions_larger_than_one_batch_and_resends_unprocessed(dynamodb):
    history = ChatHistory(dynamodb, TABLE_NAME, ttl_days=30)
    for i in range(60):
        history.append_turn("big", f"q{i}", "a", asked_at=0)
    calls = []

    def leave_one_unprocessed(parsed, model, **_):
        calls.append(model.name)
        if len(calls) == 1:  # DynamoDB may answer 200 with items it did not process
            request = json.loads(last_request[0])["RequestItems"][TABLE_NAME][:1]
            parsed["UnprocessedItems"] = {TABLE_NAME: request}

    last_request = []
    dynamodb.meta.events.register(
        "before-send.dynamodb.BatchWriteItem", lambda request, **_: last_request.append(request.body)
    )
    dynamodb.meta.events.register("after-call.dynamodb.BatchWriteItem", leave_one_unprocessed)

    assert history.delete_session("big") == 60
    assert [item["turn"]["S"] for item in stored_items(dynamodb, "big")] == ["~deleted"]
    assert len(calls) == 4  # three batches of at most 25, one resend


def test_16_threads_posting_to_one_session_lose_no_message(gateway):
    queries = [f"thread {t} message {m}" for t in range(16) for m in range(5)]
    start = threading.Barrier(16)

    def post_all(thread):
        start.wait()
        return [
            gateway("POST", "/chat", json.dumps({"sessionid": "shared", "query": q}).encode(),
                    {"content-type": "application/json"})
            for q in queries[thread * 5:(thread + 1) * 5]
        ]

    with ThreadPoolExecutor(16) as pool:
        responses = [r for batch in pool.map(post_all, range(16)) for r in batch]

    assert [status for status, _ in responses] == [200] * 80
    answered = {body["answer"].split(" to: ")[1] for _, body in responses}
    assert answered == set(queries)  # every answer belongs to its own request
    _, stored = gateway("GET", "/sessions/shared/messages")
    assert sorted(m["content"] for m in stored["messages"] if m["role"] == "user") == sorted(queries)
    assert len(stored["messages"]) == 160


def test_concurrent_requests_each_see_their_own_session(gateway):
    """Fails with a plain Chalice app, whose current_request all threads share."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, as a loaded server would
    try:
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda n: gateway("GET", f"/chat?sessionid=s{n}&query=q{n}")[1], range(64)))
    finally:
        sys.setswitchinterval(interval)

    assert [(r["sessionid"], r["answer"].split(" to: ")[1]) for r in replies] == [
        (f"s{n}", f"q{n}") for n in range(64)
    ]


def test_a_turn_under_way_when_its_session_is_deleted_does_not_bring_it_back(api, endpoint, monkeypatch):
    from chalicelib import services

    api.http.get("/chat?sessionid=s&query=before")
    answer_after_deleting = endpoint.invoke

    def delete_while_the_model_answers(body):
        assert services.history().delete_session("s") == 1
        return answer_after_deleting(body)

    monkeypatch.setattr(endpoint, "invoke", delete_while_the_model_answers)
    under_way = api.http.get("/chat?sessionid=s&query=during")
    monkeypatch.undo()
    after = api.http.get("/chat?sessionid=s&query=after").json_body

    assert under_way.status_code == 200  # answered; the session is gone all the same
    assert [m["content"] for m in api.http.get("/sessions/s/messages").json_body["messages"]] == [
        "after", after["answer"]]
    assert after["history_turns"] == 0 and endpoint.requests[-1]["messages"][1:] == [
        {"role": "user", "content": "after"}]


def test_deleting_twice_and_chatting_between_keeps_only_the_newest(dynamodb):
    now = [1_000_000.0]
    history = ChatHistory(dynamodb, TABLE_NAME, ttl_days=1, clock=lambda: now[0])
    history.append_turn("s", "one", "a", asked_at=now[0])
    now[0] += 1
    assert history.delete_session("s") == 1
    now[0] += 1
    history.append_turn("s", "two", "b", asked_at=now[0])

    assert [t.query for t in history.recent_turns("s", 5)] == ["two"]
    now[0] += 1
    assert history.delete_session("s") == 1
    assert history.recent_turns("s", 5) == [] and history.turns_page("s", 5)[0] == []
