"""`make run`: the chat service on 127.0.0.1, offline, under one Ctrl-C.

Starts, with honcho:
- dynalite, a DynamoDB that keeps its data in .local-data/ across restarts
  (not started when AWS_ENDPOINT_URL_DYNAMODB is set);
- the local model server, SmolLM2 behind the SageMaker runtime protocol
  (not started when AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME is set);
- moto's server as SNS and SQS (the turns topic, queue and dead-letter queue);
- another moto server as Cognito: the user pool and the one local user the page signs in by
  itself (local/cognito.py), whose ids every process gets (local/settings.py);
- the WebSocket gateway (local/websocket_gateway.py) on a free port, WEBSOCKET_URL, and the
  SQS poller (local/sqs_poller.py), each running the app in its own process as Lambda would;
- `chalice local --stage local` on PORT (default 8000), once the others answer
  and the chat table, topic and queues exist.
The app is the same as in the cloud: only its clients' endpoints differ.
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
    ROOT,
    dynalite_command,
    offline_aws_environment,
    sign_in_environment,
    stage_environment,
)
from local.tls import make_local_certificate

DEFAULT_PORT = 8000


def command(*words) -> str:
    return shlex.join(str(word) for word in words)


def main() -> int:
    port = int(os.environ.get("PORT", DEFAULT_PORT))
    if not port_is_free(port):
        print(f"make run: port {port} on 127.0.0.1 is already in use; choose another with PORT=<port>",
              file=sys.stderr)
        return 1
    data_dir = Path(os.environ.get("LOCAL_DATA_DIR", ROOT / ".local-data"))
    settings = stage_environment()
    env = {**offline_aws_environment(), "PYTHONUNBUFFERED": "1"}
    manager = Manager()
    wait_for = []

    if "AWS_ENDPOINT_URL_DYNAMODB" not in os.environ:
        dynamodb_port = free_port()
        (data_dir / "dynamodb").mkdir(parents=True, exist_ok=True)
        manager.add_process("dynamodb", command(*dynalite_command(dynamodb_port, data_dir / "dynamodb")),
                            env={**os.environ, **env})
        env["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{dynamodb_port}"
        wait_for.append(env["AWS_ENDPOINT_URL_DYNAMODB"])

    if "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME" not in os.environ:
        model_port = free_port()
        limits = {name: settings[name] for name in ("MAX_INPUT_TOKENS", "MAX_TOTAL_TOKENS") if name in settings}
        manager.add_process("model", command(
            sys.executable, "-m", "local.model_server", "--host", "127.0.0.1", "--port", model_port,
            "--endpoint-name", settings["SAGEMAKER_ENDPOINT_NAME"]),
            env={**os.environ, **env, **limits, "OMP_WAIT_POLICY": "PASSIVE"}, cwd=ROOT)
        env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = f"http://127.0.0.1:{model_port}"
        wait_for.append(env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] + "/ping")

    messaging_port = free_port()
    manager.add_process("messaging", command(*moto_server_command(messaging_port)), env={**os.environ, **env})
    env["AWS_ENDPOINT_URL_SNS"] = env["AWS_ENDPOINT_URL_SQS"] = f"http://127.0.0.1:{messaging_port}"
    wait_for.append(env["AWS_ENDPOINT_URL_SQS"] + "/moto-api/")

    cognito_port = free_port()
    manager.add_process("cognito", command(*moto_server_command(cognito_port)),
                        env={**os.environ, **env, **COGNITO_MOTO_ENVIRONMENT})
    env.update(sign_in_environment(f"http://127.0.0.1:{cognito_port}"))
    wait_for.append(env["AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"] + "/moto-api/")

    with tempfile.TemporaryDirectory(prefix="llama2-chatbot-tls-") as tls_dir:
        certificate = make_local_certificate(Path(tls_dir))
        websocket_port, management_port = free_port(), free_port()
        env["WEBSOCKET_URL"] = f"ws://127.0.0.1:{websocket_port}"
        env["AWS_CA_BUNDLE"] = str(certificate.ca_bundle)
        manager.add_process("websocket", command(
            sys.executable, "-m", "local.websocket_gateway", "--port", websocket_port,
            "--management-port", management_port, "--cert-file", certificate.cert_file,
            "--key-file", certificate.key_file), env={**os.environ, **env}, cwd=ROOT)
        manager.add_process("worker", command(sys.executable, "-m", "local.sqs_poller"),
                            env={**os.environ, **env}, cwd=ROOT)
        manager.add_process("api", command(
            sys.executable, "-m", "local.api", "--port", port,
            *[arg for url in wait_for for arg in ("--wait-for", url)]), env={**os.environ, **env}, cwd=ROOT)
        manager.loop()
    return manager.returncode


if __name__ == "__main__":
    sys.exit(main())
