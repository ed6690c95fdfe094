"""make cost against moto's server CloudWatch on 127.0.0.1: metrics put, then read back as dollars;
and docs/cost.md's cost table as `infrastructure/cost.py` computes it."""

import datetime
import json
import re
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infrastructure import cost, stack_names  # noqa: E402
from local.messaging import moto_server_command  # noqa: E402
from local.net import free_port  # noqa: E402
from tests.servers import running  # noqa: E402

STAGE = "dev"
END = datetime.datetime(2026, 11, 24, tzinfo=datetime.UTC)
WEBSOCKET_API_ID = "wxyz5678gh"


@pytest.fixture(scope="module")
def endpoint():
    port = free_port()
    with running(moto_server_command(port), f"http://127.0.0.1:{port}/moto-api/"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Fake credentials and no instance metadata: nothing here can reach AWS."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def clients(endpoint):
    """CloudWatch and DynamoDB of a freshly reset moto server, with the stage's table."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
    cloudwatch = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1")
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    dynamodb.create_table(
        TableName=stack_names.table_name(STAGE),
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return cloudwatch, dynamodb


def put(cloudwatch, namespace, name, dimensions, values, when):
    """Values of one metric at one time (each a sample, as services send them)."""
    cloudwatch.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                "Timestamp": when,
                "Values": values,
                "Counts": [1] * len(values),
            }
        ],
    )


def test_a_month_of_metrics_becomes_dollars_per_component(clients):
    cloudwatch, dynamodb = clients
    day = END - datetime.timedelta(days=3)
    app = {"Stage": STAGE}
    put(cloudwatch, stack_names.APP_METRICS_NAMESPACE, "Turns", app, [1] * 40, day)
    put(cloudwatch, stack_names.APP_METRICS_NAMESPACE, "Turns", app, [1] * 10, day + datetime.timedelta(hours=5))
    put(cloudwatch, stack_names.APP_METRICS_NAMESPACE, "PromptTokens", app, [1500] * 50, day)
    put(cloudwatch, stack_names.APP_METRICS_NAMESPACE, "CompletionTokens", app, [250] * 50, day)
    put(cloudwatch, stack_names.APP_METRICS_NAMESPACE, "ModelTime", app, [9000] * 50, day)
    # One CPU sample a minute per instance: 600 samples are 10 instance hours.
    variant = {"EndpointName": stack_names.endpoint_name(STAGE), "VariantName": stack_names.VARIANT_NAME}
    for hour in range(10):
        when = day + datetime.timedelta(hours=hour)
        put(cloudwatch, "/aws/sagemaker/Endpoints", "CPUUtilization", variant, [3.0] * 60, when)
    worker = stack_names.function_names(STAGE)[2]
    put(cloudwatch, "AWS/Lambda", "Invocations", {"FunctionName": worker}, [50], day)
    put(cloudwatch, "AWS/Lambda", "Duration", {"FunctionName": worker}, [10_000] * 50, day)
    put(cloudwatch, "AWS/ApiGateway", "Count", {"ApiName": stack_names.APP_NAME, "Stage": "api"}, [100], day)
    websocket = {"ApiId": WEBSOCKET_API_ID, "Stage": "api"}
    put(cloudwatch, "AWS/ApiGateway", "MessageCount", websocket, [9000], day)
    put(cloudwatch, "AWS/ApiGateway", "ConnectCount", websocket, [20], day)
    table = {"TableName": stack_names.table_name(STAGE)}
    put(cloudwatch, "AWS/DynamoDB", "ConsumedReadCapacityUnits", table, [100], day)
    put(cloudwatch, "AWS/DynamoDB", "ConsumedWriteCapacityUnits", table, [300], day)
    topic = {"TopicName": stack_names.turns_topic_name(STAGE)}
    put(cloudwatch, "AWS/SNS", "NumberOfMessagesPublished", topic, [50], day)
    put(cloudwatch, "AWS/SQS", "NumberOfEmptyReceives", {"QueueName": stack_names.turns_queue_name(STAGE)}, [1000], day)
    put(cloudwatch, "AWS/Logs", "IncomingBytes", {"LogGroupName": f"/aws/lambda/{worker}"}, [2e6], day)
    # Outside the 30 days, and another stage: not counted.
    put(cloudwatch, stack_names.APP_METRICS_NAMESPACE, "Turns", app, [1] * 99, END - datetime.timedelta(days=31))
    put(cloudwatch, stack_names.APP_METRICS_NAMESPACE, "Turns", {"Stage": "prod"}, [1] * 99, day)
    cloudwatch.put_metric_alarm(
        AlarmName=f"{stack_names.stack_name(STAGE)}-ApiErrors", MetricName="5XXError", Namespace="AWS/ApiGateway",
        Statistic="Sum", Period=300, EvaluationPeriods=1, Threshold=5, ComparisonOperator="GreaterThanThreshold",
    )

    measured = cost.measure(
        cloudwatch, dynamodb, STAGE, end=END, memory_gb=0.5, websocket_api_id=WEBSOCKET_API_ID, monthly_users=3
    )

    usage = measured.usage
    assert (measured.turns, measured.prompt_tokens, measured.completion_tokens) == (50, 75_000, 12_500)
    assert usage["instance_hours"] == pytest.approx(10)
    assert measured.model_hours == pytest.approx(50 * 9 / 3600)
    assert usage["lambda_requests"] == 50
    assert usage["lambda_gb_seconds"] == pytest.approx(50 * 10 * 0.5)
    assert usage["rest_requests"] == 100
    assert (usage["websocket_messages"], usage["websocket_connection_minutes"]) == (9000, 200)
    assert (usage["dynamodb_read_units"], usage["dynamodb_write_units"]) == (100, 300)
    assert (usage["sns_publishes"], usage["sqs_requests"]) == (50, 1000)
    assert usage["log_gb"] == pytest.approx(0.002)
    assert usage["alarm_metrics"] == 1
    # Four app metrics of the stage, sent in 2 of the 720 hours.
    assert usage["custom_metrics"] == pytest.approx(4 * 2 / 720)

    dollars = cost.bill(usage)
    assert dollars["SageMaker instance"] == pytest.approx(10 * 1.515)
    assert dollars["Lambda"] == pytest.approx(50 * 0.2e-6 + 250 * 0.0000166667)
    assert dollars["API Gateway WebSocket"] == pytest.approx(9000e-6 + 200 * 0.25e-6)
    assert dollars["CloudWatch"] == pytest.approx(3 + 0.1 + 0.3 * 4 * 2 / 720 + 0.5 * 0.002)
    assert dollars["Cognito"] == 0  # within the 10,000 free monthly users

    text = cost.report(STAGE, measured)
    assert re.search(r"SageMaker instance\s+15\.15 \$", text)
    assert "the model busy 1.2% of them" in text
    # docs/cost.md shows this very report.
    assert text in (ROOT / "docs" / "cost.md").read_text()


def test_make_cost_reports_a_missing_table_and_exits_1(endpoint, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    (tmp_path / "config.json").write_text('{"lambda_memory_size": 512}')
    assert cost.main(["--stage", "nosuchstage", "--chalice-dir", str(tmp_path), "--region", "us-east-1"]) == 1
    assert "error:" in capsys.readouterr().err


def test_the_documented_cost_table_is_the_one_cost_py_computes():
    documented = (ROOT / "docs" / "cost.md").read_text()
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert cost.table(cost.lambda_memory_gb(config, "prod")) in documented
    assert f"read on {cost.PRICES_READ}" in documented
    for price in cost.PRICES.values():
        assert price.source in documented


def test_a_price_without_a_component_or_a_usage_without_a_price_is_refused():
    assert {line for lines in cost.COMPONENTS.values() for line in lines} == set(cost.PRICES)
    with pytest.raises(ValueError, match="no price for"):
        cost.bill({"gpu_minutes": 1})


def test_scale_to_zero_bills_each_conversation_its_wake_up_and_idle_period():
    assert cost.instance_hours("scale to zero", 0) == 0
    assert cost.instance_hours("scale to zero", 1000) == pytest.approx(100 * (5 + 10 + 15) / 60)
    assert cost.instance_hours("scale to zero", 100_000) == cost.HOURS_A_MONTH
    assert cost.instance_hours("schedule", 5) == 220
    with pytest.raises(ValueError, match="unknown option"):
        cost.instance_hours("sometimes", 1)
