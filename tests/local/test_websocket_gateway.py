"""The local WebSocket gateway with a tiny Chalice app, a real WebSocket client on 127.0.0.1 and
botocore's real `apigatewaymanagementapi` client, through Chalice's own `websocket_api`."""

import asyncio
import json
import logging
import re
import threading
import time

import boto3
import pytest
from chalice import Chalice, Response, WebsocketDisconnectedError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from local.net import free_port, wait_until_up
from local.tls import make_local_certificate
from local.websocket_gateway import MAX_MESSAGE_BYTES, LocalWebSocketGateway

CONNECTION_ID = re.compile(r"^[A-Za-z0-9+/]{15}=$")


def tiny_app(events: list) -> Chalice:
    """Records every event; its $connect refuses, fails or picks a subprotocol as the query asks;
    its $default echoes the event back over the management API, or fails."""
    app = Chalice(app_name="gateway-test")
    app.experimental_feature_flags.update(["WEBSOCKETS"])
    app.websocket_api.session = boto3.session.Session()

    @app.on_ws_connect()
    def connect_handler(event):
        events.append(event.to_dict())
        query = event.to_dict().get("queryStringParameters") or {}
        if query.get("refuse"):
            return Response(body="not signed in", status_code=int(query["refuse"]))
        if query.get("fail"):
            raise RuntimeError("connect failed")
        if query.get("protocol"):
            return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": query["protocol"]}}
        return None

    @app.on_ws_message()
    def message_handler(event):
        events.append(event.to_dict())
        if event.body == "fail":
            raise RuntimeError("message failed")
        app.websocket_api.send(event.connection_id, json.dumps(event.to_dict()))

    @app.on_ws_disconnect()
    def disconnect_handler(event):
        events.append(event.to_dict())

    return app


@pytest.fixture
def certificate(tmp_path, monkeypatch):
    certificate = make_local_certificate(tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certificate.ca_bundle))
    return certificate


@pytest.fixture
def events():
    return []


@pytest.fixture
def gateway(events, certificate):
    """The gateway serving the tiny app on free ports, on its own event loop in a thread."""
    gateway = LocalWebSocketGateway(tiny_app(events), port=free_port(), management_port=free_port(),
                                    cert_file=certificate.cert_file, key_file=certificate.key_file)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(gateway.serve(stop),))
    thread.start()
    try:
        wait_until_up(f"http://127.0.0.1:{gateway.port}", 10, still_running=thread.is_alive)
        yield gateway
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()
    assert not thread.is_alive()


def worker_app(gateway_event: dict) -> Chalice:
    """Another process's app (the SQS worker's), configured from an event as the worker will be."""
    app = Chalice(app_name="worker")
    app.websocket_api.session = boto3.session.Session()
    context = gateway_event["requestContext"]
    app.websocket_api.configure(context["domainName"], context["stage"])
    return app


def wait_for(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_connect_message_disconnect_events_are_shaped_like_api_gateway(gateway, events):
    with connect(gateway.url + "/?token=abc&tag=1&tag=2", user_agent_header="gateway-test/1") as client:
        client.send('{"action": "chat", "query": "hi"}')
        echoed = json.loads(client.recv(timeout=10))
        client.send(b"\x00\x01")
        echoed_binary = json.loads(client.recv(timeout=10))
    wait_for(lambda: len(events) == 4)

    connected, message, binary, disconnected = events
    connection_id = connected["requestContext"]["connectionId"]
    assert CONNECTION_ID.match(connection_id)
    for event, route_key, event_type in ((connected, "$connect", "CONNECT"), (message, "$default", "MESSAGE"),
                                         (disconnected, "$disconnect", "DISCONNECT")):
        context = event["requestContext"]
        assert (context["routeKey"], context["eventType"], context["messageDirection"]) == (route_key, event_type, "IN")
        assert context["connectionId"] == connection_id
        assert context["domainName"] == f"127.0.0.1:{gateway.management_port}"
        assert context["stage"] == "local"
        assert re.fullmatch(r"[a-z0-9]{10}", context["apiId"])
        assert CONNECTION_ID.match(context["requestId"]) and CONNECTION_ID.match(context["extendedRequestId"])
        assert context["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "gateway-test/1"}
        assert context["connectedAt"] == connected["requestContext"]["connectedAt"]
        assert abs(context["requestTimeEpoch"] - time.time() * 1000) < 10_000
        assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000", context["requestTime"])

    assert connected["headers"]["Host"] == f"127.0.0.1:{gateway.port}"
    assert connected["headers"]["User-Agent"] == "gateway-test/1"
    assert connected["headers"]["Sec-WebSocket-Version"] == "13"
    assert connected["multiValueHeaders"]["User-Agent"] == ["gateway-test/1"]
    assert connected["queryStringParameters"] == {"token": "abc", "tag": "2"}
    assert connected["multiValueQueryStringParameters"] == {"token": ["abc"], "tag": ["1", "2"]}
    assert "body" not in connected

    assert (message["body"], message["isBase64Encoded"]) == ('{"action": "chat", "query": "hi"}', False)
    assert CONNECTION_ID.match(message["requestContext"]["messageId"])
    assert "headers" not in message and "queryStringParameters" not in message
    assert echoed == message  # the app's send reached the client, through the management API
    assert (binary["body"], binary["isBase64Encoded"]) == ("AAE=", True)
    assert echoed_binary == binary
    assert disconnected["requestContext"]["disconnectStatusCode"] == 1000


def test_a_connection_without_a_query_string_has_no_query_keys(gateway, events):
    with connect(gateway.url):
        pass
    wait_for(lambda: len(events) == 2)
    assert "queryStringParameters" not in events[0] and "multiValueQueryStringParameters" not in events[0]


@pytest.mark.parametrize(("query", "status"), [("refuse=401", 401), ("refuse=403", 403), ("fail=1", 500)])
def test_a_refused_or_failing_connect_refuses_the_handshake(gateway, events, query, status):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{gateway.url}/?{query}")
    assert refused.value.response.status_code == status
    time.sleep(0.2)
    assert [event["requestContext"]["routeKey"] for event in events] == ["$connect"]  # no $disconnect
    if status == 401:
        assert refused.value.response.body == b"not signed in"


def test_each_event_is_one_line_of_the_log_without_its_body(gateway, events, caplog):
    caplog.set_level(logging.INFO, logger="websocket-gateway")
    with pytest.raises(InvalidStatus):
        connect(gateway.url + "/?refuse=401", open_timeout=10)
    with connect(gateway.url) as client:
        client.send("a question of mine")
        client.recv(timeout=10)
        client.send("fail")
        client.recv(timeout=10)

    def lines():
        return [record.getMessage() for record in caplog.records
                if record.name == "websocket-gateway" and not record.exc_info]

    wait_for(lambda: len(lines()) == 5)
    # Each message's invocation runs on its own (as Lambda's do): their lines come in any order.
    assert sorted(re.sub(r" \d+\.\d\d s \(connection [A-Za-z0-9+/]{15}=\)$", "", line) for line in lines()) == [
        "CONNECT $connect 200", "CONNECT $connect 401", "DISCONNECT $disconnect 200", "MESSAGE $default 200",
        "MESSAGE $default 500"]
    assert "a question of mine" not in caplog.text


def test_a_subprotocol_is_accepted_only_when_connect_returns_it(gateway):
    with connect(gateway.url + "/?protocol=chat.v1", subprotocols=["chat.v1", "other"]) as client:
        assert client.subprotocol == "chat.v1"
    with connect(gateway.url, subprotocols=["chat.v1"]) as client:
        assert client.subprotocol is None


def test_a_failing_message_handler_sends_api_gateways_error(gateway):
    with connect(gateway.url) as client:
        client.send("fail")
        reply = json.loads(client.recv(timeout=10))
    assert reply["message"] == "Internal server error"
    assert CONNECTION_ID.match(reply["connectionId"]) and CONNECTION_ID.match(reply["requestId"])


def test_a_message_over_128_kb_closes_the_connection(gateway, events):
    with connect(gateway.url, max_size=None) as client:
        client.send("x" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
    wait_for(lambda: len(events) == 2)
    assert events[-1]["requestContext"]["disconnectStatusCode"] == 1009


def test_another_apps_websocket_api_posts_gets_and_deletes(gateway, events):
    """What the SQS worker does: Chalice's websocket_api, configured from the event's domain
    and stage, reaches this gateway through botocore's client (https, AWS_CA_BUNDLE)."""
    with connect(gateway.url, user_agent_header="ua") as client:
        wait_for(lambda: events)
        worker = worker_app(events[0])
        connection_id = events[0]["requestContext"]["connectionId"]

        worker.websocket_api.send(connection_id, '{"type": "delta", "text": "Bei"}')
        worker.websocket_api.send(connection_id, "ünïcode")
        assert client.recv(timeout=10) == '{"type": "delta", "text": "Bei"}'
        assert client.recv(timeout=10) == "ünïcode"

        info = worker.websocket_api.info(connection_id)
        assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "ua"}
        connected_at = events[0]["requestContext"]["connectedAt"] / 1000
        assert info["ConnectedAt"].timestamp() == pytest.approx(connected_at, abs=0.01)
        assert info["LastActiveAt"] >= info["ConnectedAt"]

        worker.websocket_api.close(connection_id)
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=10)
    assert closed.value.rcvd.code == 1000
    wait_for(lambda: len(events) == 2)
    assert events[-1]["requestContext"]["routeKey"] == "$disconnect"
    for gone in (
        lambda: worker.websocket_api.send(connection_id, "late"),
        lambda: worker.websocket_api.info(connection_id),
        lambda: worker.websocket_api.close(connection_id),
    ):
        with pytest.raises(WebsocketDisconnectedError):
            gone()


def test_gone_after_the_client_closes_and_for_unknown_ids(gateway, events):
    with connect(gateway.url):
        wait_for(lambda: events)
    wait_for(lambda: len(events) == 2)
    management = boto3.client("apigatewaymanagementapi", endpoint_url=gateway.management_url)
    for connection_id in (events[0]["requestContext"]["connectionId"], "AAAAAAAAAAAAAAA="):
        with pytest.raises(management.exceptions.GoneException) as gone:
            management.post_to_connection(ConnectionId=connection_id, Data=b"hello")
        assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


def test_post_to_connection_holds_api_gateways_128_kb_limit(gateway, events):
    management = boto3.client("apigatewaymanagementapi", endpoint_url=gateway.management_url)
    with connect(gateway.url, max_size=None) as client:
        wait_for(lambda: events)
        connection_id = events[0]["requestContext"]["connectionId"]
        with pytest.raises(management.exceptions.PayloadTooLargeException):
            management.post_to_connection(ConnectionId=connection_id, Data=b"x" * (MAX_MESSAGE_BYTES + 1))
        management.post_to_connection(ConnectionId=connection_id, Data=b"y" * MAX_MESSAGE_BYTES)
        assert client.recv(timeout=10) == "y" * MAX_MESSAGE_BYTES


def test_the_management_api_answers_only_its_own_stage(gateway, events):
    wrong_stage = boto3.client("apigatewaymanagementapi", endpoint_url=f"https://{gateway.domain_name}/api")
    with connect(gateway.url):
        wait_for(lambda: events)
        with pytest.raises(wrong_stage.exceptions.ForbiddenException):
            wrong_stage.post_to_connection(ConnectionId=events[0]["requestContext"]["connectionId"], Data=b"x")


def test_the_management_api_is_not_trusted_without_the_bundle(gateway, events, monkeypatch):
    """It is real TLS: without AWS_CA_BUNDLE botocore refuses the certificate."""
    monkeypatch.delenv("AWS_CA_BUNDLE")
    management = boto3.client("apigatewaymanagementapi", endpoint_url=gateway.management_url)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|SSL"):
        management.get_connection(ConnectionId="AAAAAAAAAAAAAAA=")
