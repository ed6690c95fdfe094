"""Local SNS and SQS for the turns: moto's server and the resources the CDK stack makes in AWS.

moto's server serves both services on one port and keeps nothing across restarts, so
`make run` creates them at every start (in the `api` process, before it serves): the topic
named by TURNS_TOPIC_ARN, the queue TURNS_QUEUE_NAME with a dead-letter queue after
MAX_RECEIVE_COUNT receives, and a raw-delivery subscription of the queue to the topic.
moto's SQS moves a message to the DLQ on the receive after its last allowed one, as SQS does.
"""

import json
import sys
from dataclasses import dataclass

MAX_RECEIVE_COUNT = 3


def moto_server_command(port: int) -> list[str]:
    """moto's server on 127.0.0.1, its access log off unless VERBOSE=1 (local/moto_server.py)."""
    return [sys.executable, "-m", "local.moto_server", "--host", "127.0.0.1", "--port", str(port)]


@dataclass(frozen=True)
class TurnsQueue:
    topic_arn: str
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str


def queue_arn(sqs, queue_url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def topic_has_subscribers(sns, topic_arn: str) -> bool:
    """Whether the topic exists and delivers somewhere: a message published before then is lost."""
    try:
        return bool(sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"])
    except sns.exceptions.NotFoundException:
        return False


def create_turns_queue(sns, sqs, topic_arn: str, queue_name: str, visibility_timeout: int) -> TurnsQueue:
    """Create the topic, the queue and its DLQ, and subscribe the queue to the topic.

    `visibility_timeout` is how long a received message stays hidden, so when the worker fails it
    is delivered again after that long; Lambda requires at least the worker's timeout."""
    topic_name = topic_arn.rsplit(":", 1)[-1]
    created_arn = sns.create_topic(Name=topic_name)["TopicArn"]
    if created_arn != topic_arn:
        raise ValueError(f"TURNS_TOPIC_ARN is {topic_arn}, but the local SNS made topic {topic_name} as "
                         f"{created_arn}: its region and account must be the local ones")
    dead_letter_queue_url = sqs.create_queue(QueueName=f"{queue_name}-dlq")["QueueUrl"]
    redrive_policy = {"deadLetterTargetArn": queue_arn(sqs, dead_letter_queue_url),
                      "maxReceiveCount": MAX_RECEIVE_COUNT}
    queue_url = sqs.create_queue(QueueName=queue_name, Attributes={
        "VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": json.dumps(redrive_policy)})["QueueUrl"]
    turns_queue = TurnsQueue(topic_arn, queue_url, queue_arn(sqs, queue_url), dead_letter_queue_url)
    # Raw delivery: the queue's messages are what was published, not SNS's JSON envelope.
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=turns_queue.queue_arn,
                  Attributes={"RawMessageDelivery": "true"})
    return turns_queue
