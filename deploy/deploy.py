"""`make deploy STAGE=dev`: a stage from a fresh clone to working and checked, unattended.

    python -m deploy.deploy --stage dev [--yes] [--context "-c alarm_email=ops@example.com"]
                            [--admin-email alice@example.com] [--no-smoke]

First every prerequisite, each refusing with one sentence before anything is created (`Refused`):
the tools, the stack's settings, credentials and region, a region the stack has the serving
container's image for, the GPU quota (a warning where Service Quotas cannot tell), and the Hugging
Face token's secret (stored from HF_TOKEN when missing, if the operator agrees). Then docs/deploy.md's manual
path, step by step: `cdk bootstrap` when the environment is not, `cdk deploy` (its approval
prompt stays unless --yes), `make config`, `make vendor`, `chalice deploy`, `make config` again,
and `chalice deploy` again only when that changed the stage's files. Then the first user, the
smoke check (deploy/smoke.py) and a summary. Each step says whether it changed anything: run
again, it changes only what changed, and an interrupted run can simply be run again.
"""

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import chalice
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from deploy import smoke
from infrastructure import cost, record_outputs, stack_names
from infrastructure.chatbot_stack import ChatbotConfig
from infrastructure.log_groups import log_group_names

ROOT = Path(__file__).resolve().parent.parent
INFRASTRUCTURE = ROOT / "infrastructure"
CHALICE_DIR = ROOT / ".chalice"
CDK = ROOT / "node_modules" / ".bin" / "cdk"
CHALICE = Path(sys.executable).parent / "chalice"
MIN_NODE_MAJOR = 20
DEFAULT_QUALIFIER = "hnb659fds"
# How often the endpoint's status is shown while `cdk deploy` waits for it.
ENDPOINT_REPORT_SECONDS = 30


class Refused(Exception):
    """A prerequisite is missing: one sentence, and nothing was created."""


class StepFailed(Exception):
    """A step failed; what it printed says why. Running again resumes."""


def say(line: str) -> None:
    print(line, flush=True)


def confirm(question: str) -> bool:
    """The operator's yes; no answer (no terminal) is a no."""
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


# --- Prerequisites ---------------------------------------------------------------------------

def parse_context(text: str, stage: str) -> dict[str, str]:
    """`-c key=value ...` (as CDK takes them) into a dict, with the stage."""
    words, context = shlex.split(text or ""), {}
    while words:
        flag = words.pop(0)
        if flag not in ("-c", "--context") or not words or "=" not in words[0]:
            raise Refused(f"CONTEXT must be `-c key=value` pairs, not {text!r}")
        key, _, value = words.pop(0).partition("=")
        context[key] = value
    if context.setdefault("stage", stage) != stage:
        raise Refused(f"CONTEXT says stage={context['stage']}, STAGE says {stage}: give the stage once, as STAGE")
    return context


class _Context(dict):
    """The CDK context as ChatbotConfig.from_context reads it, without starting a CDK app."""

    def try_get_context(self, key):
        return self.get(key)


def pinned(requirement_file: Path, package: str) -> str | None:
    found = re.search(rf"^{re.escape(package)}==(\S+)", requirement_file.read_text(), re.MULTILINE)
    return found[1] if found else None


def check_tools() -> str:
    node = shutil.which("node")
    if node is None:
        raise Refused(f"node is not installed: the CDK CLI needs Node.js {MIN_NODE_MAJOR} or later")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        raise Refused(f"node is {version}: the CDK CLI needs Node.js {MIN_NODE_MAJOR} or later")
    wanted_cdk = json.loads((ROOT / "package.json").read_text())["devDependencies"]["aws-cdk"]
    cdk = subprocess.run([str(CDK), "--version"], capture_output=True, text=True) if CDK.exists() else None
    if cdk is None or cdk.returncode or not cdk.stdout.startswith(wanted_cdk):
        raise Refused(f"the CDK CLI {wanted_cdk} (package.json) is not installed: run `make install-deploy`")
    wanted_chalice = pinned(ROOT / "requirements-deploy.txt", "chalice")
    if chalice.__version__ != wanted_chalice or not CHALICE.exists():
        raise Refused(f"Chalice {wanted_chalice} is not installed: run `make install-deploy`")
    return f"node {version}, CDK CLI {wanted_cdk}, Chalice {wanted_chalice}"


def check_account(session) -> tuple[str, str]:
    """(account, region) of the credentials, or Refused."""
    if not session.region_name:
        raise Refused("no AWS region is configured: set AWS_DEFAULT_REGION or your profile's region")
    try:
        identity = session.client("sts").get_caller_identity()
    except (NoCredentialsError, NoRegionError) as error:
        raise Refused(f"no usable AWS credentials ({error}): configure a profile or AWS_ACCESS_KEY_ID") from None
    except (ClientError, BotoCoreError) as error:
        raise Refused(f"the AWS credentials were refused ({error}): check your profile") from None
    return identity["Account"], session.region_name


def check_region(region: str, config: ChatbotConfig) -> None:
    """The serving container's image is pinned in the region's registry."""
    image = config.image
    if region not in image.registry_accounts:
        raise Refused(f"region {region} has no {config.serving} image the stack knows: "
                      f"choose one of {image.supported_regions}")


def check_quota(session, config: ChatbotConfig) -> str:
    """The endpoint quota for the instance type where Service Quotas answers; a warning where not."""
    name = f"{config.instance_type} for endpoint usage"
    try:
        pages = session.client("service-quotas").get_paginator("list_service_quotas").paginate(
            ServiceCode="sagemaker")
        quota = next((q for page in pages for q in page["Quotas"] if q["QuotaName"] == name), None)
    except (ClientError, BotoCoreError) as error:
        reason = str(error).splitlines()[0][:160]
        return f"warning: could not read the quota '{name}' ({reason}); if the endpoint fails to start, check it"
    if quota is None:
        return f"warning: Service Quotas does not list '{name}'; if the endpoint fails to start, check it"
    if quota["Value"] < config.max_instances:
        raise Refused(
            f"the quota '{name}' is {quota['Value']:g} in {session.region_name} and the stage needs "
            f"{config.max_instances}: aws service-quotas request-service-quota-increase --service-code sagemaker "
            f"--quota-code {quota['QuotaCode']} --desired-value {config.max_instances}")
    return f"quota '{name}': {quota['Value']:g}"


def check_secret(session, config: ChatbotConfig, yes: bool) -> str:
    secrets = session.client("secretsmanager")
    name = config.hf_token_secret_name
    try:
        secrets.describe_secret(SecretId=name)
        return f"Hugging Face token secret {name}: found"
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise Refused(f"cannot read the secret {name} ({error})") from None
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise Refused(f"the Hugging Face token secret {name} is not in {session.region_name}: set HF_TOKEN "
                      "(`read -rs HF_TOKEN; export HF_TOKEN`) and run again to store it, or store it yourself")
    if not yes and not confirm(f"Store HF_TOKEN as the secret {name} in {session.region_name}?"):
        raise Refused(f"the Hugging Face token secret {name} is needed; not stored")
    secrets.create_secret(Name=name, SecretString=token, Description="Hugging Face token of the Llama 2 chatbot")
    return f"Hugging Face token secret {name}: stored from HF_TOKEN"


def existing_log_groups(logs, names: set[str]) -> set[str]:
    """Which of these log groups exist (a name is also the prefix of others': another stage's)."""
    return {group["logGroupName"] for name in names
            for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=name)
            for group in page["logGroups"]} & names


def check_log_groups(session, config: ChatbotConfig, yes: bool) -> str:
    """The stack creates the stage's log groups (infrastructure/log_groups.py). A stage deployed by
    an earlier release has them already, made by Lambda and SageMaker on first write, outside the
    stack: CloudFormation cannot create a group that exists, so `cdk deploy` would fail on them
    ("already exists") after a long update, and roll it back.

    The way out offered is deleting them. That loses their logs for good, so it is done only on
    the operator's own yes: YES=1, which answers CDK's approval and storing the token, refuses here.
    Importing them is not offered: `cdk deploy --import-existing-resources` takes only resources
    whose DeletionPolicy is Retain (the stack deletes its groups with it; AWS's guide,
    import-resources-automatically.html); `cdk import` asks about every resource an upgrade adds,
    and an imported group keeps its settings (no retention: CloudFormation reports drift, it does
    not apply the template's); and moto has no import, so neither could be tested here."""
    names = set(log_group_names(config.stage, inference_component=config.serves_through_inference_component).values())
    stack = stack_names.stack_name(config.stage)
    try:
        cloudformation = session.client("cloudformation")
        # A stack mid-change (an interrupted deploy) may have made a group that has no
        # PhysicalResourceId yet: the groups are judged once CloudFormation is done with it.
        settled = wait_while_in_progress(cloudformation, config.stage)
        logs = session.client("logs")
        existing = existing_log_groups(logs, names)
        owned = set()
        if settled:
            pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
            owned = {resource.get("PhysicalResourceId") for page in pages for resource in page["StackResourceSummaries"]
                     if resource["ResourceStatus"] != "DELETE_COMPLETE"}
    except (ClientError, BotoCoreError) as error:
        raise Refused(f"cannot tell whether the stage's log groups exist outside the stack ({error})") from None
    orphans = sorted(existing - owned)
    if not existing:
        return f"log groups: none yet (the stack creates its {len(names)})"
    if not orphans:
        return f"log groups: {len(existing)} of {len(names)} exist, all the stack's own"
    if not yes and confirm(f"The log groups {', '.join(orphans)} exist outside the stack {stack} and would fail "
                           f"cdk deploy. Delete them and their logs (export first what you must keep)?"):
        for name in orphans:
            try:
                logs.delete_log_group(logGroupName=name)
            except (ClientError, BotoCoreError) as error:
                gone = isinstance(error, ClientError) and error.response["Error"]["Code"] == "ResourceNotFoundException"
                if not gone:
                    raise Refused(f"could not delete the log group {name} ({error}): run make deploy again, "
                                  "which offers to delete the groups still left") from None
        return f"log groups {', '.join(orphans)}: deleted (they were outside the stack, which creates them)"
    raise Refused(
        f"the log groups {', '.join(orphans)} exist outside the stack {stack} (Lambda or SageMaker made them "
        f"before the stack did) and cdk deploy would fail on them after a long update: export what you must "
        f"keep, then delete them (`for group in {' '.join(orphans)}; do aws logs delete-log-group "
        f"--log-group-name $group; done`)" + (", or run make deploy without YES=1, which offers to" if yes else ""))


# --- Steps ------------------------------------------------------------------------------------

def run(command: list, cwd: Path = ROOT, what: str = "") -> None:
    say(f"$ {shlex.join(str(word) for word in command)}")
    if subprocess.run([str(word) for word in command], cwd=cwd).returncode:
        raise StepFailed(f"{what or command[0]} failed (see above); fix it and run make deploy again")


def bootstrap(session, account: str, region: str) -> str:
    context = json.loads((INFRASTRUCTURE / "cdk.json").read_text()).get("context", {})
    qualifier = context.get("@aws-cdk/core:bootstrapQualifier", DEFAULT_QUALIFIER)
    try:
        version = session.client("ssm").get_parameter(Name=f"/cdk-bootstrap/{qualifier}/version")["Parameter"]
        return f"CDK environment aws://{account}/{region}: bootstrapped already (version {version['Value']})"
    except ClientError as error:
        if error.response["Error"]["Code"] != "ParameterNotFound":
            raise
    run([CDK, "bootstrap", f"aws://{account}/{region}", "--no-notices"], INFRASTRUCTURE, "cdk bootstrap")
    return f"CDK environment aws://{account}/{region}: bootstrapped"


def stack_state(cloudformation, stage: str) -> dict | None:
    try:
        return cloudformation.describe_stacks(StackName=stack_names.stack_name(stage))["Stacks"][0]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise


def wait_while_in_progress(cloudformation, stage: str) -> dict | None:
    """An interrupted run may leave the stack mid-change: CloudFormation finishes it first. The
    stack's state once settled (None: no stack)."""
    started = time.monotonic()
    while (state := stack_state(cloudformation, stage)) and state["StackStatus"].endswith("_IN_PROGRESS"):
        say(f"stack {state['StackName']} is {state['StackStatus']} ({_elapsed(started)}): waiting for it")
        time.sleep(ENDPOINT_REPORT_SECONDS)
    return state


def watch_endpoint(session, stage: str, done: threading.Event) -> None:
    """While `cdk deploy` runs: the endpoint's status and the time so far, every so often."""
    sagemaker = session.client("sagemaker")
    started, last = time.monotonic(), None
    while not done.wait(ENDPOINT_REPORT_SECONDS):
        try:
            status = sagemaker.describe_endpoint(EndpointName=stack_names.endpoint_name(stage))["EndpointStatus"]
        except (ClientError, BotoCoreError):
            status = "not created yet"
        if status != "InService" or last != status:
            starting = " (an instance starts and the container loads the model: 10-20 minutes)"
            say(f"  endpoint {stack_names.endpoint_name(stage)}: {status}, {_elapsed(started)} into cdk deploy"
                + (starting if status == "Creating" else ""))
        last = status


def cdk_deploy(session, cloudformation, stage: str, context: dict[str, str], yes: bool) -> str:
    before = stack_state(cloudformation, stage)
    command = [CDK, "deploy", "--no-notices", "--progress", "events",
               "--require-approval", "never" if yes else "broadening"]
    for key, value in context.items():
        command += ["-c", f"{key}={value}"]
    done = threading.Event()
    watcher = threading.Thread(target=watch_endpoint, args=(session, stage, done), daemon=True)
    watcher.start()
    try:
        run(command, INFRASTRUCTURE, "cdk deploy")
    finally:
        done.set()
        watcher.join()
    after = stack_state(cloudformation, stage)
    if before and after and _changed_at(before) == _changed_at(after):
        return f"stack {after['StackName']}: unchanged"
    return f"stack {after['StackName']}: {'updated' if before else 'created'} ({after['StackStatus']})"


def _changed_at(state: dict):
    return state.get("LastUpdatedTime") or state["CreationTime"]


def record_config(session, stage: str) -> bool:
    """`make config`; whether it changed the stage's files."""
    files = [CHALICE_DIR / "config.json", *record_outputs.policy_files(CHALICE_DIR, stage)]
    before = [path.read_bytes() for path in files]
    try:
        record_outputs.record(session.client("cloudformation"), stage, CHALICE_DIR)
    except record_outputs.RecordError as error:
        raise StepFailed(f"make config: {error}") from None
    changed = before != [path.read_bytes() for path in files]
    say(f"make config: {'recorded' if changed else 'unchanged'} "
        f"{', '.join(str(path.relative_to(ROOT)) for path in files)}")
    return changed


def app_fingerprint(stage: str) -> str:
    """What `chalice deploy` ships for the stage: the app, the vendored packages' pins, the
    stage's settings and its functions' policies, and Chalice's version."""
    digest = hashlib.sha256(chalice.__version__.encode())
    config = json.loads((CHALICE_DIR / "config.json").read_text())
    stage_config = config["stages"][stage]
    digest.update(json.dumps({**{k: v for k, v in config.items() if k != "stages"}, "stage": stage_config},
                             sort_keys=True).encode())
    paths = [ROOT / "app.py", ROOT / "requirements-lambda.txt",
             *record_outputs.policy_files(CHALICE_DIR, stage),
             *sorted(p for p in (ROOT / "chalicelib").rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def chalice_deploy(stage: str, force: bool = False) -> str:
    """`chalice deploy`, unless the stage already runs exactly this app (fingerprint recorded)."""
    deployed = CHALICE_DIR / "deployed" / f"{stage}.json"
    fingerprint_file = CHALICE_DIR / "deployed" / f"{stage}.fingerprint"
    fingerprint = app_fingerprint(stage)
    if not force and deployed.exists() and fingerprint_file.exists() and fingerprint_file.read_text() == fingerprint:
        return "chalice deploy: the app and its settings are unchanged since the last deploy; not redeployed"
    fingerprint_file.unlink(missing_ok=True)
    run([CHALICE, "deploy", "--stage", stage], ROOT, "chalice deploy")
    fingerprint_file.write_text(app_fingerprint(stage))
    return "chalice deploy: deployed"


def create_admin(session, pool_id: str, email: str) -> str:
    cognito = session.client("cognito-idp")
    try:
        user = cognito.admin_get_user(UserPoolId=pool_id, Username=email)
        return f"user {email}: exists already ({user['UserStatus']}), not created"
    except ClientError as error:
        if error.response["Error"]["Code"] != "UserNotFoundException":
            raise
    cognito.admin_create_user(UserPoolId=pool_id, Username=email, DesiredDeliveryMediums=["EMAIL"], UserAttributes=[
        {"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}])
    return f"user {email}: created; Cognito e-mails a temporary password, to be changed at the first sign-in"


# --- Summary ----------------------------------------------------------------------------------

def hourly_costs(session, stage: str, config: ChatbotConfig) -> tuple[float, float]:
    """(now, idle) in dollars an hour, from infrastructure/cost.py's prices: the instances the
    endpoint runs now, and the option's idle month, over the month's hours."""
    chalice_config = json.loads((CHALICE_DIR / "config.json").read_text())
    memory = cost.lambda_memory_gb(chalice_config, stage)
    option = "scale to zero" if config.scale_to_zero else "schedule" if config.schedule else "always on"
    idle = sum(cost.bill(cost.scenario(option, 0, memory)).values()) / cost.HOURS_A_MONTH
    fixed = sum(cost.bill(cost.scenario("scale to zero", 0, memory)).values()) / cost.HOURS_A_MONTH
    try:
        variants = session.client("sagemaker").describe_endpoint(
            EndpointName=stack_names.endpoint_name(stage)).get("ProductionVariants", [])
        instances = sum(v.get("CurrentInstanceCount", 0) for v in variants)
    except (ClientError, BotoCoreError):
        instances = 0
    return fixed + instances * cost.PRICES["instance_hours"].dollars, idle


def summary(session, stage: str, config: ChatbotConfig, region: str) -> list[str]:
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack_state(
        session.client("cloudformation"), stage).get("Outputs", [])}
    url, pool = smoke.deployed_stage(stage, CHALICE_DIR)
    environment = json.loads((CHALICE_DIR / "config.json").read_text())["stages"][stage]["environment_variables"]
    dashboard = outputs.get(stack_names.DASHBOARD_NAME_OUTPUT, stack_names.dashboard_name(stage))
    now, idle = hourly_costs(session, stage, config)
    priced = cost.PRICES["instance_hours"].per
    return [
        f"stage {stage} in {region}:",
        f"  the chat page     {url}",
        f"  REST API          {url}",
        f"  WebSocket API     {environment.get('WEBSOCKET_URL')}",
        f"  user pool         {pool}",
        f"  dashboard         https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#dashboards/dashboard/{dashboard}",
        f"  cost              ${now:,.3f} an hour now, ${idle:,.3f} an hour idle"
        f" ({cost.REGION} list prices of {cost.PRICES_READ}, {priced}; `make cost STAGE={stage}` for the last 30 days)",
        "next:",
        f"  open the chat page and sign in (users: ADMIN_EMAIL=... make deploy STAGE={stage}, or docs/deploy.md's "
        "admin-create-user)",
        f"  make smoke STAGE={stage}     checks the stage end to end again, any time",
        f"  make destroy STAGE={stage}   removes the app and the stack (the endpoint bills by the hour)",
    ]


def _elapsed(started: float) -> str:
    seconds = round(time.monotonic() - started)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def deploy(stage: str, context_text: str, yes: bool, admin_email: str | None, run_smoke: bool) -> int:
    started = time.monotonic()
    say(f"make deploy STAGE={stage}: prerequisites")
    try:
        say(f"  tools: {check_tools()}")
        context = parse_context(context_text, stage)
        try:
            config = ChatbotConfig.from_context(_Context(context))
        except ValueError as error:
            raise Refused(f"the stack's settings are not valid: {error}") from None
        session = boto3.Session()
        account, region = check_account(session)
        say(f"  AWS account {account}, region {region}")
        check_region(region, config)
        say(f"  {check_quota(session, config)}")
        say(f"  {check_log_groups(session, config, yes)}")
        say(f"  {check_secret(session, config, yes)}")
    except Refused as refusal:
        say(f"make deploy: refused: {refusal}")
        return 2
    cloudformation = session.client("cloudformation")
    try:
        say(bootstrap(session, account, region))
        say(cdk_deploy(session, cloudformation, stage, context, yes))
        record_config(session, stage)
        run([sys.executable, "-m", "deploy.package"], ROOT, "make vendor")
        say(chalice_deploy(stage))
        if record_config(session, stage):
            say(chalice_deploy(stage, force=True))
        url, pool = smoke.deployed_stage(stage, CHALICE_DIR)
        if admin_email:
            say(create_admin(session, pool, admin_email))
        passed = smoke.run(url, pool) if run_smoke else None
        for line in summary(session, stage, config, region):
            say(line)
    except (StepFailed, LookupError, ClientError, BotoCoreError) as error:
        say(f"make deploy: {error}")
        return 1
    if passed is None:
        say(f"make deploy: done in {_elapsed(started)}; the smoke check was skipped (make smoke STAGE={stage})")
        return 0
    say(f"make deploy: done in {_elapsed(started)}; " + ("the smoke check passed" if passed else
        "the smoke check FAILED (above): the stage is deployed but does not work end to end"))
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--yes", action="store_true", help="no questions: CDK's approval, storing HF_TOKEN")
    parser.add_argument("--context", default="", help='CDK settings, e.g. "-c alarm_email=ops@example.com"')
    parser.add_argument("--admin-email", help="create this user in the stage's pool (Cognito e-mails a password)")
    parser.add_argument("--no-smoke", action="store_true", help="skip the smoke check at the end")
    args = parser.parse_args(argv)
    return deploy(args.stage, args.context, args.yes, args.admin_email or None, not args.no_smoke)


if __name__ == "__main__":
    sys.exit(main())
