"""A deployed chatbot stack as CloudFormation describes it, for botocore's Stubber: no network."""

import datetime

from botocore.stub import Stubber

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TOTAL_TOKENS
from infrastructure import stack_names

REGION = "eu-west-1"
ACCOUNT = "123456789012"


def stack_outputs(stage: str, region: str = REGION, account: str = ACCOUNT) -> dict[str, str]:
    """The outputs `cdk deploy -c stage=<stage>` leaves, with the stack's default token limits."""
    return {
        "EndpointName": stack_names.endpoint_name(stage),
        "EndpointArn": f"arn:aws:sagemaker:{region}:{account}:endpoint/{stack_names.endpoint_name(stage)}",
        "TableName": stack_names.table_name(stage),
        "TableArn": f"arn:aws:dynamodb:{region}:{account}:table/{stack_names.table_name(stage)}",
        "MaxInputTokens": str(DEFAULT_MAX_INPUT_TOKENS),
        "MaxTotalTokens": str(DEFAULT_MAX_TOTAL_TOKENS),
        "MaxNewTokens": str(DEFAULT_MAX_NEW_TOKENS),
    }


def add_deployed_stack(stubber: Stubber, outputs: dict[str, str], stack: str) -> None:
    """The next `describe_stacks(StackName=stack)` finds the stack complete, with these outputs."""
    description = {
        "StackName": stack,
        "CreationTime": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        "StackStatus": "CREATE_COMPLETE",
        "Outputs": [{"OutputKey": key, "OutputValue": value} for key, value in outputs.items()],
    }
    stubber.add_response("describe_stacks", {"Stacks": [description]}, {"StackName": stack})
