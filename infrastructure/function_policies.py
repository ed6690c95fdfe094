"""What each Lambda function may do: the one home of the functions' IAM policies.

`autogen_policy` is off, so Chalice gives each function a role of its own with the policy file
that `.chalice/config.json` names for it (`lambda_functions.<handler>.iam_policy_file`,
`policy-<stage>-<handler>.json`). Those files are rendered from `GRANTS` below, two ways:
- committed, with `Deployment.unrecorded()`: every region, account, key and API id is the
  placeholder `UNSET`, which names no resource, so a stage deployed before `make config` can do
  nothing (fail closed). `python -m infrastructure.record_outputs --placeholders` writes them
  again after a change here; a test holds the committed files to this render.
- by `make config` (`record_outputs`), with the stage's own partition, region, account and table
  key from its stack, and once `chalice deploy` has created it, the WebSocket API's id.

Each statement is what the function's code calls, found by reading its path through the app and
held by tests/test_policies.py, which runs each handler and checks every AWS call it makes
against its own policy, and every grant against a call. The chat table's items are told apart by
their partition key (`dynamodb:LeadingKeys`): a session's items (`<sub>#<session id>`), a user's
turn counters (`~rate/<sub>`) and the WebSocket connections (`~connection/<id>`).
"""

import dataclasses
from collections.abc import Callable

from chalicelib.table import CONNECTION_PREFIX, RATE_PREFIX, SESSIONS_INDEX, session_key
from infrastructure import stack_names

UNSET = "set-by-make-config"


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Where a stage's resources are: what `make config` learns from the stack and from Chalice."""

    partition: str
    region: str
    account: str
    table_key_id: str
    websocket_api_id: str = UNSET

    @classmethod
    def unrecorded(cls) -> "Deployment":
        return cls("aws", UNSET, UNSET, UNSET)

    def arn(self, service: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"


@dataclasses.dataclass(frozen=True)
class Grant:
    """One statement: `actions` on the resources `resources(stage, deployment)` names."""

    sid: str
    actions: tuple[str, ...]
    resources: Callable[[str, Deployment], list[str]]
    condition: Callable[[str, Deployment], dict] | None = None

    def statement(self, stage: str, where: Deployment) -> dict:
        statement = {"Sid": self.sid, "Effect": "Allow", "Action": list(self.actions),
                     "Resource": self.resources(stage, where)}
        if self.condition:
            statement["Condition"] = self.condition(stage, where)
        return statement


# The stage's resources as the stack names them (`record_outputs` checks them against its outputs).
def table_arn(stage: str, where: Deployment) -> str:
    return where.arn("dynamodb", f"table/{stack_names.table_name(stage)}")


def endpoint_arn(stage: str, where: Deployment) -> str:
    return where.arn("sagemaker", f"endpoint/{stack_names.endpoint_name(stage)}")


def topic_arn(stage: str, where: Deployment) -> str:
    return where.arn("sns", stack_names.turns_topic_name(stage))


def queue_arn(stage: str, where: Deployment) -> str:
    return where.arn("sqs", stack_names.turns_queue_name(stage))


def _only(arn: Callable[[str, Deployment], str]) -> Callable[[str, Deployment], list[str]]:
    return lambda stage, where: [arn(stage, where)]


# Partition keys, as IAM's StringLike patterns. No session key starts like the other two.
SESSION_ITEMS = session_key("*", "*")
TURN_COUNTERS = RATE_PREFIX + "*"
CONNECTION_ITEMS = CONNECTION_PREFIX + "*"


def items(sid: str, *operations: str, keys: str) -> Grant:
    """DynamoDB `operations` on the chat table's items whose partition key matches `keys`.
    `ForAllValues` holds for a request with no key at all, so `Null` requires one (IAM User
    Guide, "Single-valued vs. multivalued context keys")."""

    def condition(stage: str, where: Deployment) -> dict:
        keys_condition = {
            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [keys]},
            "Null": {"dynamodb:LeadingKeys": "false"},
        }
        if keys == SESSION_ITEMS:  # '#' is in no connection id or user id; say so all the same
            keys_condition["ForAllValues:StringNotLike"] = {"dynamodb:LeadingKeys": [TURN_COUNTERS, CONNECTION_ITEMS]}
        return keys_condition

    return Grant(sid, tuple(f"dynamodb:{operation}" for operation in operations), _only(table_arn), condition)


def sessions_index() -> Grant:
    """Listing a user's sessions (the index's partition key is the owner, not an item's key)."""
    return Grant(
        "ListSessions", ("dynamodb:Query",),
        lambda stage, where: [f"{table_arn(stage, where)}/index/{SESSIONS_INDEX}"],
    )


def invoke_model(*actions: str) -> Grant:
    """The SageMaker API reference has a stream "must allow the sagemaker:InvokeEndpoint action"
    (InvokeEndpointWithResponseStream), so IAM cannot keep a holder of InvokeEndpoint from
    streaming: that only the worker streams is the code's, held by tests/test_policies.py. The
    worker also holds the stream's own name, should IAM ever check it."""
    return Grant("InvokeModel", tuple(f"sagemaker:{action}" for action in actions), _only(endpoint_arn))


def publish_turns() -> Grant:
    return Grant("PublishTurns", ("sns:Publish",), _only(topic_arn))


def consume_turns() -> Grant:
    """What Lambda's SQS event source does with the worker's role (the app never calls SQS)."""
    actions = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
    return Grant("ConsumeTurns", actions, _only(queue_arn))


def queue_length() -> Grant:
    """How many turns wait for a worker, to tell a client its turn is queued (chalicelib/handover.py)."""
    return Grant("QueueLength", ("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), _only(queue_arn))


API_STAGE = stack_names.API_GATEWAY_STAGE


def connections(*methods: str) -> Grant:
    """Chalice's `websocket_api.send` is POST @connections/{id}, and `close` DELETE."""
    return Grant(
        "ManageConnections", ("execute-api:ManageConnections",),
        lambda stage, where: [
            where.arn("execute-api", f"{where.websocket_api_id}/{API_STAGE}/{method}/@connections/*")
            for method in methods
        ],
    )


def table_key() -> Grant:
    """DynamoDB decrypts the table's own key with the key of the table, on behalf of the caller,
    within this table's encryption context (AWS KMS Developer Guide, "How Amazon DynamoDB uses
    AWS KMS": the Decrypt event's user "is the principal in your AWS account who is accessing the
    table", and "DynamoDB uses the same encryption context in all AWS KMS cryptographic
    operations"). The stack's key policy leaves the key's use to these IAM policies."""
    return Grant(
        "DecryptTableThroughDynamoDB", ("kms:Decrypt",),
        lambda stage, where: [where.arn("kms", f"key/{where.table_key_id}")],
        lambda stage, where: {"StringEquals": {
            "kms:ViaService": f"dynamodb.{where.region}.amazonaws.com",
            "kms:EncryptionContext:aws:dynamodb:tableName": stack_names.table_name(stage),
        }},
    )


def own_logs(handler: str) -> Grant:
    """The function's own log group, which the stack creates with a retention, so no
    logs:CreateLogGroup (the grant Lambda's console gives a function: `log-group:<name>:*`)."""
    return Grant(
        "Logs", ("logs:CreateLogStream", "logs:PutLogEvents"),
        lambda stage, where: [
            where.arn("logs", f"log-group:{stack_names.function_log_group_name(stage, handler)}:*")
        ],
    )


GRANTS: dict[str, tuple[Grant, ...]] = {
    # The REST routes: synchronous turns (claim, count, list, read the window, the model, append
    # or replace), asynchronous ones (claim, count, list, publish), a turn over the rate limit (its
    # claim withdrawn), the listings and search, rename, feedback, export, and deletion by
    # BatchWriteItem.
    stack_names.REST_HANDLER: (
        items("SessionItems", "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "BatchWriteItem",
              keys=SESSION_ITEMS),
        items("TurnCounters", "UpdateItem", keys=TURN_COUNTERS),
        sessions_index(),
        invoke_model("InvokeEndpoint"),
        publish_turns(),
    ),
    # $connect binds the connection to the token's user; $disconnect forgets it.
    "websocket_connect": (items("ConnectionItems", "PutItem", keys=CONNECTION_ITEMS),),
    "websocket_disconnect": (items("ConnectionItems", "DeleteItem", keys=CONNECTION_ITEMS),),
    # A turn over the socket: the connection's user, then claim (for one that replaces the last
    # turn, after reading it), count, list, publish, `accepted`; over the rate limit, the claim
    # withdrawn. When every worker is busy, the queue's length, for `queued`. A connection whose
    # token has expired gets `error` and is closed (DELETE).
    "websocket_message": (
        items("ConnectionItems", "GetItem", keys=CONNECTION_ITEMS),
        items("SessionItems", "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", keys=SESSION_ITEMS),
        items("TurnCounters", "UpdateItem", keys=TURN_COUNTERS),
        publish_turns(),
        queue_length(),
        connections("POST", "DELETE"),
    ),
    # A handed-over turn: resume its claim, read the window, the model (streamed to a socket, or
    # whole for an asynchronous REST turn), append (or replace the turn it regenerates), and
    # stream the answer to the connection.
    stack_names.TURNS_WORKER_HANDLER: (
        items("SessionItems", "GetItem", "PutItem", "UpdateItem", "Query", keys=SESSION_ITEMS),
        invoke_model("InvokeEndpoint", "InvokeEndpointWithResponseStream"),
        consume_turns(),
        connections("POST"),
    ),
}


def policy(stage: str, handler: str, where: Deployment) -> dict:
    """The function's policy document: its grants, the table's key, its own log group."""
    grants = (*GRANTS[handler], table_key(), own_logs(handler))
    return {"Version": "2012-10-17", "Statement": [grant.statement(stage, where) for grant in grants]}


def policy_file(stage: str, handler: str) -> str:
    """The function's policy file in .chalice/, as config.json names it."""
    return f"policy-{stage}-{handler}.json"
