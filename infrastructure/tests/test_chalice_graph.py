"""What `chalice deploy --stage <stage>` will create, from Chalice's own application graph of
this project (chalice/deploy/appgraph.py, the deployer's first stage; no AWS call).

The stack's alarms and log groups name the functions (`stack_names.function_names`), each
function's role gets the policy `function_policies` renders for it, the ManageConnections ARNs
name the WebSocket API's stage, and docs/deploy.md's deploy steps list the roles: all of these
must be what Chalice really makes of app.py and .chalice/config.json.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk.assertions import Template
from botocore.stub import Stubber
from templates import build

from chalicelib.settings import Settings
from infrastructure import function_policies, record_outputs, stack_names
from infrastructure.chatbot_stack import ChatbotConfig
from tests.fake_cloudformation import add_deployed_stack, stack_outputs

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: Chalice imports app.py with the stage's environment, and the
# worker's queue name is read at import time.
DESCRIBE_GRAPH = """
import json, os, sys
from chalice.cli.factory import CLIFactory
from chalice.deploy import models
from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
stage = sys.argv[1]
# As the `chalice` command does (cli/__init__.py): the app is imported with the stage's environment.
config = CLIFactory(os.getcwd(), environ=os.environ).create_config_obj(chalice_stage_name=stage)
graph = DependencyBuilder().build_dependencies(ApplicationGraphBuilder().build(config, stage))
described = {"functions": {}, "queues": [], "websocket_apis": []}
for resource in graph:
    if isinstance(resource, models.LambdaFunction):
        described["functions"][resource.function_name] = {
            "handler": resource.handler, "timeout": resource.timeout, "role": resource.role.role_name,
            "policy_file": os.path.relpath(resource.role.policy.filename),
            "reserved_concurrency": resource.reserved_concurrency}
    elif isinstance(resource, models.SQSEventSource):
        described["queues"].append({"queue": resource.queue, "batch_size": resource.batch_size,
                                    "function": resource.lambda_function.function_name,
                                    "maximum_concurrency": resource.maximum_concurrency})
    elif isinstance(resource, models.WebsocketAPI):
        described["websocket_apis"].append({"name": resource.name, "stage": resource.api_gateway_stage,
                                            "routes": resource.routes})
print(json.dumps(described))
"""


def chalice_graph(stage: str, project: Path = ROOT) -> dict:
    result = subprocess.run([sys.executable, "-c", DESCRIBE_GRAPH, stage], cwd=project, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_chalice_deploys_the_functions_roles_queue_and_websocket_api_the_stack_and_policy_expect(stage):
    graph = chalice_graph(stage)
    stage_config = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][stage]
    prefix = f"{stack_names.APP_NAME}-{stage}"
    worker = f"{prefix}-{stack_names.TURNS_WORKER_HANDLER}"

    assert sorted(graph["functions"]) == sorted(stack_names.function_names(stage))
    # autogen_policy is off: one role per function, named after it, each with its own policy file.
    assert {name: (f["role"], f["policy_file"]) for name, f in graph["functions"].items()} == {
        stack_names.function_name(stage, handler): (
            f"{prefix}-{handler}", f".chalice/{function_policies.policy_file(stage, handler)}"
        )
        for handler in stack_names.HANDLERS
    }
    # The worker's timeout (lambda_functions.turn_worker) is the one the stack and the service assume.
    worker_timeout = ChatbotConfig.from_context(cdk.App(context={"stage": stage}).node).worker_timeout_seconds
    assert Settings.model_validate(stage_config["environment_variables"]).worker_timeout_seconds == worker_timeout
    assert {name: f["timeout"] for name, f in graph["functions"].items()} == {
        prefix: 29, **{f"{prefix}-{handler}": 29 for handler in stack_names.WEBSOCKET_HANDLERS}, worker: worker_timeout,
    }
    (queue,) = graph["queues"]
    assert queue == {"queue": stack_names.turns_queue_name(stage), "batch_size": 1, "function": worker,
                     "maximum_concurrency": graph["functions"][worker]["reserved_concurrency"]}
    assert graph["websocket_apis"] == [
        {"name": f"{prefix}-websocket-api", "stage": stack_names.API_GATEWAY_STAGE,
         "routes": ["$connect", "$disconnect", "$default"]}
    ]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_function_of_a_deployed_stage_has_reserved_concurrency_the_worker_what_the_gpu_batches(stage):
    """Reserved concurrency caps what the stage may run at once: no user, and no flood of users,
    can take the account's every Lambda. The worker's is what the stage's endpoint generates at
    once (the stack's default for the stage, as committed), so streamed turns beyond it wait in
    the queue, not in TGI's (docs/capacity.md)."""
    functions = chalice_graph(stage)["functions"]
    prefix = f"{stack_names.APP_NAME}-{stage}"
    reserved = {name: f["reserved_concurrency"] for name, f in functions.items()}

    assert all(isinstance(count, int) and count > 0 for count in reserved.values()), reserved
    worker = reserved[f"{prefix}-{stack_names.TURNS_WORKER_HANDLER}"]
    assert worker == ChatbotConfig.from_context(cdk.App(context={"stage": stage}).node).worker_concurrency
    # The REST handler also serves listings and synchronous turns, so it has most.
    assert reserved[prefix] == max(reserved.values())


@pytest.fixture
def project(tmp_path):
    """The app and its Chalice config, copied: what `make config` then `chalice deploy` work on."""
    shutil.copy(ROOT / "app.py", tmp_path)
    shutil.copytree(ROOT / "chalicelib", tmp_path / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / ".chalice", tmp_path / ".chalice", ignore=shutil.ignore_patterns("deployed"))
    return tmp_path


@pytest.mark.parametrize(("context", "workers"), [({}, 8), ({"autoscaling": True, "autoscaling_max_instances": 3}, 24)],
                         ids=["one-instance", "up-to-3-instances"])
def test_the_stacks_worker_concurrency_becomes_the_workers_reserve_and_its_event_sources_maximum(
        project, context, workers):
    """From the synthesized template, through `make config`, to what `chalice deploy` would create."""
    config = ChatbotConfig(stage="prod", **context)
    template_outputs = Template.from_stack(build(config)).to_json()["Outputs"]
    literal = {key: output["Value"] for key, output in template_outputs.items() if isinstance(output["Value"], str)}
    cloudformation = boto3.client("cloudformation", region_name="eu-west-1")
    with Stubber(cloudformation) as stubber:
        add_deployed_stack(stubber, {**stack_outputs("prod"), **literal}, stack_names.stack_name("prod"))
        record_outputs.record(cloudformation, "prod", project / ".chalice")

    graph = chalice_graph("prod", project)
    worker = f"{stack_names.APP_NAME}-prod-{stack_names.TURNS_WORKER_HANDLER}"
    assert literal[stack_names.WORKER_CONCURRENCY_OUTPUT] == str(workers)
    assert graph["functions"][worker]["reserved_concurrency"] == workers
    (queue,) = graph["queues"]
    assert queue["maximum_concurrency"] == workers
