"""A deployed chatbot stack as CloudFormation describes it, for botocore's Stubber: no network."""

import datetime

from botocore.stub import Stubber

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TOTAL_TOKENS
from chalicelib.token_bounds import DEFAULT_MODEL_ID
from infrastructure import stack_names

REGION = "eu-west-1"
ACCOUNT = "123456789012"
TABLE_KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"


def stack_outputs(stage: str, region: str = REGION, account: str = ACCOUNT) -> dict[str, str]:
    """The outputs `cdk deploy -c stage=<stage>` leaves, with the stack's default token limits."""
    turns = f"{region}:{account}:{stack_names.turns_queue_name(stage)}"
    pool_id = f"{region}_AbCdEfGhI"
    return {
        "EndpointName": stack_names.endpoint_name(stage),
        "EndpointArn": f"arn:aws:sagemaker:{region}:{account}:endpoint/{stack_names.endpoint_name(stage)}",
        "TableName": stack_names.table_name(stage),
        "TableArn": f"arn:aws:dynamodb:{region}:{account}:table/{stack_names.table_name(stage)}",
        "TableKeyArn": f"arn:aws:kms:{region}:{account}:key/{TABLE_KEY_ID}",
        "MaxInputTokens": str(DEFAULT_MAX_INPUT_TOKENS),
        "MaxTotalTokens": str(DEFAULT_MAX_TOTAL_TOKENS),
        "MaxNewTokens": str(DEFAULT_MAX_NEW_TOKENS),
        "Serving": "tgi",
        "ModelId": DEFAULT_MODEL_ID,
        "TurnsTopicArn": f"arn:aws:sns:{region}:{account}:{stack_names.turns_topic_name(stage)}",
        "TurnsQueueName": stack_names.turns_queue_name(stage),
        "TurnsQueueArn": f"arn:aws:sqs:{turns}",
        "TurnsDeadLetterQueueName": stack_names.turns_dead_letter_queue_name(stage),
        "TurnsDeadLetterQueueArn": f"arn:aws:sqs:{region}:{account}:{stack_names.turns_dead_letter_queue_name(stage)}",
        "WorkerTimeoutSeconds": "300",
        "WorkerConcurrency": "8",
        "UserPoolId": pool_id,
        "UserPoolArn": f"arn:aws:cognito-idp:{region}:{account}:userpool/{pool_id}",
        "UserPoolClientId": "1example23456789example0ab",
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
