"""Records a deployed stage's stack outputs in its Chalice config, so `chalice deploy` needs no hand edits.

    python -m infrastructure.record_outputs --stage dev [--chalice-dir .chalice] [--region REGION]
    python -m infrastructure.record_outputs --placeholders [--chalice-dir .chalice]

Into `config.json` stages.<stage>.environment_variables: the endpoint and table names, the token
limits, the serving container (SERVING) and the model (MODEL_ID), the turns topic ARN and queue
name, the user pool's id and ARN and the page's app client id, the worker's timeout (also as the
`turn_worker` function's lambda_timeout) and its concurrency (also as that function's
reserved_concurrency; app.py gives the same number to its SQS event source, so no delivery is ever
throttled), and the inference component's name when the stack has one (removed when it has not).
Into each function's policy file (`function_policies`, which config.json names per function):
its policy for the stack's partition, region, account and table key. Every file is checked
before any is written.

Once `chalice deploy` has created the stage's WebSocket API (recorded in
.chalice/deployed/<stage>.json), also its URL as WEBSOCKET_URL, which GET /config gives the page,
and that API's id in the ManageConnections statements: run `make config` and `chalice deploy`
once more after the first deploy.

`--placeholders` writes the committed form of every deployed stage's policies instead (no AWS
call): region, account, key and API id are `function_policies.UNSET`, which names nothing.
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from infrastructure import function_policies, stack_names
from infrastructure.function_policies import Deployment

# The stages of config.json that `chalice deploy` deploys (`local` is make run's).
DEPLOYED_STAGES = ("dev", "prod")
# Stack outputs the policies name, each the ARN of a resource the stack names by `stack_names`.
ARN_OUTPUTS = (
    stack_names.ENDPOINT_ARN_OUTPUT,
    stack_names.TABLE_ARN_OUTPUT,
    stack_names.TABLE_KEY_ARN_OUTPUT,
    stack_names.TURNS_QUEUE_ARN_OUTPUT,
)
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
    needed = dict.fromkeys((*stack_names.ENVIRONMENT_OUTPUTS.values(), *ARN_OUTPUTS))
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
    # The worker function's timeout is the one the stack sized its queue's visibility timeout for;
    # its reserved concurrency is what the endpoint serves at once, as is its event source's maximum.
    worker = config["stages"][stage].setdefault("lambda_functions", {}).setdefault(stack_names.TURNS_WORKER_HANDLER, {})
    worker["lambda_timeout"] = int(outputs[stack_names.WORKER_TIMEOUT_OUTPUT])
    worker["reserved_concurrency"] = int(outputs[stack_names.WORKER_CONCURRENCY_OUTPUT])
    for name, key in stack_names.OPTIONAL_ENVIRONMENT_OUTPUTS.items():
        if key in outputs:
            environment[name] = outputs[key]
        else:
            environment.pop(name, None)
    return config


def deployment(outputs: dict[str, str], stage: str) -> Deployment:
    """Where the stack put the stage: its partition, region, account and the table's key. The
    policies name the resources by `stack_names`; a stack whose ARNs differ is refused."""
    _, partition, _, region, account, key = outputs[stack_names.TABLE_KEY_ARN_OUTPUT].split(":", 5)
    where = Deployment(partition, region, account, table_key_id=key.removeprefix("key/"))
    named = {
        stack_names.ENDPOINT_ARN_OUTPUT: function_policies.endpoint_arn,
        stack_names.TABLE_ARN_OUTPUT: function_policies.table_arn,
        stack_names.ENVIRONMENT_OUTPUTS["TURNS_TOPIC_ARN"]: function_policies.topic_arn,
        stack_names.TURNS_QUEUE_ARN_OUTPUT: function_policies.queue_arn,
    }
    for output, arn_of in named.items():
        if outputs[output] != arn_of(stage, where):
            raise RecordError(
                f"the stack's {output} is {outputs[output]}, not {arn_of(stage, where)} as the policies name it"
            )
    return where


def with_policies(config: dict, stage: str, where: Deployment) -> dict[str, dict]:
    """Each function's policy file name and document for `where`, and config.json naming them."""
    functions = config["stages"][stage].setdefault("lambda_functions", {})
    policies = {}
    for handler in stack_names.HANDLERS:
        name = function_policies.policy_file(stage, handler)
        functions.setdefault(handler, {})["iam_policy_file"] = name
        policies[name] = function_policies.policy(stage, handler, where)
    return policies


def policy_files(chalice_dir: Path, stage: str) -> list[Path]:
    """The policy files config.json names for the stage's functions (what `make config` writes
    besides config.json, and `chalice deploy` gives the functions' roles)."""
    functions = _read_json(chalice_dir / "config.json")["stages"][stage].get("lambda_functions", {})
    return [chalice_dir / values["iam_policy_file"] for values in functions.values() if "iam_policy_file" in values]


def deployed_websocket_api(chalice_dir: Path, stage: str) -> dict | None:
    """The WebSocket API that `chalice deploy` created for the stage, as it recorded it in
    .chalice/deployed/<stage>.json (None before the first deploy)."""
    path = chalice_dir / "deployed" / f"{stage}.json"
    if not path.exists():
        return None
    resources = _read_json(path).get("resources", [])
    return next((r for r in resources if r.get("resource_type") == "websocket_api"), None)


def with_websocket_api(config: dict, stage: str, api: dict, where: Deployment) -> Deployment:
    """The page's WebSocket URL in the stage's environment; `where` with that API's id."""
    config["stages"][stage]["environment_variables"][WEBSOCKET_URL_VARIABLE] = api["websocket_api_url"].rstrip("/")
    return dataclasses.replace(where, websocket_api_id=api["websocket_api_id"])


def record(cloudformation, stage: str, chalice_dir: Path) -> list[Path]:
    """Writes the stage's outputs into the Chalice config and policies; returns the files written."""
    outputs = read_outputs(cloudformation, stack_names.stack_name(stage))
    config_path = chalice_dir / "config.json"
    config = with_environment(_read_json(config_path), stage, outputs)
    where = deployment(outputs, stage)
    if websocket_api := deployed_websocket_api(chalice_dir, stage):
        where = with_websocket_api(config, stage, websocket_api, where)
    return _write(chalice_dir, config, with_policies(config, stage, where))


def write_placeholders(chalice_dir: Path) -> list[Path]:
    """Writes the committed form of every deployed stage's policies, naming no resource."""
    config = _read_json(chalice_dir / "config.json")
    policies = {name: document for stage in DEPLOYED_STAGES
                for name, document in with_policies(config, stage, Deployment.unrecorded()).items()}
    return _write(chalice_dir, config, policies)


def _write(chalice_dir: Path, config: dict, policies: dict[str, dict]) -> list[Path]:
    written = [chalice_dir / "config.json", *(chalice_dir / name for name in policies)]
    for path, document in zip(written, (config, *policies.values()), strict=True):
        _write_json(path, document)
    return written


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
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--stage", help="Chalice stage and CDK `stage` context, e.g. dev")
    what.add_argument("--placeholders", action="store_true",
                      help="write the committed policies of every deployed stage, naming no resource")
    parser.add_argument("--chalice-dir", type=Path, default=Path(".chalice"))
    parser.add_argument("--region", help="the stack's region (default: the AWS profile's)")
    args = parser.parse_args(argv)
    try:
        if args.placeholders:
            written = write_placeholders(args.chalice_dir)
            print(f"wrote {len(written) - 1} policies with placeholders; run `make config` again for a recorded stage")
            return 0
        cloudformation = boto3.client("cloudformation", region_name=args.region)
        written = record(cloudformation, args.stage, args.chalice_dir)
    except (RecordError, BotoCoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"recorded {stack_names.stack_name(args.stage)} outputs in {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
