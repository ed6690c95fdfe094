"""Idle cost: Application Auto Scaling on the inference component's copy count, down to zero.

An endpoint that serves its model through an inference component, with managed instance scaling
down to 0 instances, releases its GPU instances when the component has no copies. As AWS
documents it ("Scale an endpoint to zero instances"):
- the copy count is a scalable target with a minimum of 0;
- a step scaling policy adds a copy when the `NoCapacityInvocationFailures` alarm fires (a request
  arrived while there was none): the wake-up takes minutes (instance start, model download);
- target tracking on concurrent requests per copy (a high-resolution metric, every 10 s) scales out
  under load.
Scale-in to zero after `idle_minutes` with no request is a step policy of its own: target
tracking's scale-in waits a fixed 15 minutes, and its alarms cannot be told otherwise. A step
applies to the metric's distance from the alarm's threshold: the wake-up alarm fires at or above
its threshold (a step from 0 up), the idle alarm below its own (a step from 0 down), so each
policy's step is bounded on the side its alarm breaches, or Application Auto Scaling finds no
step for the value and does nothing.
A schedule (scheduled actions on the same target) can also switch the model off and on.

L1 constructs: without a RoleARN Application Auto Scaling uses its SageMaker service-linked role.
"""

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk.aws_applicationautoscaling import CfnScalableTarget, CfnScalingPolicy
from constructs import Construct

SCALABLE_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
WAKE_UP_COOLDOWN_SECONDS = 60


class CopyScaling(Construct):
    """Scaling of one inference component's copies between `min_copies` and `max_copies`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        component: sagemaker.CfnInferenceComponent,
        min_copies: int,
        max_copies: int,
        concurrency_per_copy: float | None,
        idle_minutes: int | None,
        schedule: tuple[str, str, str] | None,
    ):
        """`concurrency_per_copy`: target tracking under load, if given; `idle_minutes`: scale to
        zero, if given; `schedule`: (time zone, on cron, off cron), if given."""
        super().__init__(scope, construct_id)
        # The resource has no name attribute: use the name it is given, once it exists.
        self.node.add_dependency(component)
        inference_component_name = component.inference_component_name
        floor = 0 if idle_minutes else min_copies
        self.target = CfnScalableTarget(
            self,
            "Target",
            service_namespace="sagemaker",
            resource_id=f"inference-component/{inference_component_name}",
            scalable_dimension=SCALABLE_DIMENSION,
            min_capacity=floor,
            max_capacity=max_copies,
            scheduled_actions=self._schedule(prefix, schedule, floor, max_copies) if schedule else None,
        )
        if concurrency_per_copy:
            CfnScalingPolicy(
                self,
                "ConcurrentRequestsPerCopy",
                policy_name=f"{prefix}-concurrent-requests-per-copy",
                policy_type="TargetTrackingScaling",
                scaling_target_id=self.target.ref,
                target_tracking_scaling_policy_configuration=CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                    predefined_metric_specification=CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                        predefined_metric_type="SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution"
                    ),
                    target_value=concurrency_per_copy,
                    # With scale to zero, the idle policy decides when copies go.
                    disable_scale_in=bool(idle_minutes),
                ),
            )
        if idle_minutes:
            self._wake_up(prefix, inference_component_name)
            self._scale_in_when_idle(prefix, inference_component_name, idle_minutes)

    def _step_policy(
        self, construct_id: str, name: str, adjustment_type: str, adjustment: int, *, above_threshold: bool
    ) -> CfnScalingPolicy:
        """One step for every value on the breaching side of its alarm's threshold."""
        bound = {"metric_interval_lower_bound": 0} if above_threshold else {"metric_interval_upper_bound": 0}
        return CfnScalingPolicy(
            self,
            construct_id,
            policy_name=name,
            policy_type="StepScaling",
            scaling_target_id=self.target.ref,
            step_scaling_policy_configuration=CfnScalingPolicy.StepScalingPolicyConfigurationProperty(
                adjustment_type=adjustment_type,
                metric_aggregation_type="Maximum",
                cooldown=WAKE_UP_COOLDOWN_SECONDS,
                step_adjustments=[
                    CfnScalingPolicy.StepAdjustmentProperty(scaling_adjustment=adjustment, **bound)
                ],
            ),
        )

    def _wake_up(self, prefix: str, component: str) -> None:
        policy = self._step_policy("WakeUp", f"{prefix}-wake-up", "ChangeInCapacity", 1, above_threshold=True)
        cloudwatch.CfnAlarm(
            self,
            "NoCapacityAlarm",
            alarm_name=f"{prefix}-no-capacity",
            alarm_description="A request found no model copy: add one (the endpoint is scaled to zero).",
            namespace="AWS/SageMaker",
            metric_name="NoCapacityInvocationFailures",
            dimensions=[cloudwatch.CfnAlarm.DimensionProperty(name="InferenceComponentName", value=component)],
            statistic="Maximum",
            period=60,
            evaluation_periods=1,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="missing",
            alarm_actions=[policy.ref],
        )

    def _scale_in_when_idle(self, prefix: str, component: str, idle_minutes: int) -> None:
        """Zero copies after `idle_minutes` of minutes with neither an invocation nor a request
        refused for lack of capacity: a request that is waking the model keeps this alarm quiet,
        so the two policies never fight."""
        policy = self._step_policy(
            "ScaleInWhenIdle", f"{prefix}-scale-in-when-idle", "ExactCapacity", 0, above_threshold=False
        )

        def metric(query_id: str, name: str) -> cloudwatch.CfnAlarm.MetricDataQueryProperty:
            return cloudwatch.CfnAlarm.MetricDataQueryProperty(
                id=query_id,
                return_data=False,
                metric_stat=cloudwatch.CfnAlarm.MetricStatProperty(
                    metric=cloudwatch.CfnAlarm.MetricProperty(
                        namespace="AWS/SageMaker",
                        metric_name=name,
                        dimensions=[
                            cloudwatch.CfnAlarm.DimensionProperty(name="InferenceComponentName", value=component)
                        ],
                    ),
                    period=60,
                    stat="Sum",
                ),
            )

        cloudwatch.CfnAlarm(
            self,
            "IdleAlarm",
            alarm_name=f"{prefix}-idle",
            alarm_description=f"No request for {idle_minutes} minutes: scale the model to zero copies.",
            metrics=[
                metric("invocations", "Invocations"),
                metric("refused", "NoCapacityInvocationFailures"),
                cloudwatch.CfnAlarm.MetricDataQueryProperty(
                    id="requests",
                    expression="FILL(invocations, 0) + FILL(refused, 0)",
                    label="requests per minute",
                    return_data=True,
                ),
            ],
            evaluation_periods=idle_minutes,
            datapoints_to_alarm=idle_minutes,
            threshold=1,
            comparison_operator="LessThanThreshold",
            # Neither metric exists before the first request: that is idle too.
            treat_missing_data="breaching",
            alarm_actions=[policy.ref],
        )

    @staticmethod
    def _schedule(prefix: str, schedule: tuple[str, str, str], floor: int, max_copies: int):
        """On: the usual bounds back; off: none at all, whatever the load."""
        timezone, on_cron, off_cron = schedule
        return [
            CfnScalableTarget.ScheduledActionProperty(
                scheduled_action_name=f"{prefix}-on",
                schedule=f"cron({on_cron})",
                timezone=timezone,
                scalable_target_action=CfnScalableTarget.ScalableTargetActionProperty(
                    min_capacity=floor, max_capacity=max_copies
                ),
            ),
            CfnScalableTarget.ScheduledActionProperty(
                scheduled_action_name=f"{prefix}-off",
                schedule=f"cron({off_cron})",
                timezone=timezone,
                scalable_target_action=CfnScalableTarget.ScalableTargetActionProperty(min_capacity=0, max_capacity=0),
            ),
        ]
