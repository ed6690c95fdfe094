"""A local stand-in for an API Gateway WebSocket API in front of a Chalice app.

    python -m local.websocket_gateway --port 8765 --management-port 8766 --cert-file C --key-file K
                                      [--wait-for NAME=URL ...] [--wait-for-setup]

Clients connect to ws://127.0.0.1:PORT. Each connection, message and disconnection invokes
the app's `$connect`, `$default` or `$disconnect` handler in this process, through the
wrapper Chalice registers (local/lambda_runtime.py), with events shaped like API Gateway's.
The rules it keeps, as API Gateway does:
- `$connect` answering a non-2xx status, or failing, refuses the handshake with that status
  (500 when it fails); a subprotocol is accepted only if `$connect` answers with a
  `Sec-WebSocket-Protocol` header naming one the client offered.
- A `$default` handler's return value is not sent to the client (Chalice configures no route
  responses); a failing one sends the client API Gateway's "Internal server error" message.
- A message over 128 KB closes the connection with 1009.
- The `@connections` management API, as botocore's `apigatewaymanagementapi` client calls it:
  PostToConnection (128 KB at most, else 413 PayloadTooLargeException), GetConnection,
  DeleteConnection (closes the socket); 410 GoneException for a connection that is closed,
  unknown or still in `$connect`; 403 ForbiddenException for any other path or stage.
Each event is one line of make run's log, as API Gateway's access log has it (local/logs.py).
Under make run it serves once what its events call answers (`--wait-for`, local/readiness.py)
and what they use exists (`--wait-for-setup`: the table and topic the api process makes).

How the app reaches the management API without knowing it is local: Chalice's
`websocket_api` always builds its client with `endpoint_url='https://{domain_name}/{stage}'`,
which the AWS_ENDPOINT_URL_* variables cannot override. So the events carry the domain
name `127.0.0.1:<management port>` and the stage `local`, and the management API is served
over HTTPS there, with a throwaway certificate the app's processes trust through
AWS_CA_BUNDLE (local/tls.py). Chalice's WebSocket wrapper also calls
`configure_from_api_id`, which would aim at `{apiId}.execute-api.{region}.amazonaws.com`;
`configure` keeps the first endpoint it is given, so this gateway configures its app with
the local domain before any event. (Plain HTTP would need Chalice's private `_endpoint`.)
"""

import argparse
import asyncio
import base64
import datetime
import http
import json
import logging
import os
import re
import signal
import ssl
import threading
import time
import urllib.parse
import weakref
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from chalicelib import observability
from local.lambda_runtime import FunctionLimits, invoke, websocket_handler_name
from local.logs import plain_lines, quiet_stand_ins
from local.readiness import Readiness, made_by_the_api
from local.readiness import add_arguments as add_wait_arguments
from local.settings import STAGE

log = logging.getLogger("websocket-gateway")

# API Gateway's quotas: a message (client to server, or PostToConnection) is at most 128 KB.
MAX_MESSAGE_BYTES = 128 * 1024


def aws_id() -> str:
    """An id shaped like API Gateway's connection and request ids: 16 characters of base64."""
    return base64.b64encode(os.urandom(11)).decode()


def epoch_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Connection:
    id: str
    source_ip: str
    user_agent: str
    connected_at: int = field(default_factory=epoch_ms)
    last_active_at: int = field(default_factory=epoch_ms)
    subprotocol: str | None = None  # what $connect answered in Sec-WebSocket-Protocol
    websocket: ServerConnection | None = None  # set once $connect has accepted it


class LocalWebSocketGateway:
    def __init__(self, app, *, port: int, management_port: int, cert_file, key_file, host: str = "127.0.0.1",
                 stage: str = STAGE, limits=lambda handler_name: FunctionLimits()):
        self.app = app
        self.host, self.port, self.management_port = host, port, management_port
        self.stage = stage
        self.api_id = base64.b32encode(os.urandom(10)).decode().lower()[:10]  # like "a1b2c3d4e5"
        self.domain_name = f"{host}:{management_port}"
        self._limits = limits
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert_file, key_file)
        self._opening: weakref.WeakKeyDictionary[ServerConnection, Connection] = weakref.WeakKeyDictionary()
        self._connections: dict[str, Connection] = {}
        self._invocations: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        app.websocket_api.configure(self.domain_name, stage)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def management_url(self) -> str:
        """What Chalice's websocket_api calls: https://{domain_name}/{stage}."""
        return f"https://{self.domain_name}/{self.stage}"

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve both APIs until `stop` is set; then close every connection ($disconnect runs)."""
        self._loop = asyncio.get_running_loop()
        management = ThreadingHTTPServer((self.host, self.management_port), _ManagementHandler)
        management.daemon_threads = True
        management.socket = self._tls.wrap_socket(management.socket, server_side=True)
        management.gateway = self
        thread = threading.Thread(target=management.serve_forever, name="management-api", daemon=True)
        thread.start()
        try:
            async with serve(self._serve_connection, self.host, self.port, process_request=self._connect,
                             select_subprotocol=self._select_subprotocol, max_size=MAX_MESSAGE_BYTES):
                await stop.wait()
            if self._invocations:
                await asyncio.wait(set(self._invocations))
        finally:
            management.shutdown()
            management.server_close()

    # The WebSocket side.

    async def _connect(self, websocket: ServerConnection, request: Request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return None  # not a WebSocket handshake: websockets answers 426, with no $connect
        connection = Connection(id=aws_id(), source_ip=websocket.remote_address[0],
                                user_agent=request.headers.get("User-Agent", ""))
        self._opening[websocket] = connection
        handler = websocket_handler_name(self.app, "$connect")
        if handler is None:
            return None  # API Gateway accepts every connection when there is no $connect route
        event, started = self._connect_event(connection, request), time.monotonic()
        try:
            response = await asyncio.to_thread(self._invoke, handler, event)
        except Exception:
            log.exception("$connect handler failed; connection refused with 500")
            self._access_line(event, 500, started)
            return websocket.respond(http.HTTPStatus.INTERNAL_SERVER_ERROR, "Internal server error")
        status = int(response.get("statusCode", 200))
        self._access_line(event, status, started)
        if not 200 <= status < 300:
            return websocket.respond(status, str(response.get("body") or http.HTTPStatus(status).phrase))
        headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
        connection.subprotocol = headers.get("sec-websocket-protocol")
        return None

    def _select_subprotocol(self, websocket: ServerConnection, offered):
        subprotocol = self._opening[websocket].subprotocol
        return subprotocol if subprotocol in offered else None

    async def _serve_connection(self, websocket: ServerConnection) -> None:
        connection = self._opening.pop(websocket)
        connection.websocket = websocket
        self._connections[connection.id] = connection
        try:
            async for message in websocket:
                connection.last_active_at = epoch_ms()
                # Lambda runs each message's invocation on its own, concurrently.
                invocation = asyncio.create_task(self._message(connection, message))
                self._invocations.add(invocation)
                invocation.add_done_callback(self._invocations.discard)
        except ConnectionClosed:
            pass  # 1009 (too big) or a dropped connection: $disconnect below says which
        finally:
            del self._connections[connection.id]
            handler = websocket_handler_name(self.app, "$disconnect")
            if handler:
                event, started = self._disconnect_event(connection, *close_status(websocket)), time.monotonic()
                try:
                    await asyncio.to_thread(self._invoke, handler, event)
                    self._access_line(event, 200, started)
                except Exception:
                    log.exception("$disconnect handler failed")
                    self._access_line(event, 500, started)

    async def _message(self, connection: Connection, message: str | bytes) -> None:
        handler = websocket_handler_name(self.app, "$default")
        event, started = self._message_event(connection, message), time.monotonic()
        if handler is None:
            reply = "Forbidden"  # API Gateway's answer when no route matches
            self._access_line(event, 403, started)
        else:
            try:
                await asyncio.to_thread(self._invoke, handler, event)
                self._access_line(event, 200, started)
                return
            except Exception:
                log.exception("$default handler failed")
                self._access_line(event, 500, started)
                reply = "Internal server error"
        try:
            await connection.websocket.send(json.dumps({
                "message": reply, "connectionId": connection.id, "requestId": event["requestContext"]["requestId"]}))
        except ConnectionClosed:
            pass

    def _invoke(self, handler_name: str, event: dict) -> dict:
        return invoke(self.app, handler_name, event, self.stage, self._limits(handler_name))

    @staticmethod
    def _access_line(event: dict, status: int, started: float) -> None:
        """One line per event, as API Gateway's access log would have it (no body: a user's text)."""
        context = event["requestContext"]
        log.info("%s %s %s %.2f s (connection %s)", context["eventType"], context["routeKey"], status,
                 time.monotonic() - started, context["connectionId"])

    # API Gateway's events.

    def _request_context(self, connection: Connection, route_key: str, event_type: str) -> dict:
        now = datetime.datetime.now(datetime.UTC)
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": aws_id(),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": connection.connected_at,
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
            "requestId": aws_id(),
            "domainName": self.domain_name,
            "connectionId": connection.id,
            "apiId": self.api_id,
        }

    def _connect_event(self, connection: Connection, request: Request) -> dict:
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.raw_items():
            multi_headers.setdefault(name, []).append(value)
        multi_headers.update({"X-Forwarded-For": [connection.source_ip], "X-Forwarded-Port": [str(self.port)],
                              "X-Forwarded-Proto": ["http"]})
        event = {
            "headers": {name: values[-1] for name, values in multi_headers.items()},
            "multiValueHeaders": multi_headers,
            "requestContext": self._request_context(connection, "$connect", "CONNECT"),
            "isBase64Encoded": False,
        }
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query, keep_blank_values=True)
        if query:  # API Gateway leaves both keys out when there is no query string
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        return event

    def _message_event(self, connection: Connection, message: str | bytes) -> dict:
        binary = isinstance(message, bytes)
        context = self._request_context(connection, "$default", "MESSAGE")
        context["messageId"] = aws_id()
        return {"requestContext": context, "body": base64.b64encode(message).decode() if binary else message,
                "isBase64Encoded": binary}

    def _disconnect_event(self, connection: Connection, status_code: int, reason: str) -> dict:
        context = self._request_context(connection, "$disconnect", "DISCONNECT")
        context.update(disconnectStatusCode=status_code, disconnectReason=reason)
        return {"headers": {"Host": self.domain_name, "X-Forwarded-For": connection.source_ip},
                "multiValueHeaders": {"Host": [self.domain_name], "X-Forwarded-For": [connection.source_ip]},
                "requestContext": context, "isBase64Encoded": False}

    # The @connections management API; these run on the event loop, called from its HTTP threads.

    def on_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def post_to_connection(self, connection_id: str, data: bytes) -> bool:
        connection = self._connections.get(connection_id)
        if connection is None:
            return False
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = None
        try:
            await connection.websocket.send(data if text is None else text)
        except ConnectionClosed:
            return False
        return True

    async def get_connection(self, connection_id: str) -> Connection | None:
        return self._connections.get(connection_id)

    async def delete_connection(self, connection_id: str) -> bool:
        connection = self._connections.get(connection_id)
        if connection is None:
            return False
        await connection.websocket.close(1000, "Going away")
        return True


def close_status(websocket: ServerConnection) -> tuple[int, str]:
    """The close code and reason, the client's if it sent a close frame, else ours (1006 if neither)."""
    close = websocket.protocol.close_rcvd or websocket.protocol.close_sent
    return (close.code, close.reason) if close else (1006, "")


def iso8601(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="milliseconds")


class _ManagementHandler(BaseHTTPRequestHandler):
    """`/{stage}/@connections/{connectionId}`, answered as API Gateway's rest-json service does."""

    PATH = re.compile(r"^/(?P<stage>[^/?]+)/@connections/(?P<connection_id>[^/?]+)$")
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        connection_id = self._connection_id()
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if connection_id is None:
            return
        if length > MAX_MESSAGE_BYTES:
            return self._error(413, "PayloadTooLargeException", f"Message too long: {length} bytes, at most "
                                                                f"{MAX_MESSAGE_BYTES}")
        if not self.server.gateway.on_loop(self.server.gateway.post_to_connection(connection_id, data)):
            return self._gone()
        self._send(200, b"")

    def do_GET(self):
        connection_id = self._connection_id()
        if connection_id is None:
            return
        connection = self.server.gateway.on_loop(self.server.gateway.get_connection(connection_id))
        if connection is None:
            return self._gone()
        self._send(200, json.dumps({
            "connectedAt": iso8601(connection.connected_at), "lastActiveAt": iso8601(connection.last_active_at),
            "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent}}).encode())

    def do_DELETE(self):
        connection_id = self._connection_id()
        if connection_id is None:
            return
        if not self.server.gateway.on_loop(self.server.gateway.delete_connection(connection_id)):
            return self._gone()
        self._send(204, b"")

    def _connection_id(self) -> str | None:
        """The path's connection id; None after answering 403 for any other path or stage."""
        match = self.PATH.match(self.path)
        if match is None or urllib.parse.unquote(match["stage"]) != self.server.gateway.stage:
            self._error(403, "ForbiddenException", "Forbidden")
            return None
        return urllib.parse.unquote(match["connection_id"])

    def _gone(self):
        self._error(410, "GoneException", None)

    def _error(self, status: int, error_type: str, message: str | None):
        self._send(status, json.dumps({"message": message}).encode(), {"x-amzn-ErrorType": error_type})

    def _send(self, status: int, body: bytes, headers: dict | None = None):
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "x-amzn-RequestId": aws_id(),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log.debug(format, *args)


def main() -> None:
    from local.settings import function_limits, load_app

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--management-port", type=int, required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--key-file", required=True)
    add_wait_arguments(parser)
    parser.add_argument("--wait-for-setup", action="store_true",
                        help="serve only once the chat table and the turns topic's subscription exist")
    args = parser.parse_args()
    readiness = Readiness("websocket-gateway")
    app = load_app()
    # The app's JSON lines, as in Lambda; the gateway's own are plain, as API Gateway's access log is.
    observability.configure_logging()
    plain_lines(log)
    quiet_stand_ins()
    readiness.wait(args.wait_for + (made_by_the_api() if args.wait_for_setup else []))
    gateway = LocalWebSocketGateway(app, port=args.port, management_port=args.management_port,
                                    cert_file=args.cert_file, key_file=args.key_file, limits=function_limits)
    print(f"serving {gateway.url} (management API: {gateway.management_url}/@connections)", flush=True)
    asyncio.run(serve_until_signalled(gateway))


async def serve_until_signalled(gateway: LocalWebSocketGateway) -> None:
    """Serve until SIGINT or SIGTERM (honcho's stop), closing connections so $disconnect runs."""
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await gateway.serve(stop)


if __name__ == "__main__":
    main()
