"""`make run` end to end: the launcher's real servers on free ports, the real local model."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

import boto3
import pytest
from websockets.sync.client import connect

from client.rest import call
from client.websocket import receive, send_chat
from local.launcher import Launcher, launcher_env
from local.net import free_port
from local.settings import BUNDLED_MODEL_NAME
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


def lines_of(log: str, process: str) -> list[str]:
    """What one process of make run printed, without honcho's time and name."""
    return re.findall(rf"^\d\d:\d\d:\d\d {process} +\| (.*)$", log, re.MULTILINE)


def requests_of(log: str, process: str) -> list[str]:
    """Its one-line-per-request lines, without their seconds."""
    return [re.sub(r" \d+\.\d\d s\b.*", "", line) for line in lines_of(log, process)
            if re.search(r" \d+\.\d\d s\b", line)]


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
        config = call("GET", f"{first.url}/config")
    finally:
        exit_code = first.stop()

    assert [status for status, _ in replies] == [200, 200, 200]
    assert all(body["answer"].strip() for _, body in replies)
    assert [body["history_turns"] for _, body in replies] == [0, 1, 2]
    assert bad[0] == 400 and bad[1]["field"] == "sessionid"
    assert [(m["role"], m["content"]) for m in stored[1]["messages"]][::2] == [
        ("user", "'What is the capital of China?'"), ("user", "What is the capital of France?"), ("user", "Thank you!")]
    assert subprotocol is None
    assert config[1]["model"] == BUNDLED_MODEL_NAME  # the page names the model that answers
    assert redrive_policy["maxReceiveCount"] == 3
    assert redrive_policy["deadLetterTargetArn"].endswith(":llama2-chatbot-local-turns-dlq")
    assert set(first.child_pids()) == {"dynamodb", "model", "messaging", "cognito", "websocket", "worker", "api"}
    # Each answered turn's metrics are one EMF line in the log, which never holds a user's text.
    emf = [json.loads(line.split("| ", 1)[1]) for line in first.log.splitlines() if '"_aws"' in line]
    assert [line["Turns"] for line in emf if "Turns" in line] == [[1.0]] * 3
    assert all(line["Stage"] == "local" and line["sessionid"] == "e2e" for line in emf if "Turns" in line)
    assert "capital of" not in first.log and "Thank you" not in first.log
    # The first screen: where everything is, then one line per request; no stand-in's own lines.
    ready = lines_of(first.log, "api")
    assert ready[ready.index(next(line for line in ready if line.startswith("make run is ready"))) + 1:][:3] == [
        f"  chat page:     {first.url}/ (it signs in local@example.com by itself)",
        f"  REST API:      {first.url}/chat (an ID token for curl: TOKEN=$(PORT={port} make -s token))",
        f"  WebSocket API: {first.websocket_url}"]
    assert [line for line in requests_of(first.log, "api") if "/chat" in line] == ["GET /chat 200"] * 3 + [
        "GET /chat 400"]
    assert requests_of(first.log, "model") == ["POST /endpoints/llama2-chatbot-local/invocations 200"] * 3
    assert requests_of(first.log, "websocket") == ["CONNECT $connect 200", "DISCONNECT $disconnect 200"]
    assert lines_of(first.log, "messaging") == lines_of(first.log, "cognito") == []
    assert "HTTP/1.1" not in first.log and "/ping" not in first.log and "Found credentials" not in first.log
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


# A busy machine, simulated: make run's own setting starts these stand-ins this many seconds late
# (local/settings.py). Another way, a test starting its own late servers and pointing make run at
# them with AWS_ENDPOINT_URL_*, could not reach SNS and SQS, Cognito or the gateway, which make
# run always starts itself. Messaging comes last, far later than the seconds a process takes to
# start: the SQS poller called it at once, and its exit stopped make run.
LATE = {"dynamodb": 4, "model": 4, "websocket": 4, "cognito": 8, "messaging": 20}


def test_stand_ins_that_start_late_are_waited_for_and_a_turn_is_answered(tmp_path):
    late = ",".join(f"{name}={seconds}" for name, seconds in LATE.items())
    # VERBOSE as well: with it the stand-ins' own lines come back (the same start serves both).
    launcher = Launcher(free_port(), tmp_path / "data", tmp_path / "run.log", MAKE_RUN_START_DELAYS=late,
                        VERBOSE="1")
    try:
        rest = chat(launcher, "late-rest", "hello")
        with connect(launcher.signed_in_websocket_url(), open_timeout=60) as client:
            streamed = receive(client, send_chat(client, "late-websocket", "hello again"), timeout=120)
    finally:
        launcher.stop()

    assert rest[0] == 200 and rest[1]["answer"].strip()
    assert streamed.types[0] == "accepted" and streamed.last["type"] == "done" and streamed.last["answer"].strip()
    log = launcher.log
    for name, seconds in LATE.items():
        assert lines_of(log, name)[0] == f"starts {seconds} s late (MAKE_RUN_START_DELAYS)"
    # Each caller said it waited, the worker before messaging had said a word of its own (with VERBOSE,
    # moto's banner), so before it listened.
    messaging_spoke = re.search(r"^\S+ messaging +\| (?!starts )", log, re.MULTILINE).start()
    assert log.index("| sqs-poller: waiting for ") < messaging_spoke
    assert "| websocket-gateway: waiting for " in log and "| api: waiting for " in log
    assert '"POST / HTTP/1.1" 200' in "\n".join(lines_of(log, "messaging"))  # moto's access log, with VERBOSE
    assert "GET /ping 200" in "\n".join(lines_of(log, "model"))


def test_a_stand_in_that_never_comes_is_named_and_make_run_stops(tmp_path):
    log_path = tmp_path / "run.log"
    with pytest.raises(RuntimeError, match="exited"):
        Launcher(free_port(), tmp_path / "data", log_path, MAKE_RUN_START_DELAYS="messaging=600",
                 MAKE_RUN_WAIT_SECONDS="5")

    log = log_path.read_text()
    assert re.search(r"(api|sqs-poller|websocket-gateway): gave up after \d+ s \(MAKE_RUN_WAIT_SECONDS=5\) "
                     r"waiting for [^\n]*messaging \(nothing answered at http://127\.0\.0\.1:\d+/moto-api/\)", log)
    assert "messaging stopped" in log


@pytest.mark.parametrize(("variable", "value"), [("MAKE_RUN_START_DELAYS", "moto=3"), ("MAKE_RUN_WAIT_SECONDS", "0")])
def test_a_mistaken_setting_is_reported(tmp_path, variable, value):
    result = subprocess.run([sys.executable, "-m", "local.run"], cwd=ROOT, capture_output=True, text=True,
                            env=launcher_env(free_port(), tmp_path, **{variable: value}), timeout=60)

    assert result.returncode == 2
    assert result.stderr.startswith(f"make run: {variable}={value!r}: give ")


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


def test_serving_vllm_answers_rest_streamed_and_async_turns_with_the_real_model(tmp_path):
    """SERVING=vllm make run: the local model server speaks as vLLM's OpenAI server, the app as
    its client, on every path a turn takes."""
    launcher = Launcher(free_port(), tmp_path / "data", tmp_path / "run.log", SERVING="vllm")
    try:
        rest = chat(launcher, "vllm", "What is the capital of France?")
        with connect(launcher.signed_in_websocket_url(), open_timeout=30) as client:
            streamed = receive(client, send_chat(client, "vllm", "And of Italy?", "t-stream"))
        accepted = launcher.call("POST", "/chat", {"sessionid": "vllm", "query": "And of Spain?", "turn": "t-async",
                                                   "async": True})
        deadline = time.monotonic() + 120
        while (status := launcher.call("GET", "/sessions/vllm/turns/t-async")[1])["status"] == "pending":
            assert time.monotonic() < deadline, "the async turn is still pending"
            time.sleep(0.2)
    finally:
        launcher.stop()

    assert rest[0] == 200 and rest[1]["answer"].strip()
    assert streamed.types[0] == "accepted" and streamed.last["type"] == "done"
    assert streamed.streamed_text == streamed.last["answer"] and streamed.last["history_turns"] == 1
    assert accepted[0] == 202 and status["status"] == "done" and status["history_turns"] == 2
    assert "serving=vllm" in launcher.log
