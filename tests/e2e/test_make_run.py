"""`make run` end to end: the launcher's real servers on free ports, the real local model."""

import json
import os
import subprocess
import sys
import time
import urllib.parse

import boto3
from websockets.sync.client import connect

from client.rest import call
from local.launcher import Launcher, launcher_env
from local.net import free_port
from tests.servers import ROOT, dynalite, running


def chat(launcher, sessionid, query):
    return launcher.call("GET", "/chat?" + urllib.parse.urlencode({"sessionid": sessionid, "query": query}))


def websocket_and_queue(launcher) -> tuple[str, dict]:
    """The launcher's WebSocket handshake works and its turns queue has a dead-letter queue:
    the subprotocol it answered and the queue's redrive policy."""
    with connect(launcher.signed_in_websocket_url(), open_timeout=10) as client:
        subprotocol = client.subprotocol
    queue_url = launcher.queue_url
    sqs = boto3.client("sqs", endpoint_url=urllib.parse.urljoin(queue_url, "/"))
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    return subprotocol, json.loads(attributes["RedrivePolicy"])


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_chat_survives_a_restart_and_nothing_is_left_running(tmp_path):
    port = free_port()
    first = Launcher(port, tmp_path / "data", tmp_path / "first.log")
    try:
        replies = [chat(first, "e2e", q) for q in
                   ("'What is the capital of China?'", "What is the capital of France?", "Thank you!")]
        bad = chat(first, "bad id!", "hello")
        stored = first.call("GET", "/sessions/e2e/messages")
        subprotocol, redrive_policy = websocket_and_queue(first)
    finally:
        exit_code = first.stop()

    assert [status for status, _ in replies] == [200, 200, 200]
    assert all(body["answer"].strip() for _, body in replies)
    assert [body["history_turns"] for _, body in replies] == [0, 1, 2]
    assert bad[0] == 400 and bad[1]["field"] == "sessionid"
    assert [(m["role"], m["content"]) for m in stored[1]["messages"]][::2] == [
        ("user", "'What is the capital of China?'"), ("user", "What is the capital of France?"), ("user", "Thank you!")]
    assert subprotocol is None
    assert redrive_policy["maxReceiveCount"] == 3
    assert redrive_policy["deadLetterTargetArn"].endswith(":llama2-chatbot-local-turns-dlq")
    assert set(first.child_pids()) == {"dynamodb", "model", "messaging", "cognito", "websocket", "worker", "api"}
    # Each answered turn's metrics are one EMF line in the log, which never holds a user's text.
    emf = [json.loads(line.split("| ", 1)[1]) for line in first.log.splitlines() if '"_aws"' in line]
    assert [line["Turns"] for line in emf if "Turns" in line] == [[1.0]] * 3
    assert all(line["Stage"] == "local" and line["sessionid"] == "e2e" for line in emf if "Turns" in line)
    assert "capital of" not in first.log and "Thank you" not in first.log
    assert exit_code == 130  # the shell's code for Ctrl-C
    time.sleep(0.5)
    assert not any(is_running(pid) for pid in first.child_pids().values())

    second = Launcher(port, tmp_path / "data", tmp_path / "second.log")
    try:
        after_restart = second.call("GET", "/sessions/e2e/messages")
        continued = chat(second, "e2e", "What did I ask first?")
        # `make token`, as the README's curl uses it: the same user, so the same conversations.
        token = subprocess.run([sys.executable, "-m", "local.id_token"], cwd=ROOT, capture_output=True, text=True,
                               env={**os.environ, "PORT": str(port)}, timeout=60, check=True).stdout.strip()
        with_make_token = call("GET", f"{second.url}/sessions/e2e/messages", token=token)
    finally:
        second.stop()

    assert after_restart == stored
    assert with_make_token == (200, {**stored[1], "messages": with_make_token[1]["messages"]})
    assert len(with_make_token[1]["messages"]) == 8
    assert continued[0] == 200 and continued[1]["history_turns"] == 3


def test_a_port_in_use_is_reported(tmp_path):
    with running(dynalite(port := free_port()), f"http://127.0.0.1:{port}"):
        result = subprocess.run([sys.executable, "-m", "local.run"], cwd=ROOT, capture_output=True, text=True,
                                env=launcher_env(port, tmp_path), timeout=60)

    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_an_existing_dynamodb_is_used_and_given_the_table(tmp_path):
    dynamodb_port = free_port()
    dynamodb_url = f"http://127.0.0.1:{dynamodb_port}"
    with running(dynalite(dynamodb_port), dynamodb_url):
        launcher = Launcher(free_port(), tmp_path / "data", tmp_path / "run.log",
                            AWS_ENDPOINT_URL_DYNAMODB=dynamodb_url)
        try:
            status, _ = chat(launcher, "s", "hi")
            tables = boto3.client("dynamodb", endpoint_url=dynamodb_url).list_tables()["TableNames"]
        finally:
            launcher.stop()

    assert status == 200
    assert set(launcher.child_pids()) == {"model", "messaging", "cognito", "websocket", "worker", "api"}
    assert tables == ["llama2-chatbot-local-chat"]
