"""The dashboard, the alarms and the alarm topic they notify."""

import json

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks
from templates import build, only

from infrastructure import stack_names
from infrastructure.chatbot_stack import ChatbotConfig

FUNCTIONS = ["llama2-chatbot-dev", "llama2-chatbot-dev-websocket_message", "llama2-chatbot-dev-turn_worker",
             "llama2-chatbot-dev-websocket_connect", "llama2-chatbot-dev-websocket_disconnect"]


@pytest.fixture(scope="module")
def mailed_stack():
    return build(ChatbotConfig(alarm_email="ops@example.com"))


def alarm(template: Template, name: str) -> dict:
    (body,) = template.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"AlarmName": f"llama2-chatbot-dev-{name}"}}
    ).values()
    return body["Properties"]


def alarm_topic_id(template: Template) -> str:
    (topic_id,) = template.find_resources("AWS::SNS::Topic", {"Properties": {"TopicName": "llama2-chatbot-dev-alarms"}})
    return topic_id


def dashboard(template: Template) -> dict:
    _, body = only(template, "AWS::CloudWatch::Dashboard")
    assert body["Properties"]["DashboardName"] == "llama2-chatbot-dev"
    # The body is a JSON string joined from parts: tokens (the DLQ's name) in between.
    parts = body["Properties"]["DashboardBody"]["Fn::Join"][1]
    joined = "".join(part if isinstance(part, str) else '"TOKEN"' for part in parts)
    return json.loads(joined.replace('""TOKEN""', '"TOKEN"'))


def test_function_names_are_chalices():
    assert stack_names.function_names("dev") == FUNCTIONS


def test_every_alarm_notifies_the_encrypted_alarm_topic(template):
    topic_id = alarm_topic_id(template)
    key_id, _ = only(template, "AWS::KMS::Key", "Turns")
    template.has_resource_properties(
        "AWS::SNS::Topic", {"TopicName": "llama2-chatbot-dev-alarms", "KmsMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]}}
    )
    alarms = [
        body["Properties"]
        for logical_id, body in template.find_resources("AWS::CloudWatch::Alarm").items()
        if logical_id.startswith("Monitoring")
    ]
    assert {a["AlarmName"] for a in alarms} == {
        f"llama2-chatbot-dev-{name}"
        for name in (
            "EndpointErrors",
            "ModelLatency",
            "FunctionErrors",
            "FunctionThrottles",
            "DeadLetters",
            "ApiErrors",
        )
    }
    for properties in alarms:
        assert properties["AlarmActions"] == [{"Ref": topic_id}]
        assert properties["TreatMissingData"] == "notBreaching"


def test_cloudwatch_may_use_the_key_to_publish_alarms(template):
    _, key = only(template, "AWS::KMS::Key", "Turns")
    (statement,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s.get("Sid") == "CloudWatchAlarms"]
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_endpoint_alarms_on_5xx_and_p90_latency_above_30_seconds(template):
    errors = alarm(template, "EndpointErrors")
    assert (errors["Namespace"], errors["MetricName"], errors["Threshold"]) == (
        "AWS/SageMaker",
        "Invocation5XXErrors",
        1,
    )
    assert errors["Dimensions"] == [
        {"Name": "EndpointName", "Value": "llama2-chatbot-dev"},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]
    latency = alarm(template, "ModelLatency")
    assert (latency["MetricName"], latency["ExtendedStatistic"], latency["Threshold"]) == (
        "ModelLatency",
        "p90",
        30_000_000,
    )


@pytest.mark.parametrize("name, metric", [("FunctionErrors", "Errors"), ("FunctionThrottles", "Throttles")])
def test_function_alarms_sum_every_chat_function(template, name, metric):
    queries = alarm(template, name)["Metrics"]
    (expression,) = [q for q in queries if "Expression" in q]
    stats = [q["MetricStat"] for q in queries if "MetricStat" in q]
    assert [s["Metric"]["Dimensions"] for s in stats] == [[{"Name": "FunctionName", "Value": f}] for f in FUNCTIONS]
    assert {(s["Metric"]["Namespace"], s["Metric"]["MetricName"], s["Stat"]) for s in stats} == {
        ("AWS/Lambda", metric, "Sum")
    }
    assert expression["Expression"] == " + ".join(f"FILL({q['Id']}, 0)" for q in queries if "MetricStat" in q)
    assert alarm(template, name)["Threshold"] == 1


def test_a_message_in_the_dead_letter_queue_alarms(template):
    (dlq_id,) = template.find_resources(
        "AWS::SQS::Queue", {"Properties": {"QueueName": "llama2-chatbot-dev-turns-dlq"}}
    )
    dead = alarm(template, "DeadLetters")
    assert (dead["MetricName"], dead["Statistic"], dead["Threshold"]) == (
        "ApproximateNumberOfMessagesVisible",
        "Maximum",
        1,
    )
    assert dead["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    assert dead["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_api_5xx_alarm_watches_chalices_rest_api(template):
    api = alarm(template, "ApiErrors")
    assert (api["Namespace"], api["MetricName"], api["Threshold"]) == ("AWS/ApiGateway", "5XXError", 5)
    assert api["Dimensions"] == [{"Name": "ApiName", "Value": "llama2-chatbot"}, {"Name": "Stage", "Value": "api"}]


def test_dashboard_shows_turns_tokens_latency_errors_endpoint_and_instances(template):
    widgets = dashboard(template)["widgets"]
    titles = [w["properties"]["title"] for w in widgets]
    assert titles == [
        "Turns and errors by code",
        "Tokens",
        "Worker retries and dead letters",
        "Time to first token (ms)",
        "Model time (ms)",
        "Functions and API",
        "Endpoint invocations",
        "Endpoint model latency (microseconds)",
        "Endpoint instances",
    ]
    text = json.dumps(widgets)
    for name in ("Turns", "PromptTokens", "CompletionTokens", "TimeToFirstToken", "ModelTime", "WorkerRetries"):
        assert f'["Llama2Chatbot", "{name}", "Stage", "dev"' in text
    assert "SEARCH('{Llama2Chatbot,Code,Stage} MetricName=\\\"Errors\\\" Stage=\\\"dev\\\"', 'Sum', 300)" in text
    assert '"stat": "p99"' in text and '"stat": "p50"' in text
    assert '["/aws/sagemaker/Endpoints", "CPUUtilization", "EndpointName", "llama2-chatbot-dev"' in text


def test_alarm_email_subscribes_only_when_given(template, mailed_stack):
    template.resource_count_is("AWS::SNS::Subscription", 1)  # the turns queue's
    Template.from_stack(mailed_stack).has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "ops@example.com", "TopicArn": {"Ref": alarm_topic_id(template)}},
    )


def test_outputs_name_the_alarm_topic_and_dashboard(template):
    template.has_output("AlarmTopicArn", {"Value": {"Ref": alarm_topic_id(template)}})
    (dashboard_id,) = template.find_resources("AWS::CloudWatch::Dashboard")
    template.has_output("DashboardName", {"Value": {"Ref": dashboard_id}})


def test_with_an_email_aws_solutions_checks_find_nothing_unacknowledged(mailed_stack):
    assert [v.rule_name for v in AwsSolutionsChecks().validate_scope(mailed_stack).violations] == []


def test_an_alarm_email_that_is_not_an_address_is_refused():
    with pytest.raises(ValueError, match=r"alarm_email='ops': not an e-mail address"):
        ChatbotConfig.from_context(cdk.App(context={"alarm_email": "ops"}).node)
