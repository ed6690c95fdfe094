"""Streaming turns end to end over `make run`'s launcher: a real WebSocket client, the local
gateway, moto's SNS and SQS, the SQS poller running the app's worker, `chalice local` and
dynalite, in their own processes, with a fake endpoint served over HTTP from this process
(so a test can make it fail, or hold its answers). Every test runs against each container the
app can speak (SERVING: TGI, vLLM), one launcher per container; each test has sessions of its own.
"""

import concurrent.futures
import json
import time
import urllib.parse
import uuid

import boto3
import pytest
from websockets.sync.client import connect

from chalicelib.token_bounds import DEFAULT_MODEL_ID, MODELS
from client.rest import call
from client.websocket import receive, send_chat
from local.containers import CONTAINERS
from local.fake_model import FakeEndpoint, StreamFault, serving
from local.launcher import Launcher
from local.net import free_port
from local.settings import stage_environment

# The fake model's pace: an answer of about 30 tokens streams for about a second,
# so a client can leave mid-answer, and the relay sends several deltas.
TOKENS_PER_SECOND = 30
# Generous, for a loaded 2-core machine: none of these is waited out when things work.
TIMEOUT = 60
LONG_QUERY = ("please tell me, in a few careful and complete sentences, why the sky looks blue at noon, "
              "red at dusk, and grey on a cloudy afternoon in late November")


class Service:
    def __init__(self, launcher: Launcher, fake: FakeEndpoint, model_server):
        self.launcher, self.fake, self.model_server = launcher, fake, model_server
        self.url = launcher.url

    def connect(self):
        return connect(self.launcher.signed_in_websocket_url(), open_timeout=TIMEOUT)

    def messages(self, sessionid: str) -> list[tuple[str, str]]:
        status, body = self.launcher.call("GET", f"/sessions/{sessionid}/messages")
        assert status == 200, body
        return [(message["role"], message["content"]) for message in body["messages"]]

    def turn_status(self, sessionid: str, turn: str) -> dict:
        return self.launcher.call("GET", f"/sessions/{sessionid}/turns/{turn}")[1]

    def settled(self, sessionid: str, turn: str) -> dict:
        """The turn's status once it is no longer pending (polled: the worker runs elsewhere)."""
        deadline = time.monotonic() + TIMEOUT
        while (status := self.turn_status(sessionid, turn))["status"] == "pending":
            assert time.monotonic() < deadline, f"turn {turn} still pending after {TIMEOUT} s"
            time.sleep(0.05)
        return status


@pytest.fixture(scope="module", params=sorted(CONTAINERS))
def service(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"streaming-{request.param}")
    limits = stage_environment()
    fake = FakeEndpoint(int(limits["MAX_INPUT_TOKENS"]), int(limits["MAX_TOTAL_TOKENS"]),
                        tokens_per_second=TOKENS_PER_SECOND, serving=request.param)
    with serving(fake) as model_server:
        launcher = Launcher(free_port(), folder / "data", folder / "run.log", SERVING=request.param,
                            AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=model_server.url)
        try:
            yield Service(launcher, fake, model_server)
        finally:
            launcher.stop()


def new_session() -> str:
    return f"e2e-{uuid.uuid4().hex}"


def test_a_turn_streams_in_deltas_and_is_stored_once(service):
    sessionid = new_session()
    with service.connect() as client:
        streamed = receive(client, send_chat(client, sessionid, "What is the capital of France?", "t-1"))
        retried = receive(client, send_chat(client, sessionid, "What is the capital of France?", "t-1"))

    assert streamed.types[0] == "accepted" and streamed.types[-1] == "done"
    assert set(streamed.types[1:-1]) == {"delta"} and len(streamed.types) >= 4  # at least two deltas
    done = streamed.last
    assert streamed.streamed_text == done["answer"]
    assert done["answer"].startswith("Answer ") and done["answer"].endswith("to: What is the capital of France?")
    assert {message["turn"] for message in streamed.messages} == {"t-1"}
    assert done["sessionid"] == sessionid and done["history_turns"] == 0
    assert done["asked_at"] <= done["answered_at"]
    assert service.messages(sessionid) == [("user", "What is the capital of France?"), ("assistant", done["answer"])]
    assert service.turn_status(sessionid, "t-1") == {"status": "done", **{k: v for k, v in done.items() if k != "type"},
                                                     "query": "What is the capital of France?"}
    # The same turn id again is a retry: the stored answer at once, and nothing stored twice.
    assert retried.messages == [done]
    assert len(service.messages(sessionid)) == 2
    config = call("GET", f"{service.url}/config")[1]
    assert config["websocket_url"] == service.launcher.websocket_url
    # An endpoint make run did not start serves MODEL_ID's model, and the page names that one.
    assert config["model"] == MODELS[DEFAULT_MODEL_ID].display_name


def test_two_turns_at_once_on_one_session_are_each_answered_on_their_own_connection(service):
    sessionid = new_session()
    queries = {"t-a": "first question, about apples", "t-b": "second question, about pears"}
    with service.connect() as first, service.connect() as second:
        connections = dict(zip(queries, (first, second), strict=True))
        sent = {turn: send_chat(connections[turn], sessionid, query, turn) for turn, query in queries.items()}
        transcripts = {turn: receive(connections[turn], sent[turn]) for turn in queries}

    for turn, transcript in transcripts.items():
        assert transcript.types[0] == "accepted" and transcript.types[-1] == "done"
        assert {message["turn"] for message in transcript.messages} == {turn}
        assert transcript.streamed_text == transcript.last["answer"]
        assert transcript.last["answer"].endswith(f"to: {queries[turn]}")
    stored = service.messages(sessionid)
    assert sorted(stored[::2]) == [("user", query) for query in queries.values()]
    assert sorted(stored[1::2]) == sorted(("assistant", t.last["answer"]) for t in transcripts.values())


def test_a_client_gone_mid_answer_still_gets_its_turn_stored(service):
    sessionid = new_session()
    with service.connect() as client:
        transcript = receive(client, send_chat(client, sessionid, LONG_QUERY, "t-gone"), until=("delta",))

    assert transcript.types == ["accepted", "delta"]
    status = service.settled(sessionid, "t-gone")
    assert status["status"] == "done" and status["answer"].endswith(f"to: {LONG_QUERY}")
    assert status["answer"].startswith(transcript.streamed_text) and status["answer"] != transcript.streamed_text
    assert service.messages(sessionid) == [("user", LONG_QUERY), ("assistant", status["answer"])]
    # The worker stopped sending at the first refusal: one line in its log, no error storm.
    assert service.launcher.log.count("turn t-gone: the client disconnected") == 1
    assert "t-gone: the answer cannot be sent" not in service.launcher.log


@pytest.mark.parametrize(("failure", "code"), [
    ("error-in-stream", "model_error"),
    (StreamFault.cut(2), "model_error"),
    (StreamFault.sagemaker(2, "InternalStreamFailure", "the stream failed"), "model_unavailable"),
], ids=["container-error-in-stream", "stream-cut", "sagemaker-stream-failure"])
def test_a_failing_model_sends_an_error_and_stores_nothing(service, failure, code):
    sessionid = new_session()
    if failure == "error-in-stream":
        failure = StreamFault.container_error(2, service.fake.container.generation_error("CUDA out of memory"))
    service.fake.fail_next(failure)
    with service.connect() as client:
        failed = receive(client, send_chat(client, sessionid, LONG_QUERY, "t-fail"))
        status = service.turn_status(sessionid, "t-fail")
        stored = service.messages(sessionid)
        retried = receive(client, send_chat(client, sessionid, LONG_QUERY, "t-fail"))

    assert failed.types[0] == "accepted" and set(failed.types[1:-1]) <= {"delta"}
    assert failed.last["type"] == "error" and failed.last["error"] == code and failed.last["turn"] == "t-fail"
    assert "CUDA" not in failed.last["message"]
    assert stored == []
    assert status["status"] == "failed" and status["error"] == code
    # The client may retry the failed turn with the same id: it is answered and stored once.
    assert retried.types[0] == "accepted" and retried.last["type"] == "done"
    assert service.messages(sessionid) == [("user", LONG_QUERY), ("assistant", retried.last["answer"])]


def test_a_redelivered_turn_message_neither_stores_nor_answers_twice(service):
    """SNS and SQS deliver at least once: the same turn message published twice."""
    endpoint_url = urllib.parse.urljoin(service.launcher.queue_url, "/")
    sns, sqs = (boto3.client(name, endpoint_url=endpoint_url) for name in ("sns", "sqs"))
    topic_arn = stage_environment()["TURNS_TOPIC_ARN"]
    # A second subscriber to the turns topic keeps a copy of what the app publishes.
    copies_url = sqs.create_queue(QueueName=f"copies-{uuid.uuid4().hex}")["QueueUrl"]
    copies_arn = sqs.get_queue_attributes(QueueUrl=copies_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=copies_arn,
                                 Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]
    sessionid = new_session()
    model_calls = len(service.fake.requests)
    try:
        with service.connect() as client:
            answered = receive(client, send_chat(client, sessionid, "count to three", "t-once"))
            published = sqs.receive_message(QueueUrl=copies_url, WaitTimeSeconds=5)["Messages"][0]["Body"]
            sns.publish(TopicArn=topic_arn, Message=published)
            drained = turns_queue_drained(sqs, service.launcher.queue_url)
            with pytest.raises(TimeoutError):
                client.recv(timeout=1)  # nothing more for this turn
    finally:
        sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=copies_url)

    assert json.loads(published)["turn"] == "t-once"
    assert answered.types[-1] == "done" and drained
    # The worker did get the second delivery, and dropped it.
    assert service.launcher.log.count("turn t-once: nothing left to do") == 1
    assert len(service.fake.requests) == model_calls + 1
    assert service.messages(sessionid) == [("user", "count to three"), ("assistant", answered.last["answer"])]


def queue_reaches(sqs, queue_url: str, **counts: int) -> bool:
    """Wait until the queue's approximate counts are these (e.g. ApproximateNumberOfMessages=0)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(counts))["Attributes"]
        if all(attributes[name] == str(count) for name, count in counts.items()):
            return True
        time.sleep(0.05)
    return False


def turns_queue_drained(sqs, queue_url: str) -> bool:
    """Wait until the worker has taken and deleted every message (none waiting, none in flight)."""
    return queue_reaches(sqs, queue_url, ApproximateNumberOfMessages=0, ApproximateNumberOfMessagesNotVisible=0)


def test_an_async_rest_turn_is_pending_then_done(service):
    sessionid = new_session()
    body = {"sessionid": sessionid, "query": "What is the capital of China?", "turn": "t-rest", "async": True}
    with service.model_server.holding_answers():
        accepted = service.launcher.call("POST", "/chat", body)
        pending = service.turn_status(sessionid, "t-rest")
    done = service.settled(sessionid, "t-rest")
    again = service.launcher.call("POST", "/chat", body)

    assert accepted == (202, {"sessionid": sessionid, "turn": "t-rest", "status": "pending"})
    assert pending == {"status": "pending", "sessionid": sessionid, "turn": "t-rest"}
    assert done["status"] == "done" and done["answer"].endswith("to: What is the capital of China?")
    assert again == (200, done)
    assert service.messages(sessionid) == [("user", "What is the capital of China?"), ("assistant", done["answer"])]


def test_a_prompt_the_endpoint_refuses_as_too_long_is_a_400_on_the_query(service):
    """Read in the container's own words (TGI's 422 inside its stream, vLLM's 400 before it): the
    app speaks the protocol make run was started with."""
    fake = service.fake
    limits = fake.max_input_tokens, fake.max_total_tokens
    fake.max_input_tokens, fake.max_total_tokens = 10, 10 + int(stage_environment().get("MAX_NEW_TOKENS", 512))
    try:
        query = urllib.parse.urlencode({"sessionid": new_session(), "query": "a question the endpoint cannot take"})
        status, body = service.launcher.call("GET", f"/chat?{query}")
        with service.connect() as client:
            streamed = receive(client, send_chat(client, new_session(), "another one it cannot take", "t-long"))
    finally:
        fake.max_input_tokens, fake.max_total_tokens = limits

    assert (status, body["error"], body["field"]) == (400, "invalid_request", "query")
    assert streamed.last["type"] == "error" and streamed.last["error"] == "invalid_request"


def test_two_streamed_turns_on_different_sessions_are_answered_at_the_same_time(service, monkeypatch):
    """make run's poller runs the worker as often at once as WORKER_CONCURRENCY lets Lambda: two
    turns are both taken by workers while the model holds its answers, then streamed together."""
    sqs = boto3.client("sqs", endpoint_url=urllib.parse.urljoin(service.launcher.queue_url, "/"))
    # Answers of 90 words, 3 s each at the fake's pace: the two streams' spans are long.
    monkeypatch.setattr(service.fake, "answer_for", lambda number, question: " ".join(["word"] * 90))
    with service.connect() as first, service.connect() as second:
        with service.model_server.holding_answers():
            sent = [send_chat(first, new_session(), "the first question", "t-first"),
                    send_chat(second, new_session(), "the second question", "t-second")]
            # Both in the workers' hands (received, not yet deleted) while the model holds them.
            taken = queue_reaches(sqs, service.launcher.queue_url, ApproximateNumberOfMessagesNotVisible=2)
        # Each connection read on its own thread, so that a message's time is when it came.
        with concurrent.futures.ThreadPoolExecutor(2) as readers:
            transcripts = list(readers.map(receive, (first, second), sent))

    assert taken, "the two turns were not in the workers' hands at once"
    spans = []
    for transcript in transcripts:
        assert transcript.last["type"] == "done" and transcript.last["answer"] == " ".join(["word"] * 90)
        deltas = [seconds for seconds, message in transcript.received if message["type"] == "delta"]
        spans.append((transcript.sent_at + deltas[0], transcript.sent_at + deltas[-1]))
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans

