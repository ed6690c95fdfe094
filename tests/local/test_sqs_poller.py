"""The local SNS -> SQS -> worker path: a real moto server on 127.0.0.1, the queue and DLQ as
`make run` creates them, and the poller invoking a tiny Chalice app's on_sqs_message handler."""

import hashlib
import logging
import re
import threading
import time
import urllib.request

import boto3
import pytest
from chalice import Chalice

from local.messaging import MAX_RECEIVE_COUNT, create_turns_queue, topic_has_subscribers
from local.settings import ACCOUNT_ID, REGION
from local.sqs_poller import SqsPoller

QUEUE_NAME = "turns-test"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:turns-test"


@pytest.fixture
def aws(moto_url, monkeypatch):
    """SNS and SQS clients of a freshly reset moto server, with the topic, queue and DLQ made as
    `make run` makes them, but a 1 s visibility timeout so that retries come quickly."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_url)
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    return sns, sqs, create_turns_queue(sns, sqs, TOPIC_ARN, QUEUE_NAME, visibility_timeout=1)


def worker_app(records: list) -> Chalice:
    """Records every record it gets; fails on a body of "fail"."""
    app = Chalice(app_name="poller-test")

    @app.on_sqs_message(queue=QUEUE_NAME, batch_size=1)
    def worker(event):
        for record in event:
            records.append((time.monotonic(), record.to_dict()))
            if record.body == "fail":
                raise RuntimeError("the worker failed")

    return app


@pytest.fixture
def records():
    return []


@pytest.fixture
def poller(aws, records):
    _, sqs, _ = aws
    poller = SqsPoller(worker_app(records), sqs, wait_seconds=1)
    stop = threading.Event()
    threads = poller.run(stop, queue_timeout=5)
    yield poller
    stop.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def queue_counts(sqs, url) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_published_turn_reaches_the_worker_as_lambda_delivers_it_and_is_deleted(aws, poller, records):
    sns, sqs, queue = aws
    body = '{"sessionid": "s1", "query": "Bonjour ✓", "turn": "t1"}'
    sns.publish(TopicArn=TOPIC_ARN, Message=body,
                MessageAttributes={"kind": {"DataType": "String", "StringValue": "turn"}})
    wait_for(lambda: records, 10)
    time.sleep(1.5)  # past the visibility timeout: a message left behind would come again

    assert len(records) == 1
    record = records[0][1]
    assert record["body"] == body  # raw delivery: no SNS envelope
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue.queue_arn == f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{QUEUE_NAME}"
    assert record["awsRegion"] == REGION
    assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()
    assert record["messageId"] and record["receiptHandle"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"} <= set(record["attributes"])
    assert record["messageAttributes"]["kind"] == {"stringValue": "turn", "binaryValue": None,
                                                   "stringListValues": [], "binaryListValues": [],
                                                   "dataType": "String"}
    assert queue_counts(sqs, queue.queue_url) == (0, 0)


def test_a_failing_turn_is_retried_then_moved_to_the_dead_letter_queue(aws, poller, records):
    sns, sqs, queue = aws
    sns.publish(TopicArn=TOPIC_ARN, Message="fail")
    wait_for(lambda: len(records) == MAX_RECEIVE_COUNT, 15)
    wait_for(lambda: queue_counts(sqs, queue.dead_letter_queue_url)[0] == 1, 10)

    counts = [record["attributes"]["ApproximateReceiveCount"] for _, record in records]
    assert counts == ["1", "2", "3"]
    assert len({record["messageId"] for _, record in records}) == 1
    gaps = [later - earlier for (earlier, _), (later, _) in zip(records, records[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps)  # each retry waited for the visibility timeout
    assert queue_counts(sqs, queue.queue_url) == (0, 0)
    dead = sqs.receive_message(QueueUrl=queue.dead_letter_queue_url)["Messages"]
    assert [message["Body"] for message in dead] == ["fail"]
    time.sleep(1.5)
    assert len(records) == MAX_RECEIVE_COUNT  # nothing more once it is in the DLQ


def test_a_good_turn_is_not_held_up_by_a_failing_one(aws, poller, records):
    sns, _, _ = aws
    sns.publish(TopicArn=TOPIC_ARN, Message="fail")
    sns.publish(TopicArn=TOPIC_ARN, Message="ok")
    wait_for(lambda: any(record["body"] == "ok" for _, record in records), 10)


def test_each_invocation_is_one_line_of_the_log_without_the_message(aws, poller, records, caplog):
    caplog.set_level(logging.INFO, logger="sqs-poller")
    sns, _, _ = aws
    sns.publish(TopicArn=TOPIC_ARN, Message="a question of mine")
    sns.publish(TopicArn=TOPIC_ARN, Message="fail")
    wait_for(lambda: {"a question of mine", "fail"} <= {record["body"] for _, record in records}, 10)
    wait_for(lambda: "worker failed on" in caplog.text, 10)

    lines = [record.getMessage() for record in caplog.records if record.name == "sqs-poller"]
    assert [line for line in lines if re.fullmatch(r"worker handled 1 message\(s\) in \d+\.\d\d s", line)]
    assert [line for line in lines if re.match(r"worker failed on \['[\w-]+'\] after \d+\.\d\d s; the queue", line)]
    assert "a question of mine" not in caplog.text


def test_the_topic_has_subscribers_once_the_queue_subscribes(aws):
    sns, sqs, _ = aws
    other_topic = sns.create_topic(Name="not-subscribed")["TopicArn"]

    assert topic_has_subscribers(sns, TOPIC_ARN)
    assert not topic_has_subscribers(sns, other_topic)
    assert not topic_has_subscribers(sns, TOPIC_ARN.replace("turns-test", "missing-topic"))


def test_the_topic_arn_must_be_the_local_one(aws):
    sns, sqs, _ = aws
    with pytest.raises(ValueError, match="region and account must be the local ones"):
        create_turns_queue(sns, sqs, "arn:aws:sns:eu-west-1:111122223333:turns", "other", 1)


def test_the_poller_waits_for_its_queue_and_gives_up_clearly(aws, caplog):
    caplog.set_level(logging.INFO, logger="sqs-poller")
    _, sqs, _ = aws
    app = Chalice(app_name="no-queue")
    app.on_sqs_message(queue="missing-queue")(lambda event: None)
    with pytest.raises(TimeoutError, match="queue missing-queue does not exist"):
        SqsPoller(app, sqs).run(threading.Event(), queue_timeout=0.5)
    assert "waits for its queue missing-queue" in caplog.text


def test_turns_are_answered_at_once_up_to_the_event_sources_maximum_concurrency(aws):
    """As Lambda runs up to the event source's MaximumConcurrency functions at once: with 3, three
    turns are inside the worker together, and a fourth waits in the queue until one ends."""
    sns, sqs, queue = aws
    inside, most_inside, lock = set(), [0], threading.Lock()
    all_three_inside, let_them_go = threading.Event(), threading.Event()
    app = Chalice(app_name="concurrent-poller-test")

    @app.on_sqs_message(queue=QUEUE_NAME, batch_size=1, maximum_concurrency=3)
    def worker(event):
        for record in event:
            with lock:
                inside.add(record.body)
                most_inside[0] = max(most_inside[0], len(inside))
                if len(inside) == 3:
                    all_three_inside.set()
            let_them_go.wait(30)
            with lock:
                inside.discard(record.body)

    stop = threading.Event()
    threads = SqsPoller(app, sqs, wait_seconds=1).run(stop, queue_timeout=5)
    try:
        for number in range(4):
            sns.publish(TopicArn=TOPIC_ARN, Message=f"turn {number}")
        assert all_three_inside.wait(20), f"only {most_inside[0]} turn(s) were answered at once"
        wait_for(lambda: queue_counts(sqs, queue.queue_url) == (1, 3), 10)
        let_them_go.set()
        wait_for(lambda: queue_counts(sqs, queue.queue_url) == (0, 0), 20)
    finally:
        let_them_go.set()
        stop.set()
        for thread in threads:
            thread.join(10)

    assert len(threads) == 3 and most_inside[0] == 3
