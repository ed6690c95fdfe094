"""Seeing what happens: a CloudWatch dashboard and alarms on an (encrypted) alarm topic.

The app's own metrics are in embedded metric format: namespace `Llama2Chatbot`, dimension
`Stage`, and for `Errors` also `Code`. The Lambda functions are Chalice's, named as Chalice 1.34
names them (`stack_names.function_name`); the REST API is Chalice's `llama2-chatbot`, stage `api`.
"""

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infrastructure import stack_names

APP_NAMESPACE = stack_names.APP_METRICS_NAMESPACE
API_GATEWAY_STAGE = stack_names.API_GATEWAY_STAGE
PERIOD = cdk.Duration.minutes(5)
# ModelLatency is in microseconds. A 512-token answer takes 15-25 s on one A10G.
MODEL_LATENCY_ALARM_MICROSECONDS = 30_000_000
API_5XX_ALARM_COUNT = 5
LATENCY_PERCENTILES = ("p50", "p90", "p99")


class Monitoring(Construct):
    """The dashboard `llama2-chatbot-<stage>` and the alarms, which notify `self.topic`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        key: kms.Key,
        dead_letter_queue: sqs.Queue,
        alarm_email: str,
    ):
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self, "AlarmTopic", topic_name=stack_names.alarm_topic_name(stage), master_key=key, enforce_ssl=True
        )
        # CloudWatch publishes alarms into the encrypted topic.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            )
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))

        endpoint = {"EndpointName": stack_names.endpoint_name(stage), "VariantName": "AllTraffic"}

        def app(name: str, statistic: str = "Sum", label: str | None = None) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=APP_NAMESPACE,
                metric_name=name,
                dimensions_map={"Stage": stage},
                statistic=statistic,
                period=PERIOD,
                label=label or name,
            )

        def sagemaker(name: str, statistic: str = "Sum", namespace: str = "AWS/SageMaker") -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=namespace, metric_name=name, dimensions_map=endpoint, statistic=statistic, period=PERIOD
            )

        def functions(name: str) -> cloudwatch.MathExpression:
            """`name` summed over the five chat functions (REST, the three WebSocket ones, the worker)."""
            metrics = {
                f"{name.lower()}{index}": cloudwatch.Metric(
                    namespace="AWS/Lambda",
                    metric_name=name,
                    dimensions_map={"FunctionName": function},
                    statistic="Sum",
                    period=PERIOD,
                )
                for index, function in enumerate(stack_names.function_names(stage))
            }
            return cloudwatch.MathExpression(
                expression=" + ".join(f"FILL({id}, 0)" for id in metrics),
                using_metrics=metrics,
                label=f"function {name.lower()}",
                period=PERIOD,
            )

        errors_by_code = cloudwatch.MathExpression(
            expression=(
                f"SEARCH('{{{APP_NAMESPACE},Code,Stage}} MetricName=\"Errors\" Stage=\"{stage}\"', 'Sum', 300)"
            ),
            label="",
            period=PERIOD,
        )
        api_5xx = cloudwatch.Metric(
            namespace="AWS/ApiGateway",
            metric_name="5XXError",
            dimensions_map={"ApiName": stack_names.APP_NAME, "Stage": API_GATEWAY_STAGE},
            statistic="Sum",
            period=PERIOD,
        )
        dead_letters = dead_letter_queue.metric_approximate_number_of_messages_visible(
            statistic="Maximum", period=cdk.Duration.minutes(1)
        )
        # The endpoint reports each instance's CPU once a minute: the samples count its instances.
        instances = cloudwatch.Metric(
            namespace="/aws/sagemaker/Endpoints",
            metric_name="CPUUtilization",
            dimensions_map=endpoint,
            statistic="SampleCount",
            period=cdk.Duration.minutes(1),
            label="instances",
        )

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=stack_names.dashboard_name(stage),
            default_interval=cdk.Duration.days(1),
            widgets=[
                [
                    cloudwatch.GraphWidget(
                        title="Turns and errors by code", left=[app("Turns"), errors_by_code], width=8
                    ),
                    cloudwatch.GraphWidget(
                        title="Tokens", left=[app("PromptTokens"), app("CompletionTokens")], stacked=True, width=8
                    ),
                    cloudwatch.GraphWidget(
                        title="Worker retries and dead letters",
                        left=[app("WorkerRetries")],
                        right=[dead_letters],
                        width=8,
                    ),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Time to first token (ms)",
                        left=[app("TimeToFirstToken", p, f"first token {p}") for p in LATENCY_PERCENTILES],
                        width=8,
                    ),
                    cloudwatch.GraphWidget(
                        title="Model time (ms)",
                        left=[app("ModelTime", p, f"model time {p}") for p in LATENCY_PERCENTILES],
                        width=8,
                    ),
                    cloudwatch.GraphWidget(
                        title="Functions and API", left=[functions("Errors"), functions("Throttles"), api_5xx], width=8
                    ),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Endpoint invocations",
                        left=[
                            sagemaker("Invocations"),
                            sagemaker("Invocation4XXErrors"),
                            sagemaker("Invocation5XXErrors"),
                        ],
                        width=8,
                    ),
                    cloudwatch.GraphWidget(
                        title="Endpoint model latency (microseconds)",
                        left=[sagemaker("ModelLatency", p) for p in LATENCY_PERCENTILES],
                        width=8,
                    ),
                    cloudwatch.GraphWidget(title="Endpoint instances", left=[instances], width=8),
                ],
            ],
        )

        alarms = {
            "EndpointErrors": ("The endpoint answered 5xx.", sagemaker("Invocation5XXErrors"), 1),
            "ModelLatency": (
                "The model's p90 latency is above 30 s.",
                sagemaker("ModelLatency", "p90"),
                MODEL_LATENCY_ALARM_MICROSECONDS,
            ),
            "FunctionErrors": ("A chat function failed.", functions("Errors"), 1),
            "FunctionThrottles": ("A chat function was throttled.", functions("Throttles"), 1),
            "DeadLetters": ("A turn failed every delivery and is in the dead-letter queue.", dead_letters, 1),
            "ApiErrors": (
                f"The REST API answered 5xx at least {API_5XX_ALARM_COUNT} times.",
                api_5xx,
                API_5XX_ALARM_COUNT,
            ),
        }
        self.alarms = {}
        for name, (description, metric, threshold) in alarms.items():
            alarm = metric.create_alarm(
                self,
                name,
                alarm_name=f"{stack_names.stack_name(stage)}-{name}",
                alarm_description=description,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(actions.SnsAction(self.topic))
            self.alarms[name] = alarm
