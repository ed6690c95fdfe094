"""Asynchronous turns: an SNS topic the WebSocket handler and async REST publish to, an SQS queue
the Chalice worker reads (`@app.on_sqs_message`), and a dead-letter queue for turns that keep failing.

SNS -> SQS rather than SNS -> Lambda: the queue gives the worker retries with a visibility
timeout and a DLQ, which a subscription Chalice creates cannot configure.
"""

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infrastructure import stack_names

# A turn that failed this many deliveries goes to the DLQ.
MAX_RECEIVE_COUNT = 3
# AWS recommends a queue visibility timeout of six times the function timeout for a Lambda
# event source mapping, so that retries of throttled invocations do not redeliver the message.
VISIBILITY_TIMEOUT_FACTOR = 6
DEAD_LETTER_RETENTION = cdk.Duration.days(14)


class TurnsQueue(Construct):
    """The topic, the queue subscribed to it with raw delivery (the SQS body is the published
    JSON), and its DLQ, all three encrypted with one customer managed key."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: str, worker_timeout: cdk.Duration):
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the {stage} chatbot's turns (SNS, SQS) and alarms (SNS)",
            enable_key_rotation=True,
            # Turns in flight are transient; nothing needs the key after the stack is gone.
            removal_policy=cdk.RemovalPolicy.DESTROY,
            pending_window=cdk.Duration.days(7),
        )
        # Like the AWS managed keys for SNS and SQS: principals of this account may use the key
        # only through SNS and SQS, so the app's IAM policy grants sns:Publish and the queue
        # actions on the exact resources and needs no KMS statement of its own. (SNS itself,
        # delivering into the queue, is granted by the subscription below.)
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="UseThroughSnsAndSqs",
                principals=[iam.AnyPrincipal()],
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],
                conditions={
                    "StringEquals": {
                        "kms:CallerAccount": cdk.Aws.ACCOUNT_ID,
                        "kms:ViaService": [
                            f"sns.{cdk.Aws.REGION}.amazonaws.com",
                            f"sqs.{cdk.Aws.REGION}.amazonaws.com",
                        ],
                    }
                },
            )
        )
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            queue_name=stack_names.turns_dead_letter_queue_name(stage),
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=stack_names.turns_queue_name(stage),
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            visibility_timeout=cdk.Duration.seconds(worker_timeout.to_seconds() * VISIBILITY_TIMEOUT_FACTOR),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=MAX_RECEIVE_COUNT, queue=self.dead_letter_queue),
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=stack_names.turns_topic_name(stage),
            master_key=self.key,
            enforce_ssl=True,
        )
        # Adds the queue policy that lets this topic (only) send, and the key policy statement
        # that lets SNS encrypt into the queue.
        self.topic.add_subscription(subscriptions.SqsSubscription(self.queue, raw_message_delivery=True))
