"""Names the stack, Chalice's config and `record_outputs` agree on, per stage.

No CDK import here: the config recorder reads these without starting the jsii runtime.
"""

APP_NAME = "llama2-chatbot"
# The app's own CloudWatch metrics (embedded metric format), each with the dimension `Stage`.
APP_METRICS_NAMESPACE = "Llama2Chatbot"
# Chalice's stage of both APIs (`api_gateway_stage` in .chalice/config.json).
API_GATEWAY_STAGE = "api"
# The endpoint's one production variant.
VARIANT_NAME = "AllTraffic"

# The stack output that carries each Chalice environment variable the stack decides.
ENVIRONMENT_OUTPUTS = {
    "SAGEMAKER_ENDPOINT_NAME": "EndpointName",
    "CHAT_TABLE_NAME": "TableName",
    "MAX_INPUT_TOKENS": "MaxInputTokens",
    "MAX_TOTAL_TOKENS": "MaxTotalTokens",
    "MAX_NEW_TOKENS": "MaxNewTokens",
    # The serving container and the model, whose protocol and tokenizer the app must know.
    "SERVING": "Serving",
    "MODEL_ID": "ModelId",
    "TURNS_TOPIC_ARN": "TurnsTopicArn",
    "TURNS_QUEUE_NAME": "TurnsQueueName",
    "USER_POOL_ID": "UserPoolId",
    "USER_POOL_ARN": "UserPoolArn",
    "USER_POOL_CLIENT_ID": "UserPoolClientId",
    # How long an accepted turn may wait for the worker; `make config` also gives the worker
    # function this timeout (lambda_functions.turn_worker.lambda_timeout).
    "WORKER_TIMEOUT_SECONDS": "WorkerTimeoutSeconds",
    # How many turns the worker answers at once (the endpoint's most copies times what one copy
    # generates at once); `make config` also gives the worker function this reserved concurrency
    # (lambda_functions.turn_worker.reserved_concurrency), and app.py its SQS event source.
    "WORKER_CONCURRENCY": "WorkerConcurrency",
}
# Outputs only some configurations have; `make config` removes the variable when its output is absent.
OPTIONAL_ENVIRONMENT_OUTPUTS = {
    "SAGEMAKER_INFERENCE_COMPONENT_NAME": "InferenceComponentName",
}
ENDPOINT_ARN_OUTPUT = "EndpointArn"
TABLE_ARN_OUTPUT = "TableArn"
# The customer managed key the chat table is encrypted with (`make config` names it in the
# functions' policies: DynamoDB decrypts the table's key on behalf of each caller).
TABLE_KEY_ARN_OUTPUT = "TableKeyArn"
TURNS_QUEUE_ARN_OUTPUT = "TurnsQueueArn"
# Outputs for operators (the DLQ to inspect).
TURNS_DEAD_LETTER_QUEUE_NAME_OUTPUT = "TurnsDeadLetterQueueName"
TURNS_DEAD_LETTER_QUEUE_ARN_OUTPUT = "TurnsDeadLetterQueueArn"
WORKER_TIMEOUT_OUTPUT = ENVIRONMENT_OUTPUTS["WORKER_TIMEOUT_SECONDS"]
WORKER_CONCURRENCY_OUTPUT = ENVIRONMENT_OUTPUTS["WORKER_CONCURRENCY"]
ALARM_TOPIC_ARN_OUTPUT = "AlarmTopicArn"
DASHBOARD_NAME_OUTPUT = "DashboardName"

# Chalice's name for the function of the REST API's routes (`lambda_functions.api_handler`).
REST_HANDLER = "api_handler"
# The Python name of the app's `@app.on_sqs_message` function: Chalice names its Lambda after it.
TURNS_WORKER_HANDLER = "turn_worker"
# The app's WebSocket handlers, in the order of their functions below.
WEBSOCKET_HANDLERS = ["websocket_message", "websocket_connect", "websocket_disconnect"]
# Every function of a stage by Chalice's name for it, in the order of `function_names`.
HANDLERS = [REST_HANDLER, WEBSOCKET_HANDLERS[0], TURNS_WORKER_HANDLER, *WEBSOCKET_HANDLERS[1:]]


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


def alarm_topic_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-alarms"


def dashboard_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}"


def function_name(stage: str, handler: str) -> str:
    """A handler's Lambda function as Chalice 1.34 names it (deploy/appgraph.py): the REST
    handler `<app>-<stage>`, every other handler `<app>-<stage>-<name>`."""
    prefix = f"{APP_NAME}-{stage}"
    return prefix if handler == REST_HANDLER else f"{prefix}-{handler}"


def function_names(stage: str) -> list[str]:
    """The chat's Lambda functions, in the order of `HANDLERS`."""
    return [function_name(stage, handler) for handler in HANDLERS]


def function_log_group_name(stage: str, handler: str) -> str:
    """Where Lambda writes a function's logs; the stack creates it, with a retention."""
    return f"/aws/lambda/{function_name(stage, handler)}"


def endpoint_log_group_name(stage: str) -> str:
    """Where SageMaker writes the containers' logs of an endpoint whose variant holds the model."""
    return f"/aws/sagemaker/Endpoints/{endpoint_name(stage)}"


def inference_component_log_group_name(stage: str) -> str:
    """Where SageMaker writes the containers' logs of the inference component (scale to zero)."""
    return f"/aws/sagemaker/InferenceComponents/{inference_component_name(stage)}"
