"""The local model server over the wire, through boto3's sagemaker-runtime client as the app calls it.

Each server is a real `python -m local.model_server` process on a free port of 127.0.0.1.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS
from local.net import free_port

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = "llama2-chatbot-local"
# Small enough that over-limit prompts are cheap to tokenize.
SMALL_LIMITS = {"MAX_INPUT_TOKENS": "64", "MAX_TOTAL_TOKENS": "128"}
# Variables the server reads that a developer's shell may have set.
SERVER_VARIABLES = ("MAX_INPUT_TOKENS", "MAX_TOTAL_TOKENS", "LOCAL_MODEL_PATH", "VERBOSE", "SERVING")
STARTUP_SECONDS = 60

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}
QUESTION = {"role": "user", "content": "What is the capital of France?"}
# The body the app sends.
CHAT_BODY = {
    "messages": [SYSTEM, QUESTION],
    "max_tokens": 48,
    "temperature": 0.6,
    "top_p": 0.9,
    "stop": ["[INST]"],
}


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def launch(log: Path, port: int, environment: dict[str, str] | None = None) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if name not in SERVER_VARIABLES}
    command = [sys.executable, "-m", "local.model_server", "--host", "127.0.0.1",
               "--port", str(port), "--endpoint-name", ENDPOINT]
    with log.open("w") as output:
        return subprocess.Popen(command, cwd=REPO, env=env | (environment or {}),
                                stdout=output, stderr=subprocess.STDOUT)


def ping(url: str) -> int:
    with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
        return response.status


def start_server(log: Path, environment: dict[str, str] | None = None) -> RunningServer:
    port = free_port()
    server = RunningServer(launch(log, port, environment), port, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"model server exited with {server.process.returncode}:\n{log.read_text()}")
        try:
            ping(server.url)
            return server
        except OSError:
            time.sleep(0.1)
    stop_server(server)
    pytest.fail(f"model server did not answer /ping in {STARTUP_SECONDS} s:\n{log.read_text()}")


def stop_server(server: RunningServer, sent: signal.Signals = signal.SIGTERM) -> int:
    """Stops only the process this test started; its exit code tells whether it shut down cleanly."""
    server.process.send_signal(sent)
    try:
        return server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        pytest.fail(f"model server ignored {sent.name}:\n{server.log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("model-server") / "server.log")
    yield running
    assert stop_server(running) == 0, running.log.read_text()


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("small-model-server") / "server.log", SMALL_LIMITS)
    yield running
    assert stop_server(running) == 0, running.log.read_text()


def sagemaker_runtime(server: RunningServer):
    """Fake credentials, so botocore signs without looking for real ones."""
    return boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url=server.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
    )


def invoke(server: RunningServer, body, endpoint: str = ENDPOINT) -> dict:
    payload = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = sagemaker_runtime(server).invoke_endpoint(
        EndpointName=endpoint, Body=payload, ContentType="application/json", Accept="application/json"
    )
    assert response["ContentType"] == "application/json"
    return json.loads(response["Body"].read())


def model_error(server: RunningServer, body) -> dict:
    """The ModelError SageMaker raises for a container's error, with its modeled fields."""
    client = sagemaker_runtime(server)
    with pytest.raises(client.exceptions.ModelError) as raised:
        invoke(server, body)
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["Error"]["Code"] == "ModelError"
    assert response["Error"]["Message"].startswith(
        f'Received client error ({response["OriginalStatusCode"]}) from primary with message '
        f'"{response["OriginalMessage"]}". See https://'
    )
    assert response["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{ENDPOINT}")
    return response


def tgi_validation_error(detail: str) -> dict:
    return {"error": f"Input validation error: {detail}", "error_type": "validation"}


def prompt_tokens(server: RunningServer, messages: list[dict]) -> int:
    return invoke(server, {"messages": messages, "max_tokens": 1})["usage"]["prompt_tokens"]


def test_ping_answers_200(server):
    assert ping(server.url) == 200


def test_answers_in_tgi_chat_completion_format(server):
    completion = invoke(server, CHAT_BODY)

    assert completion["object"] == "chat.completion"
    assert {"id", "created", "model", "system_fingerprint"} <= completion.keys()
    [choice] = completion["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length")
    usage = completion["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= CHAT_BODY["max_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_prompt_tokens_count_the_whole_rendered_conversation(server):
    one_turn = prompt_tokens(server, [SYSTEM, QUESTION])
    answer = {"role": "assistant", "content": "Paris."}
    follow_up = {"role": "user", "content": "And Italy?"}
    three_turns = prompt_tokens(server, [SYSTEM, QUESTION, answer, follow_up])
    assert three_turns > one_turn


def test_ping_answers_while_the_model_is_busy(server):
    # About 1,000 prompt tokens keep the model busy for seconds on one thread.
    long_prompt = {"messages": [{"role": "user", "content": "hello " * 1000}], "max_tokens": 1}
    generating = threading.Thread(target=invoke, args=(server, long_prompt))
    generating.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert ping(server.url) == 200
    answered_in = time.monotonic() - started
    still_generating = generating.is_alive()
    generating.join()
    assert still_generating, "the generation ended before /ping was tried"
    assert answered_in < 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        {"max_tokens": 10},
        {"messages": []},
        {"messages": "hello"},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": ["hi"]}]},
        {"messages": [QUESTION], "max_tokens": "10"},
        {"messages": [QUESTION], "max_tokens": -1},
        {"messages": [QUESTION], "temperature": "hot"},
        {"messages": [QUESTION], "stop": "[INST]"},
    ],
    ids=["not-json", "not-an-object", "no-messages", "empty-messages", "messages-not-a-list",
         "unknown-role", "no-content", "content-not-a-string", "max-tokens-not-a-number",
         "negative-max-tokens", "temperature-not-a-number", "stop-not-a-list"],
)
def test_malformed_body_is_a_validation_error(server, body):
    client = sagemaker_runtime(server)
    with pytest.raises(client.exceptions.ValidationError) as raised:
        invoke(server, body)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert raised.value.response["Error"]["Message"]


def test_unknown_endpoint_is_a_validation_error_as_on_sagemaker(server):
    client = sagemaker_runtime(server)
    with pytest.raises(client.exceptions.ValidationError) as raised:
        invoke(server, CHAT_BODY, endpoint="no-such-endpoint")
    assert re.fullmatch(r"Endpoint no-such-endpoint of account \d{12} not found\.",
                        raised.value.response["Error"]["Message"])


@pytest.mark.parametrize(
    "change, detail",
    [
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"temperature": -0.5}, "`temperature` must be strictly positive"),
        ({"max_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ],
    ids=["top-p-1", "negative-temperature", "zero-max-tokens", "five-stop-sequences"],
)
def test_parameters_tgi_rejects_are_its_422_inside_a_model_error(server, change, detail):
    error = model_error(server, CHAT_BODY | change)
    assert error["OriginalStatusCode"] == 422
    assert json.loads(error["OriginalMessage"]) == tgi_validation_error(detail)


def words(count: int) -> dict:
    """A one-message request of at least `count` prompt tokens."""
    return {"messages": [{"role": "user", "content": "hello " * count}], "max_tokens": 1}


def test_default_limits_are_the_app_settings(server):
    error = model_error(server, words(DEFAULT_MAX_TOTAL_TOKENS))
    assert error["OriginalStatusCode"] == 422
    assert re.fullmatch(
        r"Input validation error: `inputs` tokens \+ `max_new_tokens` must be <= "
        rf"{DEFAULT_MAX_TOTAL_TOKENS}\. Given: \d+ `inputs` tokens and 1 `max_new_tokens`",
        json.loads(error["OriginalMessage"])["error"],
    )

    detail = json.loads(model_error(server, words(DEFAULT_MAX_INPUT_TOKENS))["OriginalMessage"])["error"]
    assert detail.startswith(
        f"Input validation error: `inputs` must have less than {DEFAULT_MAX_INPUT_TOKENS} tokens."
    )


def test_input_plus_max_tokens_over_the_total_is_tgis_error(server, small_server):
    messages = [SYSTEM, QUESTION]
    tokens = prompt_tokens(server, messages)
    max_tokens = int(SMALL_LIMITS["MAX_TOTAL_TOKENS"]) - tokens + 1

    error = model_error(small_server, {"messages": messages, "max_tokens": max_tokens})

    assert error["OriginalStatusCode"] == 422
    assert json.loads(error["OriginalMessage"]) == tgi_validation_error(
        f"`inputs` tokens + `max_new_tokens` must be <= {SMALL_LIMITS['MAX_TOTAL_TOKENS']}. "
        f"Given: {tokens} `inputs` tokens and {max_tokens} `max_new_tokens`"
    )


def test_input_over_max_input_tokens_is_tgis_error(server, small_server):
    messages = [{"role": "user", "content": "hello " * 60}]
    tokens = prompt_tokens(server, messages)
    assert int(SMALL_LIMITS["MAX_INPUT_TOKENS"]) < tokens < int(SMALL_LIMITS["MAX_TOTAL_TOKENS"]) - 1

    error = model_error(small_server, {"messages": messages, "max_tokens": 1})

    assert error["OriginalStatusCode"] == 422
    assert json.loads(error["OriginalMessage"]) == tgi_validation_error(
        f"`inputs` must have less than {SMALL_LIMITS['MAX_INPUT_TOKENS']} tokens. Given: {tokens}"
    )


def test_max_tokens_defaults_to_tgis_100(small_server):
    error = model_error(small_server, {"messages": [{"role": "user", "content": "hello " * 10}]})
    assert "tokens and 100 `max_new_tokens`" in json.loads(error["OriginalMessage"])["error"]


def test_within_the_limits_it_answers(small_server):
    completion = invoke(small_server, CHAT_BODY | {"max_tokens": 8})
    assert completion["usage"]["total_tokens"] <= int(SMALL_LIMITS["MAX_TOTAL_TOKENS"])


def test_its_log_has_a_line_per_invocation_and_none_per_health_check(small_server):
    before = small_server.log.read_text()
    assert ping(small_server.url) == 200
    invoke(small_server, CHAT_BODY | {"max_tokens": 8})
    deadline = time.monotonic() + 10
    while (logged := small_server.log.read_text()[len(before):]).count("\n") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # written once the answer is sent

    assert re.fullmatch(rf"POST /endpoints/{ENDPOINT}/invocations 200 \d+\.\d\d s\n", logged)


def test_a_port_in_use_is_reported_and_exits_non_zero(server, tmp_path):
    log = tmp_path / "second.log"
    second = launch(log, server.port)
    assert second.wait(timeout=30) != 0
    assert f"port {server.port} on 127.0.0.1 is already in use" in log.read_text()


def test_sigint_stops_it_cleanly(tmp_path):
    running = start_server(tmp_path / "server.log")
    assert stop_server(running, signal.SIGINT) == 0
    assert "model server stopped" in running.log.read_text()


def stream_events(server: RunningServer, body: dict) -> tuple[list[dict], bytes]:
    """The TGI events of one InvokeEndpointWithResponseStream call, read by botocore's own
    event-stream parser, and the raw SSE bytes they came in."""
    response = sagemaker_runtime(server).invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=json.dumps(body), ContentType="application/json"
    )
    assert response["ContentType"] == "text/event-stream"
    raw = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"])
    assert raw.endswith(b"data:[DONE]\n\n")
    events = [json.loads(line.removeprefix(b"data:")) for line in raw.split(b"\n\n")[:-2]]
    return events, raw


def test_streams_tgi_chunks_with_usage_last(server):
    events, raw = stream_events(server, CHAT_BODY | {"stream": True, "stream_options": {"include_usage": True}})

    assert b"data: " not in raw and all(line.startswith(b"data:") for line in raw.split(b"\n\n") if line)
    *chunks, usage_chunk = events
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in events)
    text = "".join(chunk["choices"][0]["delta"]["content"] for chunk in chunks)
    assert text.strip()
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks][-1] in ("stop", "length")
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-1])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] > 0
    assert 0 < usage_chunk["usage"]["completion_tokens"] <= CHAT_BODY["max_tokens"]


def test_a_stream_without_include_usage_has_no_usage_chunk(server):
    events, _ = stream_events(server, CHAT_BODY | {"stream": True, "max_tokens": 4})
    assert all(event["choices"] and event["usage"] is None for event in events)


def test_a_prompt_over_the_limits_is_an_error_inside_a_stream_that_began_with_200(small_server):
    messages = [{"role": "user", "content": "hello " * 60}]
    events, _ = stream_events(small_server, {"messages": messages, "max_tokens": 1, "stream": True})

    [error] = events
    assert error["error"]["http_status_code"] == 422
    assert error["error"]["message"].startswith(
        f"Input validation error: `inputs` must have less than {SMALL_LIMITS['MAX_INPUT_TOKENS']} tokens. Given: "
    )


def app_answer(server: RunningServer, serving: str, monkeypatch, question: str):
    """The app's model streaming from `server` as the container `serving`: the answer it relays."""
    from langchain_core.messages import HumanMessage

    from chalicelib.llm import AnswerStream, chat_model
    from chalicelib.settings import Settings

    for name, value in {"SAGEMAKER_ENDPOINT_NAME": ENDPOINT, "CHAT_TABLE_NAME": "unused", "SERVING": serving,
                        "MAX_NEW_TOKENS": "24"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_environment()
    model = chat_model(settings, sagemaker_runtime(server))
    answer = AnswerStream(model.stream([HumanMessage(question)]), settings.stop_sequences, settings.max_new_tokens,
                          settings.model.family.longest_token_bytes)
    return list(answer), answer


def test_the_app_reads_the_local_stream(server, monkeypatch):
    deltas, answer = app_answer(server, "tgi", monkeypatch, "What is the capital of France?")

    assert "".join(deltas) == answer.text and answer.text
    assert answer.usage["output_tokens"] > 0


# --- Speaking as vLLM's OpenAI server (SERVING=vllm), local/vllm.py ----------------------------

@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("vllm-model-server") / "server.log",
                           {**SMALL_LIMITS, "SERVING": "vllm"})
    yield running
    assert stop_server(running) == 0, running.log.read_text()


def vllm_stream(server: RunningServer, body: dict) -> tuple[list[dict], bytes]:
    """vLLM's events of one InvokeEndpointWithResponseStream call, and the raw SSE bytes."""
    response = sagemaker_runtime(server).invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=json.dumps(body), ContentType="application/json"
    )
    raw = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"])
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = [json.loads(line.removeprefix(b"data: ")) for line in raw.split(b"\n\n")[:-2]]
    return events, raw


def test_as_vllm_it_answers_vllms_chat_completion(vllm_server):
    completion = invoke(vllm_server, CHAT_BODY | {"max_tokens": 8})

    assert completion["object"] == "chat.completion" and completion["id"].startswith("chatcmpl-")
    [choice] = completion["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length") and "stop_reason" in choice
    usage = completion["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] <= 128


def test_as_vllm_it_streams_data_with_a_space_the_role_first_usage_and_done_last(vllm_server):
    events, raw = vllm_stream(vllm_server, CHAT_BODY | {"max_tokens": 8, "stream": True,
                                                        "stream_options": {"include_usage": True}})

    assert all(line.startswith(b"data: ") for line in raw.split(b"\n\n") if line)
    first, *chunks, usage_chunk = events
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(chunk["choices"][0]["delta"]["content"] for chunk in chunks).strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage_chunk["choices"] == [] and 0 < usage_chunk["usage"]["completion_tokens"] <= 8
    assert all("usage" not in chunk for chunk in [first, *chunks])


def test_as_vllm_a_prompt_with_no_room_for_its_answer_is_a_400_before_any_stream(vllm_server):
    messages = [{"role": "user", "content": "hello " * 60}]
    for body in ({"messages": messages, "max_tokens": 100}, {"messages": messages, "max_tokens": 100, "stream": True}):
        error = model_error(vllm_server, body)
        assert error["OriginalStatusCode"] == 400
        assert json.loads(error["OriginalMessage"]) == {"error": {
            "message": "This model's maximum context length is 128 tokens. However, you requested 100 output tokens "
                       "and your prompt contains at least 29 input tokens, for a total of at least 129 tokens. Please "
                       "reduce the length of the input prompt or the number of requested output tokens.",
            "type": "BadRequestError", "param": "input_tokens", "code": 400}}


def test_as_vllm_it_takes_top_p_1_and_refuses_what_vllm_refuses(vllm_server):
    assert invoke(vllm_server, CHAT_BODY | {"top_p": 1.0, "max_tokens": 2})["choices"]
    error = model_error(vllm_server, CHAT_BODY | {"top_p": 1.5})
    assert error["OriginalStatusCode"] == 400
    assert json.loads(error["OriginalMessage"])["error"]["message"] == "top_p must be in (0, 1], got 1.5."


def test_as_vllm_the_app_reads_the_local_stream_and_its_refusal(vllm_server, monkeypatch):
    from chalicelib.errors import ModelInputTooLong

    deltas, answer = app_answer(vllm_server, "vllm", monkeypatch, "What is the capital of France?")
    assert "".join(deltas) == answer.text and answer.text and answer.usage["output_tokens"] > 0
    with pytest.raises(ModelInputTooLong) as raised:
        app_answer(vllm_server, "vllm", monkeypatch, "hello " * 200)
    assert (raised.value.given, raised.value.allowed) == (128 - 24 + 1, 128 - 24)
