"""Idle cost: the inference component, scaling its copies to zero and back, and the schedule."""

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from templates import build, only

from infrastructure import stack_names
from infrastructure.chatbot_stack import ChatbotConfig

COMPONENT = "llama2-chatbot-dev-model"
WORKING_HOURS = {
    "schedule_timezone": "Europe/Berlin",
    "schedule_on_cron": "0 8 ? * MON-FRI *",
    "schedule_off_cron": "0 19 ? * MON-FRI *",
}


@pytest.fixture(scope="module")
def zero_stack():
    return build(ChatbotConfig(scale_to_zero=True, idle_minutes=20))


@pytest.fixture(scope="module")
def zero(zero_stack):
    return Template.from_stack(zero_stack)


@pytest.fixture(scope="module")
def everything_stack():
    return build(ChatbotConfig(scale_to_zero=True, autoscaling=True, autoscaling_max_instances=3, **WORKING_HOURS))


@pytest.fixture(scope="module")
def everything(everything_stack):
    return Template.from_stack(everything_stack)


@pytest.fixture(scope="module")
def scheduled():
    return Template.from_stack(build(ChatbotConfig(**WORKING_HOURS)))


def component_name(template: Template) -> str:
    """The name the scaling refers to, which must be the component's own."""
    _, component = only(template, "AWS::SageMaker::InferenceComponent")
    assert component["Properties"]["InferenceComponentName"] == COMPONENT
    return COMPONENT


def test_by_default_the_model_sits_on_the_variant_with_no_component(template):
    template.resource_count_is("AWS::SageMaker::InferenceComponent", 0)
    assert "InferenceComponentName" not in template.find_outputs("*")


def test_the_model_is_served_by_an_inference_component_that_takes_the_gpu(zero):
    model_id, _ = only(zero, "AWS::SageMaker::Model")
    endpoint_id, _ = only(zero, "AWS::SageMaker::Endpoint")
    zero.has_resource_properties(
        "AWS::SageMaker::InferenceComponent",
        {
            "InferenceComponentName": COMPONENT,
            "EndpointName": {"Fn::GetAtt": [endpoint_id, "EndpointName"]},
            "VariantName": "AllTraffic",
            "Specification": {
                "ModelName": {"Fn::GetAtt": [model_id, "ModelName"]},
                "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 1, "MinMemoryRequiredInMb": 8192},
                "StartupParameters": {
                    "ContainerStartupHealthCheckTimeoutInSeconds": 1200,
                    "ModelDataDownloadTimeoutInSeconds": 1200,
                },
            },
            "RuntimeConfig": {"CopyCount": 1},
        },
    )
    zero.has_output("InferenceComponentName", {"Value": component_name(zero)})
    assert stack_names.OPTIONAL_ENVIRONMENT_OUTPUTS["SAGEMAKER_INFERENCE_COMPONENT_NAME"] == "InferenceComponentName"


def test_the_variant_has_managed_instance_scaling_down_to_zero_instances(zero, everything):
    role_id, _ = only(zero, "AWS::IAM::Role")
    _, config = only(zero, "AWS::SageMaker::EndpointConfig")
    (variant,) = config["Properties"]["ProductionVariants"]
    assert "ModelName" not in variant
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 1}
    assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    assert config["Properties"]["ExecutionRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    everything.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "ProductionVariants": [
                Match.object_like({"ManagedInstanceScaling": Match.object_like({"MaxInstanceCount": 3})})
            ]
        },
    )


def test_copy_count_scales_between_zero_and_the_maximum(zero, everything):
    for template, maximum in ((zero, 1), (everything, 3)):
        template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalableTarget",
            {
                "ServiceNamespace": "sagemaker",
                "ResourceId": f"inference-component/{component_name(template)}",
                "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount",
                "MinCapacity": 0,
                "MaxCapacity": maximum,
                "RoleARN": Match.absent(),
            },
        )


def test_a_request_finding_no_copy_wakes_the_model(zero):
    target_id, _ = only(zero, "AWS::ApplicationAutoScaling::ScalableTarget")
    (policy_id,) = zero.find_resources(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "Properties": {
                "PolicyType": "StepScaling",
                "ScalingTargetId": {"Ref": target_id},
                "StepScalingPolicyConfiguration": {
                    "AdjustmentType": "ChangeInCapacity",
                    "MetricAggregationType": "Maximum",
                    "Cooldown": 60,
                    "StepAdjustments": [
                        {"ScalingAdjustment": 1, "MetricIntervalLowerBound": 0,
                            "MetricIntervalUpperBound": Match.absent()}
                    ],
                },
            }
        },
    )
    zero.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/SageMaker",
            "MetricName": "NoCapacityInvocationFailures",
            "Dimensions": [{"Name": "InferenceComponentName", "Value": component_name(zero)}],
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "EvaluationPeriods": 1,
            "AlarmActions": [{"Ref": policy_id}],
        },
    )


def test_idle_minutes_without_any_request_scale_to_zero_copies(zero):
    (policy_id,) = zero.find_resources(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "Properties": {
                "StepScalingPolicyConfiguration": {
                    "AdjustmentType": "ExactCapacity",
                    # The idle alarm breaches below its threshold: the step covers values under it.
                    "StepAdjustments": [
                        {"ScalingAdjustment": 0, "MetricIntervalUpperBound": 0,
                            "MetricIntervalLowerBound": Match.absent()}
                    ],
                }
            }
        },
    )
    (alarm,) = zero.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"AlarmActions": [{"Ref": policy_id}]}}
    ).values()
    properties = alarm["Properties"]
    assert (properties["EvaluationPeriods"], properties["DatapointsToAlarm"]) == (20, 20)
    assert (properties["ComparisonOperator"], properties["Threshold"]) == ("LessThanThreshold", 1)
    assert properties["TreatMissingData"] == "breaching"
    queries = {query["Id"]: query for query in properties["Metrics"]}
    assert queries["requests"]["Expression"] == "FILL(invocations, 0) + FILL(refused, 0)"
    # Requests refused while waking count as activity, so this alarm never undoes a wake-up.
    assert queries["refused"]["MetricStat"]["Metric"]["MetricName"] == "NoCapacityInvocationFailures"
    assert queries["invocations"]["MetricStat"]["Metric"]["MetricName"] == "Invocations"
    for query_id in ("invocations", "refused"):
        stat = queries[query_id]["MetricStat"]
        assert (stat["Period"], stat["Stat"]) == (60, "Sum")
        assert stat["Metric"]["Dimensions"] == [{"Name": "InferenceComponentName", "Value": component_name(zero)}]


def test_with_autoscaling_target_tracking_adds_copies_but_leaves_scale_in_to_the_idle_policy(zero, everything):
    """On the concurrent requests per copy, kept at 75 % of the 8 generations one copy serves."""
    everything.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution"
                },
                "TargetValue": 6,
                "DisableScaleIn": True,
            },
        },
    )
    assert not zero.find_resources(
        "AWS::ApplicationAutoScaling::ScalingPolicy", {"Properties": {"PolicyType": "TargetTrackingScaling"}}
    )


def test_a_schedule_switches_the_copies_on_and_off_in_its_time_zone(scheduled, everything):
    _, target = only(scheduled, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (1, 1)
    assert target["Properties"]["ScheduledActions"] == [
        {
            "ScheduledActionName": "llama2-chatbot-dev-model-on",
            "Schedule": "cron(0 8 ? * MON-FRI *)",
            "Timezone": "Europe/Berlin",
            "ScalableTargetAction": {"MinCapacity": 1, "MaxCapacity": 1},
        },
        {
            "ScheduledActionName": "llama2-chatbot-dev-model-off",
            "Schedule": "cron(0 19 ? * MON-FRI *)",
            "Timezone": "Europe/Berlin",
            "ScalableTargetAction": {"MinCapacity": 0, "MaxCapacity": 0},
        },
    ]
    # A schedule alone keeps the model up during the day: no wake-up or idle alarms.
    scheduled.resource_count_is("AWS::ApplicationAutoScaling::ScalingPolicy", 0)
    # With scale to zero too, working hours allow zero copies when idle.
    _, target = only(everything, "AWS::ApplicationAutoScaling::ScalableTarget")
    on, off = target["Properties"]["ScheduledActions"]
    assert on["ScalableTargetAction"] == {"MinCapacity": 0, "MaxCapacity": 3}
    assert off["ScalableTargetAction"] == {"MinCapacity": 0, "MaxCapacity": 0}


@pytest.mark.parametrize("name", ["zero_stack", "everything_stack"])
def test_aws_solutions_checks_find_nothing_unacknowledged(request, name):
    report = AwsSolutionsChecks().validate_scope(request.getfixturevalue(name))
    assert [violation.rule_name for violation in report.violations] == []


def test_context_chooses_idle_and_schedule():
    app = cdk.App(context={"scale_to_zero": "true", "idle_minutes": "30", **WORKING_HOURS})
    config = ChatbotConfig.from_context(app.node)
    assert config == ChatbotConfig(scale_to_zero=True, idle_minutes=30, worker_timeout_seconds=600, **WORKING_HOURS)
    assert config.schedule == ("Europe/Berlin", "0 8 ? * MON-FRI *", "0 19 ? * MON-FRI *")


@pytest.mark.parametrize(
    "context, scale_to_zero",
    [
        ({}, True),
        ({"stage": "dev"}, True),
        ({"stage": "dev", "scale_to_zero": "false"}, False),
        ({"stage": "prod"}, False),
        ({"stage": "prod", "scale_to_zero": "true"}, True),
        ({"stage": "e2e"}, False),
    ],
)
def test_dev_scales_to_zero_by_default_and_prod_stays_on(context, scale_to_zero):
    config = ChatbotConfig.from_context(cdk.App(context=context).node)
    assert (config.scale_to_zero, config.idle_minutes, config.schedule) == (scale_to_zero, 15, None)


@pytest.mark.parametrize(
    "context, message",
    [
        ({"idle_minutes": "0"}, r"idle_minutes=0: must be from 1 to 1440"),
        ({"idle_minutes": "1441"}, r"idle_minutes=1441"),
        ({"schedule_on_cron": "0 8 ? * MON-FRI *"}, r"schedule_on_cron and schedule_off_cron go together"),
        (
            {"schedule_on_cron": "0 8 * * *", "schedule_off_cron": "0 19 ? * MON-FRI *"},
            r"schedule_on_cron='0 8 \* \* \*': six fields",
        ),
    ],
)
def test_invalid_idle_and_schedule_context_is_refused(context, message):
    with pytest.raises(ValueError, match=message):
        ChatbotConfig.from_context(cdk.App(context=context).node)


def test_scaling_waits_for_the_component_to_exist(zero):
    component_id, _ = only(zero, "AWS::SageMaker::InferenceComponent")
    for resource_type in ("AWS::ApplicationAutoScaling::ScalableTarget", "AWS::CloudWatch::Alarm"):
        resources = {k: v for k, v in zero.find_resources(resource_type).items() if k.startswith("CopyScaling")}
        assert resources and all(component_id in resource.get("DependsOn", []) for resource in resources.values())
