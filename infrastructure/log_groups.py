"""The stage's log groups, made by the stack with a retention before anything writes to them.

Lambda and SageMaker create a log group on first write, without a retention (logs kept forever).
Made here first, they keep `retention_days`, and neither the functions' roles (Chalice's policy
files, `function_policies`) nor the model's need `logs:CreateLogGroup`, so no log group of the
stage ever appears without one. The names are Chalice's functions' and SageMaker's
(`stack_names`); SageMaker writes an inference component's containers to a group of its own.

The groups go with the stack (`cdk destroy` deletes them): they hold operations logs, never a
conversation, and a group left behind would make the next deploy of the stage fail, since
CloudFormation cannot create a group that exists. Logs to keep longer are exported first.
"""

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from constructs import Construct

from infrastructure import stack_names

# The values CloudWatch Logs accepts (PutRetentionPolicy's retentionInDays).
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                  3288, 3653)


def log_group_names(stage: str, *, inference_component: bool) -> dict[str, str]:
    """Each group the stack makes, by its construct id: the functions', the endpoint's and, when the
    model is served through one, the inference component's. `make deploy` checks these before
    `cdk deploy` (a group that exists outside the stack fails it)."""
    names = {handler: stack_names.function_log_group_name(stage, handler) for handler in stack_names.HANDLERS}
    names["Endpoint"] = stack_names.endpoint_log_group_name(stage)
    if inference_component:
        names["InferenceComponent"] = stack_names.inference_component_log_group_name(stage)
    return names


class LogGroups(Construct):
    """`/aws/lambda/<function>` for each of Chalice's functions, and the model's groups."""

    def __init__(
        self, scope: Construct, construct_id: str, *, stage: str, retention_days: int, inference_component: bool
    ):
        super().__init__(scope, construct_id)
        for group_id, name in log_group_names(stage, inference_component=inference_component).items():
            group = logs.CfnLogGroup(self, group_id, log_group_name=name, retention_in_days=retention_days)
            group.apply_removal_policy(cdk.RemovalPolicy.DESTROY)
