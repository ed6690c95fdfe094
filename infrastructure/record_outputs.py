"""Records a deployed stage's stack outputs in its Chalice config, so `chalice deploy` needs no hand edits.

    python -m infrastructure.record_outputs --stage dev [--chalice-dir .chalice] [--region REGION]

Into `config.json` stages.<stage>.environment_variables: the endpoint and table names, the token
limits, the turns topic ARN and queue name, the user pool's id and ARN and the page's app
client id, the worker's timeout (also as the `turn_worker` function's lambda_timeout), and the
inference component's name when the stack has one (removed when it has not).
Into the stage's policy file: the exact endpoint, table, topic and queue ARNs as the Resource of
the statements InvokeChatModel, ChatHistory, PublishTurns and ConsumeTurns, and the stack's
region and account in place of `*` in the Logs statement. Both files are checked before either
is written.

Once `chalice deploy` has created the stage's WebSocket API (recorded in
.chalice/deployed/<stage>.json), also its URL as WEBSOCKET_URL, which GET /config gives the page,
and that API's id in the ManageConnections statement: run `make config` and `chalice deploy`
once more after the first deploy.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.table import SESSIONS_INDEX
from infrastructure import stack_names

# Policy statement (by Sid) whose Resource becomes the ARN in the stack output.
ARN_STATEMENTS = {
    "InvokeChatModel": stack_names.ENDPOINT_ARN_OUTPUT,
    "ChatHistory": stack_names.TABLE_ARN_OUTPUT,
    "PublishTurns": stack_names.ENVIRONMENT_OUTPUTS["TURNS_TOPIC_ARN"],
    "ConsumeTurns": stack_names.TURNS_QUEUE_ARN_OUTPUT,
}
# Policy statement whose Resource becomes the table's sessions index.
SESSIONS_INDEX_STATEMENT = "ListSessions"
LOGS_STATEMENT = "Logs"
MANAGE_CONNECTIONS_STATEMENT = "ManageConnections"
WEBSOCKET_URL_VARIABLE = "WEBSOCKET_URL"


class RecordError(Exception):
    """The outputs cannot be recorded; no file was changed."""


def read_outputs(cloudformation, stack: str) -> dict[str, str]:
    """The stack's outputs, all of those the Chalice stage needs."""
    try:
        (description,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ValidationError":
            raise
        raise RecordError(
            f"{error.response['Error']['Message']} (region {cloudformation.meta.region_name}): "
            "deploy it first with `cdk deploy` in infrastructure/, or pass --region"
        ) from None
    outputs = {output["OutputKey"]: output["OutputValue"] for output in description.get("Outputs", [])}
    needed = dict.fromkeys((*stack_names.ENVIRONMENT_OUTPUTS.values(), *ARN_STATEMENTS.values()))
    missing = [key for key in needed if key not in outputs]
    if missing:
        raise RecordError(
            f"stack {stack} ({description['StackStatus']}) lacks the outputs {', '.join(missing)}"
        )
    return outputs


def with_environment(config: dict, stage: str, outputs: dict[str, str]) -> dict:
    """`config` with the stage's environment variables set from the outputs."""
    if stage not in config.get("stages", {}):
        raise RecordError(f"stage {stage!r} is not in config.json")
    environment = config["stages"][stage].setdefault("environment_variables", {})
    environment.update({name: outputs[key] for name, key in stack_names.ENVIRONMENT_OUTPUTS.items()})
    # The worker function's timeout is the one the stack sized its queue's visibility timeout for.
    worker = config["stages"][stage].setdefault("lambda_functions", {}).setdefault(stack_names.TURNS_WORKER_HANDLER, {})
    worker["lambda_timeout"] = int(outputs[stack_names.WORKER_TIMEOUT_OUTPUT])
    for name, key in stack_names.OPTIONAL_ENVIRONMENT_OUTPUTS.items():
        if key in outputs:
            environment[name] = outputs[key]
        else:
            environment.pop(name, None)
    return config


def with_resources(policy: dict, outputs: dict[str, str]) -> dict:
    """`policy` with the stack's resource ARNs, and the logs statement in the stack's account."""
    statements = {statement.get("Sid"): statement for statement in policy.get("Statement", [])}
    for sid, key in ARN_STATEMENTS.items():
        if sid not in statements:
            raise RecordError(f"the policy has no statement with Sid {sid!r}")
        statements[sid]["Resource"] = [outputs[key]]
    if SESSIONS_INDEX_STATEMENT in statements:
        table = outputs[stack_names.TABLE_ARN_OUTPUT]
        statements[SESSIONS_INDEX_STATEMENT]["Resource"] = [f"{table}/index/{SESSIONS_INDEX}"]
    if LOGS_STATEMENT in statements:
        _, partition, _, region, account, _ = outputs[stack_names.ENDPOINT_ARN_OUTPUT].split(":", 5)
        resources = statements[LOGS_STATEMENT]["Resource"]
        statements[LOGS_STATEMENT]["Resource"] = [
            _in_account(arn, partition, region, account)
            for arn in ([resources] if isinstance(resources, str) else resources)
        ]
    return policy


def deployed_websocket_api(chalice_dir: Path, stage: str) -> dict | None:
    """The WebSocket API that `chalice deploy` created for the stage, as it recorded it in
    .chalice/deployed/<stage>.json (None before the first deploy)."""
    path = chalice_dir / "deployed" / f"{stage}.json"
    if not path.exists():
        return None
    resources = _read_json(path).get("resources", [])
    return next((r for r in resources if r.get("resource_type") == "websocket_api"), None)


def with_websocket_api(config: dict, policy: dict, stage: str, api: dict, outputs: dict[str, str]) -> None:
    """The page's WebSocket URL in the stage's environment, and the connections of that API
    alone in the policy's ManageConnections statement."""
    config["stages"][stage]["environment_variables"][WEBSOCKET_URL_VARIABLE] = api["websocket_api_url"].rstrip("/")
    statements = {statement.get("Sid"): statement for statement in policy.get("Statement", [])}
    if MANAGE_CONNECTIONS_STATEMENT in statements:
        _, partition, _, region, account, _ = outputs[stack_names.ENDPOINT_ARN_OUTPUT].split(":", 5)
        api_stage = config["stages"][stage].get("api_gateway_stage", "api")
        statements[MANAGE_CONNECTIONS_STATEMENT]["Resource"] = [
            f"arn:{partition}:execute-api:{region}:{account}:{api['websocket_api_id']}/{api_stage}/POST/@connections/*"
        ]


def _in_account(arn: str, partition: str, region: str, account: str) -> str:
    fields = arn.split(":", 5)
    if len(fields) != 6:
        return arn
    fields[1], fields[3], fields[4] = partition, region, account
    return ":".join(fields)


def record(cloudformation, stage: str, chalice_dir: Path) -> list[Path]:
    """Writes the stage's outputs into the Chalice config and policy; returns the files written."""
    outputs = read_outputs(cloudformation, stack_names.stack_name(stage))
    config_path = chalice_dir / "config.json"
    config = with_environment(_read_json(config_path), stage, outputs)
    policy_path = chalice_dir / config["stages"][stage].get("iam_policy_file", f"policy-{stage}.json")
    policy = with_resources(_read_json(policy_path), outputs)
    if websocket_api := deployed_websocket_api(chalice_dir, stage):
        with_websocket_api(config, policy, stage, websocket_api, outputs)
    for path, document in ((config_path, config), (policy_path, policy)):
        _write_json(path, document)
    return [config_path, policy_path]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RecordError(f"cannot read {path}: {error}") from None


def _write_json(path: Path, document: dict) -> None:
    """Replaces the file in one step, so an interrupted run leaves the old one."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as file:
        json.dump(document, file, indent=2)
        file.write("\n")
    os.replace(file.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help="Chalice stage and CDK `stage` context, e.g. dev")
    parser.add_argument("--chalice-dir", type=Path, default=Path(".chalice"))
    parser.add_argument("--region", help="the stack's region (default: the AWS profile's)")
    args = parser.parse_args(argv)
    try:
        cloudformation = boto3.client("cloudformation", region_name=args.region)
        written = record(cloudformation, args.stage, args.chalice_dir)
    except (RecordError, BotoCoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"recorded {stack_names.stack_name(args.stage)} outputs in {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
