"""`make run`: the chat service on 127.0.0.1, offline, under one Ctrl-C.

Starts, with honcho:
- dynalite, a DynamoDB that keeps its data in .local-data/ across restarts
  (not started when AWS_ENDPOINT_URL_DYNAMODB is set);
- the local model server, SmolLM2 behind the SageMaker runtime protocol, speaking as the TGI
  container or, with SERVING=vllm, as the vLLM one (not started when
  AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME is set); every process gets SERVING, so the app speaks the same,
  and MODEL_NAME (unless the operator set one), so the page names the model that answers;
- moto's server as SNS and SQS (the turns topic, queue and dead-letter queue);
- another moto server as Cognito: the user pool and the one local user the page signs in by
  itself (local/cognito.py), whose ids every process gets (local/settings.py);
- the WebSocket gateway (local/websocket_gateway.py) on a free port, WEBSOCKET_URL, and the
  SQS poller (local/sqs_poller.py), each running the app in its own process as Lambda would;
- `chalice local --stage local` on PORT (default 8000), which first makes the chat table, the
  topic and queues and the user pool, and serves once the WebSocket gateway does too.
The app is the same as in the cloud: only its clients' endpoints differ.

honcho starts them together and stops them all when one exits, so each process waits, before its
first call, for the services it calls (`--wait-for`, local/readiness.py): which ones is said here,
where the processes are put together. Waiting for nothing else, the stand-ins start at once.
"""

import os
import shlex
import sys
import tempfile
from pathlib import Path

from honcho.manager import Manager

from local.messaging import moto_server_command
from local.net import free_port, port_is_free
from local.settings import (
    COGNITO_MOTO_ENVIRONMENT,
    DEFAULT_PORT,
    ROOT,
    dynalite_command,
    local_model_name,
    offline_aws_environment,
    sign_in_environment,
    stage_environment,
    start_delays,
    wait_seconds,
)
from local.tls import make_local_certificate


def command(*words) -> str:
    return shlex.join(str(word) for word in words)


def wait_arguments(services: dict[str, str], flag: str = "--wait-for") -> list[str]:
    """`--wait-for NAME=URL` for each service a process calls (local/readiness.py)."""
    return [argument for name, url in services.items() for argument in (flag, f"{name}={url}")]


def main() -> int:
    port = int(os.environ.get("PORT", DEFAULT_PORT))
    if not port_is_free(port):
        print(f"make run: port {port} on 127.0.0.1 is already in use; choose another with PORT=<port>",
              file=sys.stderr)
        return 1
    try:
        wait_seconds()  # read by each process: a mistake is reported once, here
        delays = start_delays()
    except ValueError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 2
    data_dir = Path(os.environ.get("LOCAL_DATA_DIR", ROOT / ".local-data")).absolute()
    settings = stage_environment()
    # The container the app and the local model server speak (chalicelib.settings SERVING).
    env = {**offline_aws_environment(), "PYTHONUNBUFFERED": "1", "SERVING": os.environ.get("SERVING", "tgi")}
    manager = Manager()
    # The stand-ins make run starts, each with the URL that answers once it is up (one given by
    # AWS_ENDPOINT_URL_* is up already: it is not waited for).
    stand_ins: dict[str, str] = {}

    def add(name: str, words: list, extra_env: dict | None = None) -> None:
        line = command(*words)
        if name in delays:  # MAKE_RUN_START_DELAYS: as a busy machine may start it
            line = f"echo {shlex.quote(f'starts {delays[name]:g} s late (MAKE_RUN_START_DELAYS)')} " \
                   f"&& sleep {delays[name]:g} && exec {line}"
        manager.add_process(name, line, env={**os.environ, **env, **(extra_env or {})}, cwd=ROOT)

    def calls(*names: str) -> dict[str, str]:
        return {name: stand_ins[name] for name in names if name in stand_ins}

    if "AWS_ENDPOINT_URL_DYNAMODB" not in os.environ:
        dynamodb_port = free_port()
        (data_dir / "dynamodb").mkdir(parents=True, exist_ok=True)
        add("dynamodb", dynalite_command(dynamodb_port, data_dir / "dynamodb"))
        env["AWS_ENDPOINT_URL_DYNAMODB"] = stand_ins["dynamodb"] = f"http://127.0.0.1:{dynamodb_port}"

    if "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME" not in os.environ:
        model_port = free_port()
        limits = {name: settings[name] for name in ("MAX_INPUT_TOKENS", "MAX_TOTAL_TOKENS") if name in settings}
        add("model", [sys.executable, "-m", "local.model_server", "--host", "127.0.0.1", "--port", model_port,
                      "--endpoint-name", settings["SAGEMAKER_ENDPOINT_NAME"], "--serving", env["SERVING"]],
            {**limits, "OMP_WAIT_POLICY": "PASSIVE"})
        env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = f"http://127.0.0.1:{model_port}"
        # The page names the model that answers (an operator's MODEL_NAME is kept); an endpoint
        # given by the URL serves MODEL_ID's.
        if "MODEL_NAME" not in os.environ:
            env["MODEL_NAME"] = local_model_name()
        stand_ins["model"] = env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] + "/ping"  # answers once the model is loaded

    messaging_port = free_port()
    add("messaging", moto_server_command(messaging_port))
    env["AWS_ENDPOINT_URL_SNS"] = env["AWS_ENDPOINT_URL_SQS"] = f"http://127.0.0.1:{messaging_port}"
    stand_ins["messaging"] = env["AWS_ENDPOINT_URL_SQS"] + "/moto-api/"

    cognito_port = free_port()
    add("cognito", moto_server_command(cognito_port), COGNITO_MOTO_ENVIRONMENT)
    env.update(sign_in_environment(f"http://127.0.0.1:{cognito_port}"))
    stand_ins["cognito"] = env["AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"] + "/moto-api/"

    with tempfile.TemporaryDirectory(prefix="llama2-chatbot-tls-") as tls_dir:
        certificate = make_local_certificate(Path(tls_dir))
        websocket_port, management_port = free_port(), free_port()
        env["WEBSOCKET_URL"] = f"ws://127.0.0.1:{websocket_port}"
        env["AWS_CA_BUNDLE"] = str(certificate.ca_bundle)
        # Its events store connections in the table and publish turns: it serves once they exist.
        add("websocket", [sys.executable, "-m", "local.websocket_gateway", "--port", websocket_port,
                          "--management-port", management_port, "--cert-file", certificate.cert_file,
                          "--key-file", certificate.key_file,
                          *wait_arguments(calls("dynamodb", "messaging", "cognito")), "--wait-for-setup"])
        # Its turns read and write the table, ask the model and send to the gateway's management API.
        add("worker", [sys.executable, "-m", "local.sqs_poller",
                       *wait_arguments({**calls("dynamodb", "model", "messaging"),
                                        "websocket": f"https://127.0.0.1:{management_port}/"})])
        # It makes the table, topic, queues and pool, then serves once the page's WebSocket answers.
        add("api", [sys.executable, "-m", "local.api", "--port", port,
                    *wait_arguments(calls("dynamodb", "model", "messaging", "cognito")),
                    *wait_arguments({"websocket": f"http://127.0.0.1:{websocket_port}/"}, "--serve-after")])
        manager.loop()
    return manager.returncode


if __name__ == "__main__":
    sys.exit(main())
