"""`make destroy STAGE=dev`: removes the app (`chalice delete`), then the stack (`cdk destroy`).

    python -m deploy.destroy --stage dev [--yes]

Asks first unless --yes. Afterwards it checks that no endpoint of the stage is left (the one
thing that bills by the hour) and lists what it kept on purpose, with how to delete each: the
chat table and the user pool (the stack retains both), the Hugging Face token's secret, and
any of the stage's log groups left outside the stack (they would stop its next deploy).
"""

import argparse
import sys

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from deploy.deploy import (
    CDK,
    CHALICE,
    CHALICE_DIR,
    INFRASTRUCTURE,
    ROOT,
    StepFailed,
    confirm,
    existing_log_groups,
    run,
    say,
    stack_state,
)
from infrastructure import stack_names
from infrastructure.chatbot_stack import ChatbotConfig
from infrastructure.log_groups import log_group_names


def kept(session, stage: str) -> list[str]:
    """What outlives the stage, each with the command that deletes it."""
    lines = []
    table = stack_names.table_name(stage)
    try:
        session.client("dynamodb").describe_table(TableName=table)
        lines.append(f"  the chat table {table}: aws dynamodb delete-table --table-name {table}")
    except ClientError:
        pass
    cognito = session.client("cognito-idp")
    for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60):
        for pool in page["UserPools"]:
            if pool["Name"] == stack_names.user_pool_name(stage):
                lines.append(f"  the user pool {pool['Id']} ({pool['Name']}, its users): "
                             f"aws cognito-idp delete-user-pool --user-pool-id {pool['Id']}")
    secret = ChatbotConfig.hf_token_secret_name
    try:
        session.client("secretsmanager").describe_secret(SecretId=secret)
        lines.append(f"  the Hugging Face token secret {secret} (every stage of the region reads it): "
                     f"aws secretsmanager delete-secret --secret-id {secret} --recovery-window-in-days 7")
    except ClientError:
        pass
    names = set(log_group_names(stage, inference_component=True).values())
    for name in sorted(existing_log_groups(session.client("logs"), names)):
        lines.append(f"  the log group {name} (it would stop the stage's next deploy): "
                     f"aws logs delete-log-group --log-group-name {name}")
    return lines


def billing_endpoints(session, stage: str) -> list[str]:
    endpoints = session.client("sagemaker").list_endpoints(NameContains=stack_names.endpoint_name(stage))
    return [e["EndpointName"] for e in endpoints["Endpoints"] if e["EndpointName"] == stack_names.endpoint_name(stage)]


def destroy(stage: str, yes: bool) -> int:
    session = boto3.Session()
    region = session.region_name
    stack = stack_names.stack_name(stage)
    deployed = CHALICE_DIR / "deployed" / f"{stage}.json"
    if not yes and not confirm(f"Remove stage {stage} in {region}: the app, then the stack {stack}?"):
        say("make destroy: nothing removed")
        return 1
    try:
        if deployed.exists():
            run([CHALICE, "delete", "--stage", stage], ROOT, "chalice delete")
            (CHALICE_DIR / "deployed" / f"{stage}.fingerprint").unlink(missing_ok=True)
        else:
            say(f"app: no deployment recorded in {deployed.relative_to(ROOT)}; nothing to delete")
        if stack_state(session.client("cloudformation"), stage):
            run([CDK, "destroy", "--force", "--no-notices", "-c", f"stage={stage}"], INFRASTRUCTURE, "cdk destroy")
        else:
            say(f"stack {stack}: not in {region}; nothing to destroy")
        left = billing_endpoints(session, stage)
        if left:
            say(f"make destroy: the endpoint {', '.join(left)} is still there and bills by the hour: "
                f"aws sagemaker delete-endpoint --endpoint-name {left[0]}")
            return 1
        say(f"make destroy: stage {stage} removed; no endpoint is left. Kept on purpose:")
        for line in kept(session, stage) or ["  nothing"]:
            say(line)
    except (StepFailed, ClientError, BotoCoreError) as error:
        say(f"make destroy: {error}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--yes", action="store_true", help="do not ask")
    args = parser.parse_args(argv)
    return destroy(args.stage, args.yes)


if __name__ == "__main__":
    sys.exit(main())
