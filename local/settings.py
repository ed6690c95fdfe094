"""The local launcher's settings: one home for `make run`'s processes and the tests.

The `local` stage's environment comes from .chalice/config.json through Chalice's own
config loader, so the WebSocket gateway and the SQS poller see exactly what
`chalice local --stage local` sets.
"""

import os
from pathlib import Path

from chalice.cli.factory import CLIFactory

from local.lambda_runtime import FunctionLimits

ROOT = Path(__file__).resolve().parent.parent
STAGE = "local"
# The local stage's SNS and SQS ARNs (.chalice/config.json) name this region and moto's default account.
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


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


def _chalice_factory() -> CLIFactory:
    # os.environ itself, as the chalice CLI passes it: loading the app sets the stage's variables there.
    return CLIFactory(str(ROOT), environ=os.environ)


def stage_environment() -> dict:
    """The `local` stage's environment variables, global ones included, as chalice local sets them."""
    return dict(_chalice_factory().create_config_obj(chalice_stage_name=STAGE).environment_variables)


def load_app():
    """The project's Chalice app, loaded as `chalice local --stage local` loads it: the stage's
    environment variables are set in os.environ first."""
    return _chalice_factory().load_chalice_app(stage_environment())


def function_limits(handler_name: str | None = None) -> FunctionLimits:
    """The timeout and memory .chalice/config.json gives the local stage's function `handler_name`
    (without one, the stage's own)."""
    config = _chalice_factory().create_config_obj(chalice_stage_name=STAGE)
    if handler_name:
        config = config.scope(STAGE, handler_name)
    return FunctionLimits(timeout_seconds=config.lambda_timeout, memory_mb=config.lambda_memory_size)
