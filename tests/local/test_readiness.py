"""make run's waits (local/readiness.py) and its launcher settings (local/settings.py): a late
service is waited for, one that never comes is named with how long it was waited for. Real
servers on 127.0.0.1: a plain HTTP server started late, dynalite, moto."""

import argparse
import contextlib
import http.server
import ssl
import threading
import uuid

import boto3
import pytest

from local.messaging import create_turns_queue
from local.net import answers, free_port
from local.readiness import Readiness, Wait, made_by_the_api, service
from local.settings import (
    ACCOUNT_ID,
    BUNDLED_MODEL_NAME,
    DEFAULT_WAIT_SECONDS,
    REGION,
    bundled_model_path,
    local_model_name,
    start_delays,
    wait_seconds,
)
from local.table import ensure_table, table_is_ready
from local.tls import make_local_certificate


class Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204)
        self.end_headers()

    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def serving(port: int, start: threading.Event | None = None, tls: ssl.SSLContext | None = None):
    """An HTTP server on `port`, listening at once, or once `start` is set (a late stand-in)."""
    servers = []
    listening = threading.Event()

    def serve():
        if start is not None:
            start.wait(30)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Quiet)
        if tls:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        servers.append(server)
        listening.set()
        server.serve_forever()

    threading.Thread(target=serve, daemon=True).start()
    if start is None:
        listening.wait(10)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    finally:
        listening.wait(30)
        for server in servers:
            server.shutdown()
            server.server_close()


def late(wait: Wait, start: threading.Event) -> Wait:
    """`wait`, whose server starts once it has been found not to answer."""
    def ready() -> bool:
        if wait.ready():
            return True
        start.set()
        return False

    return Wait(wait.name, wait.missing, ready)


def test_a_late_service_is_waited_for_and_said_so(capsys):
    port, start = free_port(), threading.Event()
    with serving(port, start) as url:
        Readiness("worker", seconds=60).wait([late(service(f"messaging={url}"), start)])
        assert answers(url)

    assert capsys.readouterr().out == "worker: waiting for messaging (at most 60 s from its start)\n"


def test_a_resource_is_looked_for_once_its_service_answers(capsys):
    port, start = free_port(), threading.Event()
    looked_while_up = []

    def table_exists() -> bool:
        looked_while_up.append(answers(url))  # a boto3 call before would fail to connect
        return True

    with serving(port, start) as url:
        Readiness("websocket-gateway", seconds=60).wait([late(service(f"dynamodb={url}"), start),
                                                          Wait("the chat table", "no table", table_exists)])

    assert looked_while_up == [True]
    assert capsys.readouterr().out == "websocket-gateway: waiting for dynamodb (at most 60 s from its start)\n"


def test_nothing_is_said_when_everything_answers(capsys):
    with serving(free_port()) as url:
        Readiness("api", seconds=60).wait([service(f"dynamodb={url}"), service(f"model={url}")])

    assert capsys.readouterr().out == ""


def test_what_never_comes_is_named_with_how_long_it_was_waited_for():
    silent = f"http://127.0.0.1:{free_port()}/moto-api/"
    with serving(free_port()) as url, pytest.raises(SystemExit) as gave_up:
        Readiness("worker", seconds=0.5).wait([service(f"dynamodb={url}"), service(f"messaging={silent}")])

    message = str(gave_up.value)
    assert message.startswith("worker: gave up after ")
    assert message.endswith(f" s (MAKE_RUN_WAIT_SECONDS=0.5) waiting for messaging (nothing answered at {silent}); "
                            "ready: dynamodb")


def test_the_waits_share_one_bound_from_the_start():
    readiness = Readiness("api", seconds=30)
    assert 29 < readiness.remaining() <= 30
    readiness.started -= 31
    assert readiness.remaining() == 0
    with pytest.raises(SystemExit, match=r"api: gave up after 31 s \(MAKE_RUN_WAIT_SECONDS=30\) waiting for model"):
        readiness.wait([service(f"model=http://127.0.0.1:{free_port()}/ping")])


@pytest.mark.parametrize("argument", ["model", "model=", "=http://127.0.0.1:1/", "model=127.0.0.1:1"])
def test_a_wait_for_argument_is_a_name_and_a_url(argument):
    with pytest.raises(argparse.ArgumentTypeError, match="give NAME=URL"):
        service(argument)


def test_an_https_stand_in_answers_with_the_ca_bundle_the_app_trusts(tmp_path, monkeypatch):
    certificate = make_local_certificate(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate.cert_file, certificate.key_file)
    port = free_port()
    with serving(port, tls=tls) as url:
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        unverified = answers(url)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(certificate.ca_bundle))
        waited = Readiness("worker", seconds=10)
        waited.wait([service(f"websocket={url}")])

    assert not unverified  # its certificate is no one's but make run's
    assert waited.remaining() > 0


def test_the_gateway_waits_for_the_table_and_the_topics_queue(dynalite_url, moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynalite_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_url)
    name = f"readiness-{uuid.uuid4().hex[:8]}"
    topic_arn = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{name}"
    monkeypatch.setenv("CHAT_TABLE_NAME", name)
    monkeypatch.setenv("TURNS_TOPIC_ARN", topic_arn)
    waits = made_by_the_api()
    before = [wait.ready() for wait in waits]
    with pytest.raises(SystemExit, match=f"the chat table \\(no active table {name} with its index"):
        Readiness("websocket-gateway", seconds=0.3).wait(waits)

    dynamodb = boto3.client("dynamodb")
    ensure_table(dynamodb, name)
    create_turns_queue(boto3.client("sns"), boto3.client("sqs"), topic_arn, name, visibility_timeout=1)

    assert before == [False, False]
    assert table_is_ready(dynamodb, name)
    assert [wait.ready() for wait in waits] == [True, True]


def test_a_table_made_before_sign_in_is_not_ready(dynalite_url):
    dynamodb = boto3.client("dynamodb", endpoint_url=dynalite_url)
    name = f"old-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})

    assert not table_is_ready(dynamodb, name)  # no sessions index: the api process makes it anew


def test_the_launcher_settings():
    assert wait_seconds({}) == DEFAULT_WAIT_SECONDS
    assert wait_seconds({"MAKE_RUN_WAIT_SECONDS": "2.5"}) == 2.5
    assert start_delays({}) == {}
    assert start_delays({"MAKE_RUN_START_DELAYS": "messaging=20, cognito = 1.5,"}) == {"messaging": 20,
                                                                                    "cognito": 1.5}


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf"])
def test_a_wait_must_be_some_seconds(value):
    with pytest.raises(ValueError, match="MAKE_RUN_WAIT_SECONDS"):
        wait_seconds({"MAKE_RUN_WAIT_SECONDS": value})


@pytest.mark.parametrize("value", ["messaging", "messaging=soon", "messaging=-1", "moto=3"])
def test_start_delays_name_processes_and_seconds(value):
    with pytest.raises(ValueError, match="name=seconds pairs .* among dynamodb, model, messaging"):
        start_delays({"MAKE_RUN_START_DELAYS": value})


def test_the_local_model_is_named_as_it_is_served():
    """The name make run gives the page (MODEL_NAME) is the model the model server loads."""
    assert bundled_model_path().name.startswith("SmolLM2-135M-Instruct")
    assert local_model_name({}) == BUNDLED_MODEL_NAME == "SmolLM2 135M Instruct"
    assert local_model_name({"LOCAL_MODEL_PATH": "/models/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"}) == \
        "Qwen2.5-0.5B-Instruct-Q4_K_M"
