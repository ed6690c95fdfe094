"""What a stage costs a month, in dollars per component: `make cost STAGE=dev`.

`PRICES` is the one home of the prices (us-east-1 list prices, without free tiers, read on
`PRICES_READ` from the pages each price names). Two things turn usage into dollars with them:
- `measure()` reads the last 30 days of the stage's CloudWatch metrics (GetMetricData, one
  value a day per metric) and the few counts CloudWatch holds no metric for (alarms, custom
  metrics, the table's size): what the stage really used;
- `scenario()` makes the usage of a month from the per-turn assumptions in `PER_TURN`, for the
  README's table (`--table` prints it; a test holds the README to it).

The instance hours come from the endpoint's own CPU samples: SageMaker reports each instance's
CPUUtilization once a minute (`/aws/sagemaker/Endpoints`), so a day's sample count is that day's
instance minutes, whether the endpoint is always on, scheduled or scaled to zero. The same
reading counts the dashboard's "Endpoint instances".
"""

import argparse
import dataclasses
import datetime
import json
import math
import sys
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from infrastructure import stack_names
from infrastructure.capacity import TYPICAL_ANSWER_TOKENS, TYPICAL_PROMPT_TOKENS
from infrastructure.record_outputs import deployed_websocket_api

REGION = "us-east-1"
PRICES_READ = "2026-11-24"
DAYS = 30
HOURS_A_MONTH = 730
# The queue's requests, as near as its metrics tell them (they count messages, not calls).
SQS_REQUEST_METRICS = (
    "NumberOfMessagesSent", "NumberOfMessagesReceived", "NumberOfEmptyReceives", "NumberOfMessagesDeleted"
)
# Chalice's default when .chalice/config.json names no lambda_memory_size.
CHALICE_DEFAULT_MEMORY_MB = 128
# The stack's customer managed keys: the turns' (SNS, SQS, alarms) and the chat table's. Their
# requests are left out: SNS, SQS and DynamoDB each cache a key for minutes (DynamoDB per role), so
# even a busy month asks KMS some tens of thousands of times: cents, at $0.03 per 10,000.
KMS_KEYS = 2

SAGEMAKER = "https://aws.amazon.com/sagemaker/pricing/"
LAMBDA = "https://aws.amazon.com/lambda/pricing/"
API_GATEWAY = "https://aws.amazon.com/api-gateway/pricing/"
DYNAMODB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
SNS = "https://aws.amazon.com/sns/pricing/"
SQS = "https://aws.amazon.com/sqs/pricing/"
KMS = "https://aws.amazon.com/kms/pricing/"
SECRETS_MANAGER = "https://aws.amazon.com/secrets-manager/pricing/"
CLOUDWATCH = "https://aws.amazon.com/cloudwatch/pricing/"
COGNITO = "https://aws.amazon.com/cognito/pricing/"


@dataclasses.dataclass(frozen=True)
class Price:
    dollars: float
    per: str
    source: str


PRICES = {
    "instance_hours": Price(1.515, "ml.g5.2xlarge real-time inference instance-hour", SAGEMAKER),
    "lambda_requests": Price(0.20 / 1e6, "Lambda request", LAMBDA),
    "lambda_gb_seconds": Price(0.0000166667, "Lambda GB-second (x86)", LAMBDA),
    "rest_requests": Price(3.50 / 1e6, "REST API request (first 333 million)", API_GATEWAY),
    "websocket_messages": Price(1.00 / 1e6, "WebSocket message (32 KB each)", API_GATEWAY),
    "websocket_connection_minutes": Price(0.25 / 1e6, "WebSocket connection minute", API_GATEWAY),
    "dynamodb_read_units": Price(0.125 / 1e6, "DynamoDB on-demand read request unit", DYNAMODB),
    "dynamodb_write_units": Price(0.625 / 1e6, "DynamoDB on-demand write request unit", DYNAMODB),
    # Storage plus point-in-time recovery, which the stack turns on: both per GB-month.
    "dynamodb_gb": Price(0.25 + 0.20, "DynamoDB GB-month stored, with PITR", DYNAMODB),
    "sns_publishes": Price(0.50 / 1e6, "SNS publish (deliveries to SQS are free)", SNS),
    "sqs_requests": Price(0.40 / 1e6, "SQS standard request", SQS),
    "kms_keys": Price(1.00, "KMS customer managed key-month", KMS),
    "secrets": Price(0.40, "Secrets Manager secret-month", SECRETS_MANAGER),
    "dashboards": Price(3.00, "CloudWatch dashboard-month", CLOUDWATCH),
    "alarm_metrics": Price(0.10, "CloudWatch standard alarm metric-month", CLOUDWATCH),
    "custom_metrics": Price(0.30, "CloudWatch custom metric-month (prorated by the hour)", CLOUDWATCH),
    "log_gb": Price(0.50, "CloudWatch Logs GB ingested", CLOUDWATCH),
    "cognito_users": Price(0.015, "Cognito Essentials monthly active user (beyond 10,000 free)", COGNITO),
}

# Which usage lines make each component of the bill.
COMPONENTS = {
    "SageMaker instance": ("instance_hours",),
    "Lambda": ("lambda_requests", "lambda_gb_seconds"),
    "API Gateway REST": ("rest_requests",),
    "API Gateway WebSocket": ("websocket_messages", "websocket_connection_minutes"),
    "DynamoDB": ("dynamodb_read_units", "dynamodb_write_units", "dynamodb_gb"),
    "SNS + SQS": ("sns_publishes", "sqs_requests"),
    "KMS + Secrets Manager": ("kms_keys", "secrets"),
    "CloudWatch": ("dashboards", "alarm_metrics", "custom_metrics", "log_gb"),
    "Cognito": ("cognito_users",),
}
COGNITO_FREE_USERS = 10_000


def bill(usage: dict[str, float]) -> dict[str, float]:
    """Dollars per component for a month of `usage` (keys of `PRICES`)."""
    unknown = set(usage) - set(PRICES)
    if unknown:
        raise ValueError(f"no price for {sorted(unknown)}")
    charged = dict(usage, cognito_users=max(0.0, usage.get("cognito_users", 0) - COGNITO_FREE_USERS))
    return {
        component: sum(charged.get(line, 0) * PRICES[line].dollars for line in lines)
        for component, lines in COMPONENTS.items()
    }


# --- What a month costs for an assumed traffic (the README's table) -----------------------------

# One turn, as the page sends it (streamed over the WebSocket API). Llama 2 7B in fp16 on one
# A10G generates about 30 tokens/s (with TGI or vLLM; an 8B model a little less); the relay sends
# a frame at most every 50 ms.
PER_TURN = {
    "prompt_tokens": TYPICAL_PROMPT_TOKENS,
    "completion_tokens": TYPICAL_ANSWER_TOKENS,
    "model_seconds": 9.0,
    # websocket_message (validate, claim, publish) 0.3 s; turn_worker: the model plus 0.5 s.
    "lambda_invocations": 2,
    "lambda_seconds": 0.3 + 9.0 + 0.5,
    # The page's other REST calls around a turn (its conversation list, /config, messages).
    "rest_requests": 2,
    # The turn in, accepted, one delta per 50 ms of generation, done.
    "websocket_messages": 3 + 9.0 / 0.05,
    "websocket_connection_minutes": 2,
    # One strongly consistent Query of the window (about 8 KB); the turn (about 3 KB), its claim
    # written and updated, the session summary.
    "dynamodb_read_units": 2,
    "dynamodb_write_units": 3 + 2 + 1,
    "stored_kb": 5,
    "sns_publishes": 1,
    # SNS's delivery, the poller's receive, its delete.
    "sqs_requests": 3,
    "log_kb": 3,
}
# Turns come in conversations: the model wakes (scale to zero) for each one.
CONVERSATION_TURNS = 10
CONVERSATION_MINUTES = 10
WAKE_UP_MINUTES = 5
# Without a turn: the Lambda SQS poller's long polls (5 pollers, 20 s each), all month.
IDLE_SQS_REQUESTS = 5 * 3 * 60 * HOURS_A_MONTH
ALARM_METRICS = {"always on": 10, "schedule": 10, "scale to zero": 13}
APP_METRICS = 10  # Turns, tokens, times, retries, and Errors for a few codes
USERS_PER_TURNS = 0.01
SCHEDULE_HOURS = 10 * 22
OPTIONS = ("always on", "schedule", "scale to zero")


def instance_hours(option: str, turns: int, idle_minutes: int = 15) -> float:
    """One instance's hours in a month: all of them, the schedule's, or one wake-up, the
    conversation and the idle period per conversation (at most all of them)."""
    if option == "always on":
        return HOURS_A_MONTH
    if option == "schedule":
        return SCHEDULE_HOURS
    if option == "scale to zero":
        conversations = math.ceil(turns / CONVERSATION_TURNS)
        return min(HOURS_A_MONTH, conversations * (WAKE_UP_MINUTES + CONVERSATION_MINUTES + idle_minutes) / 60)
    raise ValueError(f"unknown option {option!r}: one of {', '.join(OPTIONS)}")


def scenario(option: str, turns: int, memory_gb: float, instances: int = 1) -> dict[str, float]:
    """A month's usage with `turns` turns, from `PER_TURN`, with functions of `memory_gb`, on an
    endpoint of `instances` instances."""
    per = {name: value * turns for name, value in PER_TURN.items()}
    return {
        "instance_hours": instance_hours(option, turns) * instances,
        "lambda_requests": per["lambda_invocations"],
        "lambda_gb_seconds": per["lambda_seconds"] * memory_gb,
        "rest_requests": per["rest_requests"],
        "websocket_messages": per["websocket_messages"],
        "websocket_connection_minutes": per["websocket_connection_minutes"],
        "dynamodb_read_units": per["dynamodb_read_units"],
        "dynamodb_write_units": per["dynamodb_write_units"],
        # Turns live HISTORY_TTL_DAYS (30): a month's turns are what is stored.
        "dynamodb_gb": per["stored_kb"] / 1e6,
        "sns_publishes": per["sns_publishes"],
        "sqs_requests": per["sqs_requests"] + IDLE_SQS_REQUESTS,
        "kms_keys": KMS_KEYS,
        "secrets": 1,
        "dashboards": 1,
        "alarm_metrics": ALARM_METRICS[option],
        # Metered for the hours they are sent in: at most every hour of the month.
        "custom_metrics": APP_METRICS * min(1.0, turns / HOURS_A_MONTH),
        "log_gb": per["log_kb"] / 1e6,
        "cognito_users": turns * USERS_PER_TURNS,
    }


TRAFFIC = (0, 1_000, 100_000)
# Both serving containers (docs/serving.md) run on the same instance at the same list price, and
# AWS charges nothing for a Deep Learning Container image: the bill does not depend on the choice.
# Decoding a 7-8B model in fp16 on one A10G is bound by its memory bandwidth, so a turn takes the
# model about as long with either (PER_TURN); vLLM's gain is in how many turns share an instance.
SERVING_NOTE = ("Either serving container, `serving=tgi` or `serving=vllm`, and any of the documented models on "
                "one ml.g5.2xlarge: the same instance hours at the same price (the images cost nothing).")


def table(memory_gb: float) -> str:
    """The README's cost table: one row per option and traffic, a column per component, under
    the note that it holds for both serving containers."""
    header = ["option", "turns a month", *COMPONENTS, "total"]
    rows = [SERVING_NOTE, "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for option in OPTIONS:
        for turns in TRAFFIC:
            dollars = bill(scenario(option, turns, memory_gb))
            cells = [option, f"{turns:,}", *(f"{value:,.2f}" for value in dollars.values())]
            rows.append("| " + " | ".join([*cells, f"**{sum(dollars.values()):,.2f}**"]) + " |")
    return "\n".join(rows)


# --- What the stage used (make cost) ----------------------------------------------------------


def lambda_memory_gb(chalice_config: dict, stage: str) -> float:
    """The functions' memory as Chalice gives it (the stage's value, else the top level's)."""
    stage_config = chalice_config.get("stages", {}).get(stage, {})
    default = chalice_config.get("lambda_memory_size", CHALICE_DEFAULT_MEMORY_MB)
    megabytes = stage_config.get("lambda_memory_size", default)
    return megabytes / 1024


def _queries(stage: str, websocket_api_id: str | None) -> dict[str, tuple[str, str, dict, str]]:
    """Query id -> (namespace, metric, dimensions, statistic)."""
    table = {"TableName": stack_names.table_name(stage)}
    queries = {
        "turns": (stack_names.APP_METRICS_NAMESPACE, "Turns", {"Stage": stage}, "Sum"),
        "prompt_tokens": (stack_names.APP_METRICS_NAMESPACE, "PromptTokens", {"Stage": stage}, "Sum"),
        "completion_tokens": (stack_names.APP_METRICS_NAMESPACE, "CompletionTokens", {"Stage": stage}, "Sum"),
        "model_ms": (stack_names.APP_METRICS_NAMESPACE, "ModelTime", {"Stage": stage}, "Sum"),
        "instance_minutes": (
            "/aws/sagemaker/Endpoints",
            "CPUUtilization",
            {"EndpointName": stack_names.endpoint_name(stage), "VariantName": stack_names.VARIANT_NAME},
            "SampleCount",
        ),
        "rest_requests": (
            "AWS/ApiGateway", "Count", {"ApiName": stack_names.APP_NAME, "Stage": stack_names.API_GATEWAY_STAGE}, "Sum"
        ),
        "read_units": ("AWS/DynamoDB", "ConsumedReadCapacityUnits", table, "Sum"),
        "write_units": ("AWS/DynamoDB", "ConsumedWriteCapacityUnits", table, "Sum"),
        "sns_publishes": (
            "AWS/SNS", "NumberOfMessagesPublished", {"TopicName": stack_names.turns_topic_name(stage)}, "Sum"
        ),
    }
    if websocket_api_id:
        api = {"ApiId": websocket_api_id, "Stage": stack_names.API_GATEWAY_STAGE}
        queries["websocket_messages"] = ("AWS/ApiGateway", "MessageCount", api, "Sum")
        queries["websocket_connects"] = ("AWS/ApiGateway", "ConnectCount", api, "Sum")
    queue = {"QueueName": stack_names.turns_queue_name(stage)}
    for metric in SQS_REQUEST_METRICS:
        queries[f"sqs_{metric}"] = ("AWS/SQS", metric, queue, "Sum")
    endpoint_logs = f"/aws/sagemaker/Endpoints/{stack_names.endpoint_name(stage)}"
    for index, function in enumerate(stack_names.function_names(stage)):
        queries[f"invocations_{index}"] = ("AWS/Lambda", "Invocations", {"FunctionName": function}, "Sum")
        queries[f"duration_{index}"] = ("AWS/Lambda", "Duration", {"FunctionName": function}, "Sum")
        log_group = {"LogGroupName": f"/aws/lambda/{function}"}
        queries[f"log_bytes_{index}"] = ("AWS/Logs", "IncomingBytes", log_group, "Sum")
    queries["log_bytes_endpoint"] = ("AWS/Logs", "IncomingBytes", {"LogGroupName": endpoint_logs}, "Sum")
    return queries


def _sums(cloudwatch, queries: dict, start: datetime.datetime, end: datetime.datetime, period: int) -> dict:
    """Each query's values over [start, end), one per `period` seconds: {id: [values]}."""
    request = [
        {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": namespace,
                    "MetricName": metric,
                    "Dimensions": [{"Name": name, "Value": value} for name, value in dimensions.items()],
                },
                "Period": period,
                "Stat": statistic,
            },
        }
        for query_id, (namespace, metric, dimensions, statistic) in queries.items()
    ]
    values = {query_id: [] for query_id in queries}
    pages = cloudwatch.get_paginator("get_metric_data").paginate(
        MetricDataQueries=request, StartTime=start, EndTime=end
    )
    for page in pages:
        for result in page["MetricDataResults"]:
            values[result["Id"]].extend(result["Values"])
    return values


def _alarm_metrics(cloudwatch, stage: str) -> int:
    """The stage's alarms as CloudWatch bills them: one per metric each alarm reads."""
    count = 0
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=stack_names.stack_name(stage)):
        for alarm in page["MetricAlarms"]:
            count += sum(1 for query in alarm.get("Metrics", []) if "MetricStat" in query) or 1
    return count


def _app_metrics(cloudwatch, stage: str) -> int:
    """The stage's custom metrics: each name and dimension set is one."""
    pages = cloudwatch.get_paginator("list_metrics").paginate(
        Namespace=stack_names.APP_METRICS_NAMESPACE, Dimensions=[{"Name": "Stage", "Value": stage}]
    )
    return sum(len(page["Metrics"]) for page in pages)


@dataclasses.dataclass
class Measured:
    usage: dict[str, float]
    turns: float
    prompt_tokens: float
    completion_tokens: float
    model_hours: float


def measure(
    cloudwatch,
    dynamodb,
    stage: str,
    *,
    end: datetime.datetime,
    memory_gb: float,
    websocket_api_id: str | None,
    monthly_users: int,
) -> Measured:
    """The stage's usage over the `DAYS` days before `end`, from its metrics."""
    start = end - datetime.timedelta(days=DAYS)
    queries = _queries(stage, websocket_api_id)
    daily = {query_id: sum(values) for query_id, values in _sums(cloudwatch, queries, start, end, 86400).items()}
    # Custom metrics are metered by the hour they are sent in: the hours with a turn.
    turn_hours = _sums(cloudwatch, {"turns": queries["turns"]}, start, end, 3600)["turns"]
    hours = DAYS * 24
    functions = range(len(stack_names.function_names(stage)))
    table_bytes = dynamodb.describe_table(TableName=stack_names.table_name(stage))["Table"].get("TableSizeBytes", 0)
    usage = {
        "instance_hours": daily["instance_minutes"] / 60,
        "lambda_requests": sum(daily[f"invocations_{i}"] for i in functions),
        "lambda_gb_seconds": sum(daily[f"duration_{i}"] for i in functions) / 1000 * memory_gb,
        "rest_requests": daily["rest_requests"],
        "websocket_messages": daily.get("websocket_messages", 0),
        # API Gateway has no metric of connection time: a page's connection lasts until its
        # 10 minutes idle, so count that long for each.
        "websocket_connection_minutes": daily.get("websocket_connects", 0) * 10,
        "dynamodb_read_units": daily["read_units"],
        "dynamodb_write_units": daily["write_units"],
        "dynamodb_gb": table_bytes / 1e9,
        "sns_publishes": daily["sns_publishes"],
        "sqs_requests": sum(value for key, value in daily.items() if key.startswith("sqs_")),
        "kms_keys": KMS_KEYS,
        "secrets": 1,
        "dashboards": 1,
        "alarm_metrics": _alarm_metrics(cloudwatch, stage),
        "custom_metrics": _app_metrics(cloudwatch, stage) * sum(1 for v in turn_hours if v > 0) / hours,
        "log_gb": sum(value for key, value in daily.items() if key.startswith("log_bytes_")) / 1e9,
        "cognito_users": monthly_users,
    }
    return Measured(
        usage=usage,
        turns=daily["turns"],
        prompt_tokens=daily["prompt_tokens"],
        completion_tokens=daily["completion_tokens"],
        model_hours=daily["model_ms"] / 3_600_000,
    )


def report(stage: str, measured: Measured) -> str:
    """The month in dollars per component, and what the turns were."""
    dollars = bill(measured.usage)
    total = sum(dollars.values())
    lines = [f"{stack_names.stack_name(stage)}: the last {DAYS} days in {REGION} list prices of {PRICES_READ}"]
    lines += [f"  {component:<24} {value:>10,.2f} $" for component, value in dollars.items()]
    lines.append(f"  {'total':<24} {total:>10,.2f} $")
    usage = measured.usage
    lines.append(
        f"  turns {measured.turns:,.0f}, prompt tokens {measured.prompt_tokens:,.0f}, "
        f"completion tokens {measured.completion_tokens:,.0f}"
    )
    if measured.turns:
        lines.append(f"  per turn {total / measured.turns:,.4f} $")
    if usage["instance_hours"]:
        busy = measured.model_hours / usage["instance_hours"]
        lines.append(f"  instance hours {usage['instance_hours']:,.1f}, the model busy {busy:.1%} of them")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", help="the stage to read, e.g. dev")
    parser.add_argument("--chalice-dir", type=Path, default=Path(".chalice"))
    parser.add_argument("--region", help="the stack's region (default: the AWS profile's)")
    parser.add_argument("--monthly-users", type=int, default=0, help="Cognito's monthly active users (no metric)")
    parser.add_argument("--table", action="store_true", help="print the README's cost table and stop")
    args = parser.parse_args(argv)
    if not (args.table or args.stage):
        parser.error("--stage is required")
    try:
        config = json.loads((args.chalice_dir / "config.json").read_text())
        if args.table:
            # The prod stage's functions: the table is about a stage that serves users.
            print(table(lambda_memory_gb(config, "prod")))
            return 0
        api = deployed_websocket_api(args.chalice_dir, args.stage)
        measured = measure(
            boto3.client("cloudwatch", region_name=args.region),
            boto3.client("dynamodb", region_name=args.region),
            args.stage,
            end=datetime.datetime.now(datetime.UTC),
            memory_gb=lambda_memory_gb(config, args.stage),
            websocket_api_id=api["websocket_api_id"] if api else None,
            monthly_users=args.monthly_users,
        )
    except (BotoCoreError, ClientError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report(args.stage, measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
