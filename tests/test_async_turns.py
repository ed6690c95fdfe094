"""Asynchronous turns in-process: the WebSocket message handler and `POST /chat {"async": true}`
hand turns to SNS (moto), whose subscribed SQS queue (moto) feeds the `on_sqs_message` worker,
which streams the answer to the connection through botocore's real `apigatewaymanagementapi`
client. The management API is answered inside botocore, as the fake model is.
"""

import json
import time
from types import SimpleNamespace

import boto3
import pytest

from chalicelib import deadline, services, worker
from local.fake_model import StreamFault, aws_response, http_response
from local.identity import USER
from local.tgi import TgiError
from tests.conftest import stored_items

DOMAIN, STAGE = "abc123.execute-api.us-east-1.amazonaws.com", "api"


class Connections:
    """The @connections API as API Gateway answers it: what each connection received, and
    410 GoneException once a connection is closed."""

    def __init__(self):
        self.received: dict[str, list[dict]] = {}
        self.closed: set[str] = set()
        self.posts_after_close = 0

    def client(self, service_name, **kwargs):
        import botocore.session

        client = botocore.session.get_session().create_client(service_name, **kwargs)
        client.meta.events.register_first("before-send.apigatewaymanagementapi", self._answer)
        return client

    def _answer(self, request, **_):
        assert request.url.startswith(f"https://{DOMAIN}/{STAGE}/@connections/")
        connection = request.url.rsplit("/", 1)[1]
        if connection in self.closed:
            self.posts_after_close += 1
            return aws_response(http_response(410, {"message": "Gone"}, {"x-amzn-ErrorType": "GoneException"}))
        if request.method == "DELETE":  # DeleteConnection: the service closes the socket
            self.closed.add(connection)
            return aws_response(http_response(204, {}))
        self.received.setdefault(connection, []).append(json.loads(request.body))
        return aws_response(http_response(200, {}))

    def types(self, connection):
        return [message["type"] for message in self.received.get(connection, [])]


@pytest.fixture
def turns(api, settings_env, monkeypatch):
    """The turns topic and queue in moto, the app configured to use them; every WebSocket
    connection is USER's, bound as `$connect` binds it (tests/test_auth_app.py tests `$connect`)."""
    from app import app

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="turns")["TopicArn"]
    # Visibility 0: a message not deleted is delivered again at once.
    queue_url = sqs.create_queue(QueueName="turns", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    settings_env.setenv("TURNS_TOPIC_ARN", topic)
    settings_env.setenv("TURNS_QUEUE_NAME", "turns")
    services.handover.cache_clear()
    connections = Connections()
    monkeypatch.setattr(app.websocket_api, "session", connections)
    monkeypatch.setattr(app.websocket_api, "_client", None)
    monkeypatch.setattr(app.websocket_api, "_endpoint", None)

    class Turns:
        def __init__(self):
            self.connections = connections
            self.queue_url = queue_url
            self.delivered: list[dict] = []

        def send(self, connection, body, token_expires_in=3600):
            """A message on `connection`, signed in as USER with a token expiring in `token_expires_in` s."""
            services.connections().open(connection, USER, token_expires_at=time.time() + token_expires_in)
            event = {
                "requestContext": {
                    "routeKey": "$default", "eventType": "MESSAGE", "connectionId": connection,
                    "domainName": DOMAIN, "stage": STAGE, "apiId": "abc123",
                },
                "body": body if isinstance(body, str) else json.dumps(body),
                "isBase64Encoded": False,
            }
            return api.lambda_.invoke("websocket_message", event)

        def take(self, count):
            """`count` messages taken by workers still at them (received, neither deleted nor visible)."""
            return sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=count, VisibilityTimeout=300)["Messages"]

        def work(self, redeliver=False):
            """Run the worker on every message in the queue, as Lambda's event source mapping does."""
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            for message in messages:
                self.delivered.append(message)
                api.lambda_.invoke("turn_worker", api.events.generate_sqs_event(
                    message_bodies=[message["Body"]], queue_name="turns"))
                if not redeliver:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            return len(messages)

    yield Turns()
    services.handover.cache_clear()


def chat(sessionid="s", query="hello", turn="t-1"):
    return {"action": "chat", "sessionid": sessionid, "query": query, "turn": turn}


def test_a_websocket_turn_is_accepted_streamed_and_stored_once(turns, dynamodb):
    turns.send("conn-1", chat())
    assert turns.connections.types("conn-1") == ["accepted"]

    assert turns.work() == 1

    messages = turns.connections.received["conn-1"]
    kinds = [message["type"] for message in messages]
    assert kinds[0] == "accepted" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}
    done = messages[-1]
    assert "".join(m["text"] for m in messages if m["type"] == "delta") == done["answer"]
    assert done["answer"] == "Answer 1 to: hello"
    assert {m["turn"] for m in messages} == {"t-1"} and done["sessionid"] == "s"
    assert done["history_turns"] == 0 and done["asked_at"] <= done["answered_at"]
    assert [m["content"] for m in turns_messages(dynamodb)] == ["hello", "Answer 1 to: hello"]


def turns_messages(dynamodb, session="s"):
    return [
        {"content": item[field]["S"]}
        for item in sorted(stored_items(dynamodb, session), key=lambda item: item["turn"]["S"])
        if "query" in item
        for field in ("query", "answer")
    ]


def test_a_redelivered_message_neither_stores_nor_answers_twice(turns, dynamodb, endpoint):
    turns.send("conn-1", chat())
    turns.work(redeliver=True)  # answered, but the delivery's end was lost: SQS delivers it again
    answered = list(turns.connections.received["conn-1"])

    assert turns.work() == 1
    assert turns.delivered[0]["MessageId"] == turns.delivered[1]["MessageId"]
    assert turns.connections.received["conn-1"] == answered
    assert len(endpoint.requests) == 1 and len(turns_messages(dynamodb)) == 2


def test_a_malformed_message_gets_an_error_and_nothing_is_stored(turns, dynamodb, endpoint):
    turns.send("conn-1", "not json")
    turns.send("conn-1", {"action": "dance", "sessionid": "s", "query": "hi"})
    turns.send("conn-1", chat(query="   "))

    errors = turns.connections.received["conn-1"]
    assert [m["type"] for m in errors] == ["error"] * 3
    assert [m["error"] for m in errors] == ["invalid_request"] * 3
    assert errors[1]["field"] == "action" and errors[2]["field"] == "query"
    assert turns.work() == 0 and endpoint.requests == [] and stored_items(dynamodb, "s") == []


def test_a_failing_model_sends_an_error_and_stores_nothing(turns, dynamodb, endpoint, api):
    endpoint.fail_next(StreamFault.container_error(2, TgiError(500, "CUDA out of memory", "generation")))
    turns.send("conn-1", chat())
    turns.work()

    last = turns.connections.received["conn-1"][-1]
    assert last["type"] == "error" and last["error"] == "model_error" and last["turn"] == "t-1"
    assert "CUDA" not in last["message"]
    assert stored_items(dynamodb, "s")[0]["turn"]["S"] == "#t-1"  # the claim alone, which records the failure
    status = api.http.get("/sessions/s/turns/t-1").json_body
    assert status["status"] == "failed" and status["error"] == "model_error"


def test_a_client_gone_mid_answer_still_gets_its_turn_stored(turns, dynamodb, endpoint):
    turns.send("conn-1", chat(query="a question with a few more words in it"))
    turns.connections.closed.add("conn-1")

    turns.work()

    assert turns.connections.posts_after_close == 1  # the first refusal stops the sending
    assert len(turns_messages(dynamodb)) == 2


def test_the_workers_deadline_is_what_its_lambda_has_left_less_the_margin(turns, api, dynamodb, monkeypatch):
    """Chalice never sets `app.lambda_context` for an SQS handler: the time left comes from the
    event's own context, so the worker reports a failure before Lambda stops it."""
    from app import app

    monkeypatch.setattr(deadline, "clock", lambda: 1000.0)  # time stands still: remaining() is exact
    answer, seen = worker.answer, []

    def answer_noting_the_deadline(*args):
        seen.append(deadline.current().remaining())
        return answer(*args)

    monkeypatch.setattr(worker, "answer", answer_noting_the_deadline)
    context = SimpleNamespace(aws_request_id="r-1", get_remaining_time_in_millis=lambda: 42_000)
    turns.send("conn-1", chat())
    message = boto3.client("sqs").receive_message(QueueUrl=turns.queue_url)["Messages"][0]

    app.handler_map["turn_worker"](api.events.generate_sqs_event(message_bodies=[message["Body"]]), context)

    assert seen == [42 - deadline.LAMBDA_MARGIN_SECONDS]  # not WORKER_TIMEOUT_SECONDS, Lambda's own timeout
    assert turns.connections.types("conn-1")[-1] == "done" and len(turns_messages(dynamodb)) == 2


def test_async_post_answers_202_and_the_turn_status_follows_it(turns, api, endpoint):
    body = json.dumps({"sessionid": "s", "query": "hello", "turn": "t-9", "async": True})
    accepted = api.http.post("/chat", headers={"content-type": "application/json"}, body=body)

    assert accepted.status_code == 202
    assert accepted.json_body == {"sessionid": "s", "turn": "t-9", "status": "pending"}
    assert api.http.get("/sessions/s/turns/t-9").json_body == {"status": "pending", "sessionid": "s", "turn": "t-9"}

    turns.work()

    done = api.http.get("/sessions/s/turns/t-9").json_body
    assert done["status"] == "done" and done["answer"] == "Answer 1 to: hello" and done["turn"] == "t-9"
    again = api.http.post("/chat", headers={"content-type": "application/json"}, body=body)
    assert again.status_code == 200 and again.json_body == done
    assert turns.work() == 0 and len(endpoint.requests) == 1


def test_an_unknown_turn_is_a_404(turns, api):
    response = api.http.get("/sessions/s/turns/never")

    assert response.status_code == 404 and response.json_body["error"] == "not_found"


def test_without_a_topic_async_turns_are_a_503_and_nothing_is_claimed(api, dynamodb):
    body = json.dumps({"sessionid": "s", "query": "hello", "async": True})
    response = api.http.post("/chat", headers={"content-type": "application/json"}, body=body)

    assert response.status_code == 503 and response.json_body["error"] == "turns_unavailable"
    assert stored_items(dynamodb, "s") == []


def test_a_prompt_refused_as_too_long_in_the_stream_is_asked_again_with_a_smaller_window(turns, api, endpoint):
    for number in range(6):
        api.http.get(f"/chat?sessionid=s&query=turn+{number}+" + "word+" * 40)
    endpoint.max_input_tokens = 1000  # stricter than the settings the app budgets with

    turns.send("conn-1", chat(query="last"))
    turns.work()

    too_long, retried = endpoint.requests[-2:]
    assert too_long["stream"] and retried["stream"]
    assert len(retried["messages"]) < len(too_long["messages"])
    messages = turns.connections.received["conn-1"]
    done = messages[-1]
    assert done["type"] == "done" and done["history_turns"] == (len(retried["messages"]) - 2) // 2
    assert "".join(m["text"] for m in messages if m["type"] == "delta") == done["answer"]


def test_a_fault_of_the_worker_tells_the_client_and_leaves_the_message_to_be_retried(turns, monkeypatch):
    from chalicelib.chat import ChatService

    def broken(*_, **__):
        raise RuntimeError("a bug")

    turns.send("conn-1", chat())
    monkeypatch.setattr(ChatService, "continue_turn", broken)

    with pytest.raises(RuntimeError):
        turns.work()

    last = turns.connections.received["conn-1"][-1]
    assert last["type"] == "error" and last["error"] == "internal_error" and last["turn"] == "t-1"


def test_a_message_after_the_connections_token_expired_is_refused_and_the_socket_closed(turns, dynamodb):
    turns.send("conn-1", chat(), token_expires_in=-1)

    assert turns.connections.received["conn-1"] == [{
        "type": "error", "turn": "t-1", "error": "unauthorized",
        "message": "the token this connection signed in with has expired: connect again with a new one"}]
    assert "conn-1" in turns.connections.closed
    assert turns.work() == 0 and stored_items(dynamodb, "s") == []


def test_a_client_that_closes_on_the_refusal_first_is_no_failure_of_the_handler(turns, dynamodb, capsys,
                                                                              monkeypatch):
    """The page closes its socket on `unauthorized`; the service's own close then finds it gone."""
    answer = turns.connections._answer

    def client_closes_on_the_error(request, **kwargs):
        response = answer(request, **kwargs)
        turns.connections.closed.add("conn-1")
        return response

    monkeypatch.setattr(turns.connections, "_answer", client_closes_on_the_error)

    result = turns.send("conn-1", chat(), token_expires_in=-1)

    assert result.payload == {"statusCode": 200}  # no function error
    assert turns.connections.types("conn-1") == ["error"] and turns.connections.posts_after_close == 1
    assert "Traceback" not in capsys.readouterr().out


@pytest.mark.parametrize("frames_before_leaving", [0, 1], ids=["before accepted", "before queued"])
def test_a_client_gone_right_after_its_message_still_has_its_turn_handed_over_and_stored(
        turns, dynamodb, settings_env, monkeypatch, capsys, frames_before_leaving):
    """Every worker busy, so the handler sends `accepted` then `queued`: the client left after
    sending (after `frames_before_leaving` of them), yet the turn is published, answered and stored."""
    answer = turns.connections._answer

    def client_leaves(request, **kwargs):
        sent = turns.connections.received.get("conn-1", [])
        if request.url.endswith("/conn-1") and len(sent) == frames_before_leaving:
            turns.connections.closed.add("conn-1")
        return answer(request, **kwargs)

    monkeypatch.setattr(turns.connections, "_answer", client_leaves)
    settings_env.setenv("WORKER_CONCURRENCY", "2")
    turns.send("conn-a", chat(sessionid="a", turn="t-a"))
    turns.send("conn-b", chat(sessionid="b", turn="t-b"))
    turns.take(2)

    result = turns.send("conn-1", chat())

    assert result.payload == {"statusCode": 200}  # no function error, no internal_error
    assert turns.connections.types("conn-1") == ["accepted"][:frames_before_leaving]
    assert "Traceback" not in capsys.readouterr().out
    assert turns.work() == 1  # handed over, not left claimed until its lease ends
    assert turns_messages(dynamodb) == [{"content": "hello"}, {"content": "Answer 1 to: hello"}]


def test_beyond_the_workers_a_turn_is_told_it_waits_in_the_queue_and_how_many_are_before_it(turns, settings_env):
    """WORKER_CONCURRENCY 2, both workers busy: the next turns wait in the queue (nothing fails),
    each told how many wait before it; once a worker is free, no such message."""
    settings_env.setenv("WORKER_CONCURRENCY", "2")
    turns.send("conn-1", chat(sessionid="a", turn="t-a"))
    turns.send("conn-2", chat(sessionid="b", turn="t-b"))
    busy = turns.take(2)
    turns.send("conn-3", chat(sessionid="c", turn="t-c"))
    turns.send("conn-4", chat(sessionid="d", turn="t-d"))

    assert turns.connections.types("conn-1") == turns.connections.types("conn-2") == ["accepted"]
    queued = {"type": "status", "status": "queued"}
    assert turns.connections.received["conn-3"][1:] == [{**queued, "turn": "t-c", "ahead": 0}]
    assert turns.connections.received["conn-4"][1:] == [{**queued, "turn": "t-d", "ahead": 1}]
    assert len(busy) == 2 and turns.work() == 2  # the queued ones, answered once a worker is free
    assert turns.connections.types("conn-3")[-1] == turns.connections.types("conn-4")[-1] == "done"


def test_a_queue_that_cannot_be_read_only_leaves_the_status_out(turns, settings_env):
    settings_env.setenv("TURNS_QUEUE_NAME", "no-such-queue")
    turns.send("conn-1", chat())

    assert turns.connections.types("conn-1") == ["accepted"]
    assert turns.work() == 1 and turns.connections.types("conn-1")[-1] == "done"
