"""The DynamoDB history: append-only items, TTL, deletes, turn ids, concurrent turns.

TestHistory runs every test against two stores: moto, and dynalite, which pages like
DynamoDB (a Query that stops at its Limit returns a LastEvaluatedKey, which moto
omits at the end of a partition) and applies writes under a lock.
"""

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from urllib.parse import urlencode

import pytest
from botocore.exceptions import ConnectionClosedError

from chalicelib import services
from chalicelib.admission import start_turn
from chalicelib.errors import InvalidRequest, NotFound, TurnInProgress
from chalicelib.settings import get_settings
from chalicelib.store import ChatStore
from chalicelib.table import DELETION_KEY, TTL_ATTRIBUTE
from local.fake_model import aws_response, http_response
from local.identity import USER
from tests.conftest import stored_items

DAY = 86400
JSON = {"content-type": "application/json"}


def store_at(dynamodb, now, ttl_days=30):
    """The chat table's stores, whose clock reads now[0]."""
    return ChatStore.open(dynamodb, os.environ["CHAT_TABLE_NAME"], ttl_days=ttl_days, clock=lambda: now[0])


def start(store, session, query, turn_id=None):
    """A turn started the way the chat service starts it: its claim."""
    return start_turn(store, get_settings(), USER, session, query, turn_id, lease_seconds=30).claim


def chat(store, session, query, turn_id=None, history_turns=0):
    """One stored turn, the way the chat service stores it."""
    claim = start(store, session, query, turn_id)
    return store.history.append_turn(claim, query, f"answer to {query}", history_turns)


def post(api, body):
    return api.http.post("/chat", headers=JSON, body=json.dumps(body))


def all_pages(api, session, limit):
    """Every message of the session, following `next` as the page does."""
    messages, query = [], {"limit": limit}
    while True:
        response = api.http.get(f"/sessions/{session}/messages?{urlencode(query)}")
        assert response.status_code == 200, response.json_body
        messages += response.json_body["messages"]
        if "next" not in response.json_body:
            return messages
        query["after"] = response.json_body["next"]


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"], indirect=True)
class TestHistory:
    def test_each_turn_is_one_item_with_a_ttl_from_settings(self, api, dynamodb, settings_env):
        settings_env.setenv("HISTORY_TTL_DAYS", "7")
        response = api.http.get("/chat?sessionid=s&query=hello").json_body

        (item,) = stored_items(dynamodb, "s")
        assert item["query"] == {"S": "hello"} and item["answer"] == {"S": response["answer"]}
        written = datetime.fromisoformat(item["answered_at"]["S"]).timestamp()
        assert abs(int(item[TTL_ATTRIBUTE]["N"]) - (written + 7 * DAY)) < 2

    def test_expired_turns_are_ignored_before_dynamodb_deletes_them(self, dynamodb):
        now = [1_000_000.0]
        store = store_at(dynamodb, now, ttl_days=1)
        chat(store, "s", "old")
        now[0] += DAY / 2
        chat(store, "s", "new")

        now[0] += DAY / 2 + 1  # the first turn has expired, the second has not

        assert [t.query for t in store.history.recent_turns(USER, "s", 10)] == ["new"]
        assert [t.query for t in store.history.turns_page(USER, "s", 10)[0]] == ["new"]
        assert len(stored_items(dynamodb, "s")) == 2  # still in the table, as after a lagging TTL sweep

    def test_recent_turns_reads_only_the_window_oldest_first(self, dynamodb):
        now = [1000.0]
        store = store_at(dynamodb, now)
        for i in range(10):
            now[0] += 1
            chat(store, "s", f"q{i}")

        assert [t.query for t in store.history.recent_turns(USER, "s", 3)] == ["q7", "q8", "q9"]
        assert store.history.recent_turns(USER, "s", 0) == []

    def test_a_retried_put_whose_first_attempt_landed_is_not_an_error(self, dynamodb):
        store = store_at(dynamodb, [1000.0])
        first_attempts = []

        def land_a_first_attempt(params, **_):
            # As if an earlier attempt had written the item and its answer was lost.
            if not first_attempts and "query" in params["Item"]:
                first_attempts.append(params["Item"])
                dynamodb.put_item(TableName=params["TableName"], Item=params["Item"])

        dynamodb.meta.events.register("provide-client-params.dynamodb.PutItem", land_a_first_attempt)
        try:
            chat(store, "s", "q")
        finally:
            dynamodb.meta.events.unregister("provide-client-params.dynamodb.PutItem", land_a_first_attempt)

        assert len(stored_items(dynamodb, "s")) == 1

    def test_delete_removes_sessions_larger_than_one_batch_and_resends_unprocessed(self, dynamodb):
        now = [1000.0]
        store = store_at(dynamodb, now)
        for i in range(60):
            now[0] += 1
            chat(store, "big", f"q{i}")
        table_name = os.environ["CHAT_TABLE_NAME"]
        calls, last_request = [], []

        def leave_one_unprocessed(parsed, model, **_):
            calls.append(model.name)
            if len(calls) == 1:  # DynamoDB may answer 200 with items it did not process
                request = json.loads(last_request[0])["RequestItems"][table_name][:1]
                parsed["UnprocessedItems"] = {table_name: request}

        dynamodb.meta.events.register("before-send.dynamodb.BatchWriteItem",
                                      lambda request, **_: last_request.append(request.body))
        dynamodb.meta.events.register("after-call.dynamodb.BatchWriteItem", leave_one_unprocessed)
        now[0] += 1

        assert store.sessions.delete(USER, "big") == 60
        assert [item["turn"]["S"] for item in stored_items(dynamodb, "big")] == [DELETION_KEY]
        assert len(calls) == 4  # three batches of at most 25, one resend

    def test_paging_after_a_delete_follows_every_next_to_the_end(self, api, dynamodb):
        """On DynamoDB a Query stopped by its Limit returns a LastEvaluatedKey that could
        be the deletion marker; it must never come back as a cursor."""
        post(api, {"sessionid": "s", "query": "before"})
        api.http.delete("/sessions/s")
        for query in ("one", "two"):
            post(api, {"sessionid": "s", "query": query})

        messages = all_pages(api, "s", limit=1)

        assert [m["content"] for m in messages if m["role"] == "user"] == ["one", "two"]

    def test_delete_keeps_a_turn_asked_after_it_began(self, dynamodb):
        now = [1_000_000.0]
        store = store_at(dynamodb, now)
        chat(store, "s", "before")
        now[0] += 1

        def a_turn_lands_before_the_deletion_reads(**_):
            # Asked after the marker was written, stored before the deletion's Query ran.
            if not landed:
                landed.append(chat(store_at(dynamodb, [now[0] + 0.5]), "s", "after"))

        landed = []
        dynamodb.meta.events.register("before-call.dynamodb.Query", a_turn_lands_before_the_deletion_reads)
        try:
            deleted = store.sessions.delete(USER, "s")
        finally:
            dynamodb.meta.events.unregister("before-call.dynamodb.Query", a_turn_lands_before_the_deletion_reads)

        assert deleted == 1
        now[0] += 1
        assert [t.query for t in store.history.recent_turns(USER, "s", 5)] == ["after"]
        assert [t.query for t in store.history.turns_page(USER, "s", 5)[0]] == ["after"]

    def test_an_expired_deletion_marker_still_hides_a_turn_stored_after_it(self, dynamodb):
        """A turn under way at the deletion is stored after it, with a later TTL: the marker
        must outlive it, even while DynamoDB has not yet swept expired items."""
        now = [1_000_000.0]
        store = store_at(dynamodb, now, ttl_days=1)
        claim = start(store, "s", "during")
        now[0] += 1
        store.sessions.delete(USER, "s")
        now[0] += 60  # the model answers a minute later
        store.history.append_turn(claim, "during", "late answer", 0)

        now[0] = 1_000_000.0 + DAY + 30  # past a marker that expired with the turns it hid

        assert store.history.recent_turns(USER, "s", 5) == []
        with pytest.raises(NotFound):  # a deleted session is no longer the user's
            store.history.turns_page(USER, "s", 5)

    def test_deleting_twice_and_chatting_between_keeps_only_the_newest(self, dynamodb):
        now = [1_000_000.0]
        store = store_at(dynamodb, now, ttl_days=1)
        chat(store, "s", "one")
        now[0] += 1
        assert store.sessions.delete(USER, "s") == 1
        now[0] += 1
        chat(store, "s", "two")

        assert [t.query for t in store.history.recent_turns(USER, "s", 5)] == ["two"]
        now[0] += 1
        assert store.sessions.delete(USER, "s") == 1
        assert store.history.recent_turns(USER, "s", 5) == []
        with pytest.raises(NotFound):  # a deleted session is no longer the user's
            store.history.turns_page(USER, "s", 5)

    def test_a_turn_under_way_when_its_session_is_deleted_does_not_bring_it_back(self, api, endpoint, monkeypatch):
        api.http.get("/chat?sessionid=s&query=before")
        answer_after_deleting = endpoint.invoke

        def delete_while_the_model_answers(body):
            assert services.store().sessions.delete(USER, "s") == 1
            return answer_after_deleting(body)

        with monkeypatch.context() as patched:
            patched.setattr(endpoint, "invoke", delete_while_the_model_answers)
            under_way = api.http.get("/chat?sessionid=s&query=during")
        after = api.http.get("/chat?sessionid=s&query=after").json_body

        assert under_way.status_code == 200  # answered; the session is gone all the same
        assert [m["content"] for m in api.http.get("/sessions/s/messages").json_body["messages"]] == [
            "after", after["answer"]]
        assert after["history_turns"] == 0 and endpoint.requests[-1]["messages"][1:] == [
            {"role": "user", "content": "after"}]

    # Turn ids

    def test_a_retried_turn_answers_the_stored_turn_without_asking_the_model_again(self, api, endpoint, dynamodb):
        first = post(api, {"sessionid": "s", "query": "hello", "turn": "t-1"})
        retry = post(api, {"sessionid": "s", "query": "hello", "turn": "t-1"})
        by_get = api.http.get("/chat?sessionid=s&query=hello&turn=t-1")

        assert first.status_code == retry.status_code == by_get.status_code == 200
        assert first.json_body["turn"] == "t-1"
        assert retry.json_body == first.json_body == by_get.json_body
        assert len(endpoint.requests) == 1
        assert [m["content"] for m in api.http.get("/sessions/s/messages").json_body["messages"]] == [
            "hello", first.json_body["answer"]]

    def test_every_answer_names_its_turn(self, api):
        one = api.http.get("/chat?sessionid=s&query=hi").json_body["turn"]
        two = post(api, {"sessionid": "s", "query": "hi"}).json_body["turn"]

        assert one != two and all(len(made) == 32 for made in (one, two))

    def test_a_retry_while_the_turn_is_answered_is_a_409(self, dynamodb):
        now = [1000.0]
        store = store_at(dynamodb, now)
        store.claims.claim(USER, "s", "t", "hello", lease_seconds=27)
        now[0] += 5

        with pytest.raises(TurnInProgress) as in_progress:
            store.claims.claim(USER, "s", "t", "hello", lease_seconds=27)
        assert in_progress.value.status_code == 409 and in_progress.value.retry_after == 22

    def test_a_retry_after_the_first_attempt_was_lost_takes_it_over_and_stores_once(self, dynamodb):
        now = [1000.0]
        store = store_at(dynamodb, now)
        lost = store.claims.claim(USER, "s", "t", "hello", lease_seconds=27).claim
        now[0] += 30  # its lease ran out: the attempt died

        taken_over = store.claims.claim(USER, "s", "t", "hello", lease_seconds=27).claim
        stored = store.history.append_turn(taken_over, "hello", "second answer", 0)
        late = store.history.append_turn(lost, "hello", "first answer", 0)  # the lost attempt finishes after all

        assert taken_over.turn_key == lost.turn_key
        assert late == stored and stored.answer == "second answer"
        assert [t.answer for t in store.history.recent_turns(USER, "s", 5)] == ["second answer"]

    def test_a_failed_turn_can_be_retried_at_once(self, api, endpoint):
        from local.fake_model import read_timeout

        endpoint.fail_next(read_timeout())
        failed = post(api, {"sessionid": "s", "query": "hello", "turn": "t"})
        retry = post(api, {"sessionid": "s", "query": "hello", "turn": "t"})

        assert (failed.status_code, retry.status_code) == (504, 200)
        assert len(api.http.get("/sessions/s/messages").json_body["messages"]) == 2

    def test_a_turn_id_reused_for_another_query_is_a_400_and_changes_nothing(self, dynamodb):
        store = store_at(dynamodb, [1000.0])
        chat(store, "s", "hello", turn_id="t")
        before = stored_items(dynamodb, "s")

        with pytest.raises(InvalidRequest, match="already used for another query") as reused:
            store.claims.claim(USER, "s", "t", "something else", lease_seconds=27)
        assert reused.value.field == "turn" and stored_items(dynamodb, "s") == before

    def test_a_turn_id_after_its_session_was_deleted_starts_a_new_turn(self, dynamodb):
        now = [1000.0]
        store = store_at(dynamodb, now)
        chat(store, "s", "hello", turn_id="t")
        now[0] += 1
        store.sessions.delete(USER, "s")
        now[0] += 1

        again = chat(store, "s", "hello", turn_id="t")

        assert [t.answer for t in store.history.recent_turns(USER, "s", 5)] == [again.answer]

    def test_a_put_whose_every_answer_is_lost_is_not_a_503_and_is_stored_once(self, api, dynamodb, monkeypatch):
        """The turn's PutItem lands but its answer never arrives, on every attempt: a
        consistent read tells it is stored, so the client is not told to retry a stored turn."""
        from chalicelib import clients

        make_client = clients.dynamodb

        def land_and_lose_the_answer(request, **_):
            item = json.loads(request.body)["Item"]
            if "answer" in item:
                dynamodb.put_item(TableName=os.environ["CHAT_TABLE_NAME"], Item=item)
                raise ConnectionClosedError(endpoint_url=request.url)

        def client_losing_put_answers():
            client = make_client()
            client.meta.events.register_first("before-send.dynamodb.PutItem", land_and_lose_the_answer)
            return client

        monkeypatch.setattr(clients, "dynamodb", client_losing_put_answers)

        response = api.http.get("/chat?sessionid=s&query=hello")

        assert response.status_code == 200, response.json_body
        assert len(stored_items(dynamodb, "s")) == 1

    @pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "InternalServerError"])
    def test_a_transient_history_failure_is_a_503_with_retry_after(self, api, monkeypatch, dynamodb, code):
        from chalicelib import clients

        make_client = clients.dynamodb

        def failing_client():
            client = make_client()
            status = 500 if code == "InternalServerError" else 400
            client.meta.events.register_first("before-send.dynamodb.Query", lambda **_: aws_response(
                http_response(status, {"__type": code, "message": "try later"}, {"x-amzn-ErrorType": code})))
            return client

        monkeypatch.setattr(clients, "dynamodb", failing_client)

        response = api.http.get("/chat?sessionid=s&query=hello")

        assert (response.status_code, response.json_body["error"]) == (503, "history_unavailable")
        assert response.headers["Retry-After"] == "5"
        assert stored_items(dynamodb, "s") == []


def gateway_pages(gateway, session):
    """Every message of the session through the gateway, following `next`."""
    messages, query = [], {"limit": 50}
    while True:
        _, page = gateway("GET", f"/sessions/{session}/messages?{urlencode(query)}")
        messages += page["messages"]
        if "next" not in page:
            return messages
        query["after"] = page["next"]


def test_16_threads_posting_to_one_session_lose_no_message(gateway):
    queries = [f"thread {t} message {m}" for t in range(16) for m in range(5)]
    start = threading.Barrier(16)

    def post_all(thread):
        start.wait()
        return [
            gateway("POST", "/chat", json.dumps({"sessionid": "shared", "query": q}).encode(), JSON)
            for q in queries[thread * 5:(thread + 1) * 5]
        ]

    with ThreadPoolExecutor(16) as pool:
        responses = [r for batch in pool.map(post_all, range(16)) for r in batch]

    assert [status for status, _ in responses] == [200] * 80
    answered = {body["answer"].split(" to: ")[1] for _, body in responses}
    assert answered == set(queries)  # every answer belongs to its own request
    stored = gateway_pages(gateway, "shared")
    assert sorted(m["content"] for m in stored if m["role"] == "user") == sorted(queries)
    assert len(stored) == 160


def test_16_threads_sending_one_turn_store_it_once(gateway, endpoint):
    body = json.dumps({"sessionid": "shared", "query": "once", "turn": "the-turn"}).encode()
    start = threading.Barrier(16)

    def send(_):
        start.wait()
        return gateway("POST", "/chat", body, JSON)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, range(16)))

    statuses = sorted(status for status, _ in responses)
    assert set(statuses) <= {200, 409} and 200 in statuses
    assert len(endpoint.requests) == 1
    assert len({body["answer"] for status, body in responses if status == 200}) == 1
    _, stored = gateway("GET", "/sessions/shared/messages")
    assert [m["content"] for m in stored["messages"]][0::2] == ["once"]


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
