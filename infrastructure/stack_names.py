"""Names the stack, Chalice's config and `record_outputs` agree on, per stage.

No CDK import here: the config recorder reads these without starting the jsii runtime.
"""

APP_NAME = "llama2-chatbot"

# The stack output that carries each Chalice environment variable the stack decides.
ENVIRONMENT_OUTPUTS = {
    "SAGEMAKER_ENDPOINT_NAME": "EndpointName",
    "CHAT_TABLE_NAME": "TableName",
    "MAX_INPUT_TOKENS": "MaxInputTokens",
    "MAX_TOTAL_TOKENS": "MaxTotalTokens",
    "MAX_NEW_TOKENS": "MaxNewTokens",
    "TURNS_TOPIC_ARN": "TurnsTopicArn",
    "TURNS_QUEUE_NAME": "TurnsQueueName",
    "USER_POOL_ID": "UserPoolId",
    "USER_POOL_ARN": "UserPoolArn",
    "USER_POOL_CLIENT_ID": "UserPoolClientId",
}
# Outputs only some configurations have; `make config` removes the variable when its output is absent.
OPTIONAL_ENVIRONMENT_OUTPUTS = {
    "SAGEMAKER_INFERENCE_COMPONENT_NAME": "InferenceComponentName",
}
ENDPOINT_ARN_OUTPUT = "EndpointArn"
TABLE_ARN_OUTPUT = "TableArn"
TURNS_QUEUE_ARN_OUTPUT = "TurnsQueueArn"
# Outputs for operators (the DLQ to inspect, the timeout the worker function must be given).
TURNS_DEAD_LETTER_QUEUE_NAME_OUTPUT = "TurnsDeadLetterQueueName"
TURNS_DEAD_LETTER_QUEUE_ARN_OUTPUT = "TurnsDeadLetterQueueArn"
WORKER_TIMEOUT_OUTPUT = "WorkerTimeoutSeconds"


def stack_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}"


def endpoint_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}"


def table_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-chat"


def turns_topic_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-turns"


def turns_queue_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-turns"


def turns_dead_letter_queue_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-turns-dlq"


def user_pool_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}"


def inference_component_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-model"
