"""The asynchronous turns' topic, queue and DLQ: delivery, retries, encryption, outputs."""

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template
from templates import build, only

from infrastructure import stack_names
from infrastructure.chatbot_stack import ChatbotConfig

QUEUE = "llama2-chatbot-dev-turns"
DEAD_LETTER_QUEUE = "llama2-chatbot-dev-turns-dlq"


def queue_id(template: Template, name: str) -> str:
    (logical_id,) = template.find_resources("AWS::SQS::Queue", {"Properties": {"QueueName": name}})
    return logical_id


def turns_topic_id(template: Template) -> str:
    (logical_id,) = template.find_resources(
        "AWS::SNS::Topic", {"Properties": {"TopicName": "llama2-chatbot-dev-turns"}}
    )
    return logical_id


def test_topic_delivers_raw_messages_to_the_queue(template):
    topic_id = turns_topic_id(template)
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {
            "Protocol": "sqs",
            "TopicArn": {"Ref": topic_id},
            "Endpoint": {"Fn::GetAtt": [queue_id(template, QUEUE), "Arn"]},
            # The worker reads the published JSON as the SQS body, not wrapped in an SNS envelope.
            "RawMessageDelivery": True,
        },
    )


def test_only_the_topic_may_send_to_the_queue(template):
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": queue_id(template, QUEUE)}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": "sqs:SendMessage",
                            "Effect": "Allow",
                            "Principal": {"Service": "sns.amazonaws.com"},
                            "Resource": {"Fn::GetAtt": [queue_id(template, QUEUE), "Arn"]},
                            "Condition": {"ArnEquals": {"aws:SourceArn": {"Ref": turns_topic_id(template)}}},
                        }
                    ]
                )
            },
        },
    )


def test_a_turn_that_fails_three_deliveries_goes_to_the_dead_letter_queue(template):
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "QueueName": QUEUE,
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [queue_id(template, DEAD_LETTER_QUEUE), "Arn"]},
                "maxReceiveCount": 3,
            },
        },
    )
    template.has_resource_properties(
        "AWS::SQS::Queue", {"QueueName": DEAD_LETTER_QUEUE, "MessageRetentionPeriod": 14 * 24 * 3600}
    )


def test_visibility_timeout_is_six_worker_timeouts(template):
    template.has_resource_properties("AWS::SQS::Queue", {"QueueName": QUEUE, "VisibilityTimeout": 6 * 300})
    short = Template.from_stack(build(ChatbotConfig(worker_timeout_seconds=120)))
    short.has_resource_properties("AWS::SQS::Queue", {"QueueName": QUEUE, "VisibilityTimeout": 720})
    assert short.to_json()["Outputs"]["WorkerTimeoutSeconds"]["Value"] == "120"


def test_topic_and_queues_are_encrypted_with_one_rotating_key(template):
    key_id, key = only(template, "AWS::KMS::Key", "Turns")
    assert key["Properties"]["EnableKeyRotation"] is True
    key_arn = {"Fn::GetAtt": [key_id, "Arn"]}
    template.has_resource_properties(
        "AWS::SNS::Topic", {"TopicName": "llama2-chatbot-dev-turns", "KmsMasterKeyId": key_arn}
    )
    queues = template.find_resources("AWS::SQS::Queue")
    assert len(queues) == 2
    assert all(queue["Properties"]["KmsMasterKeyId"] == key_arn for queue in queues.values())


def test_the_key_serves_sns_and_account_principals_only_through_sns_and_sqs(template):
    _, key = only(template, "AWS::KMS::Key", "Turns")
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    # SNS delivering into the encrypted queue.
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Resource": "*",
    } in statements
    (through,) = [s for s in statements if s.get("Sid") == "UseThroughSnsAndSqs"]
    assert through["Principal"] == {"AWS": "*"}
    assert through["Action"] == ["kms:GenerateDataKey*", "kms:Decrypt"]
    conditions = through["Condition"]["StringEquals"]
    assert conditions["kms:CallerAccount"] == {"Ref": "AWS::AccountId"}
    assert conditions["kms:ViaService"] == [
        {"Fn::Join": ["", ["sns.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]},
        {"Fn::Join": ["", ["sqs.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]},
    ]


def test_topic_and_queues_refuse_requests_without_tls(template):
    insecure = {"Bool": {"aws:SecureTransport": "false"}}
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with([Match.object_like({"Effect": "Deny", "Condition": insecure})])
            }
        },
    )
    for name in (QUEUE, DEAD_LETTER_QUEUE):
        template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": queue_id(template, name)}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [Match.object_like({"Action": "sqs:*", "Effect": "Deny", "Condition": insecure})]
                    )
                },
            },
        )


def test_outputs_name_the_topic_queues_and_worker_timeout(template):
    topic_id = turns_topic_id(template)
    queue, dead_letter_queue = queue_id(template, QUEUE), queue_id(template, DEAD_LETTER_QUEUE)
    expected = {
        "TurnsTopicArn": {"Ref": topic_id},
        "TurnsQueueName": {"Fn::GetAtt": [queue, "QueueName"]},
        "TurnsQueueArn": {"Fn::GetAtt": [queue, "Arn"]},
        "TurnsDeadLetterQueueName": {"Fn::GetAtt": [dead_letter_queue, "QueueName"]},
        "TurnsDeadLetterQueueArn": {"Fn::GetAtt": [dead_letter_queue, "Arn"]},
        "WorkerTimeoutSeconds": "300",
    }
    for key, value in expected.items():
        template.has_output(key, {"Value": value})
    assert stack_names.ENVIRONMENT_OUTPUTS["TURNS_TOPIC_ARN"] == "TurnsTopicArn"
    assert stack_names.ENVIRONMENT_OUTPUTS["TURNS_QUEUE_NAME"] == "TurnsQueueName"


@pytest.mark.parametrize("seconds", ["0", "901"])
def test_a_worker_timeout_lambda_cannot_have_is_refused(seconds):
    with pytest.raises(ValueError, match=rf"worker_timeout_seconds={seconds}: must be from 1 to 900"):
        ChatbotConfig.from_context(cdk.App(context={"worker_timeout_seconds": seconds}).node)
