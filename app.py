"""Routes of the chat API and its WebSocket and worker handlers: parse the request, call the
service, map errors to JSON."""

import functools
import json
import os

from chalice import CognitoUserPoolAuthorizer, Response, WebsocketDisconnectedError
from chalice.app import Request

from chalicelib import auth, clients, deadline, export, observability, page, services, worker
from chalicelib.claims import TurnStatus
from chalicelib.errors import InternalError, InvalidRequest, NotFound, ServiceError, Unauthorized, error_body
from chalicelib.handover import ReplyTo
from chalicelib.relay import Relay
from chalicelib.settings import Settings, get_settings
from chalicelib.threadsafe import ThreadSafeChalice
from chalicelib.validation import (
    parse_chat_json,
    parse_chat_request,
    parse_export,
    parse_feedback,
    parse_messages_page,
    parse_session_id,
    parse_session_update,
    parse_sessions_page,
    parse_turn_id,
    parse_websocket_chat,
)

# Its log is JSON like every other line (chalicelib/observability.py), not Chalice's plain text.
app = ThreadSafeChalice(app_name=observability.APP_NAME, configure_logs=False)
app.experimental_feature_flags.update(["WEBSOCKETS"])
app.websocket_api.session = clients.BotocoreSession()

# API Gateway verifies every route's token against the stage's user pool (`make config` records
# USER_POOL_ARN); the placeholder lets the app import where none is set (tests, `chalice local`).
users = CognitoUserPoolAuthorizer(
    "users",
    provider_arns=[os.environ.get("USER_POOL_ARN", "arn:aws:cognito-idp:us-east-1:123456789012:userpool/unset")],
)


def _logged(error: ServiceError) -> ServiceError:
    """Log a failure of ours (5xx) with its cause, and count every failure by its code."""
    if error.status_code >= 500:
        app.log.error("%s: %s", error.code, error, exc_info=error.__cause__)
    observability.error_metric(error.code)
    return error


def _handler(answer_failure):
    """Run the handler within its request's deadline. A ServiceError, or anything unexpected (as
    `internal_error`), is logged, counted, and answered by `answer_failure(error, *handler_args)`:
    every REST and WebSocket handler fails the same way, each in its own protocol."""

    def decorate(handler):
        @functools.wraps(handler)
        def handle(*args, **kwargs):
            try:
                with deadline.applying(deadline.for_request(get_settings().request_timeout_seconds,
                                                            app.lambda_context)):
                    return handler(*args, **kwargs)
            except ServiceError as error:
                return answer_failure(_logged(error), *args)
            except Exception:
                app.log.exception("unexpected error")
                fault = InternalError("an internal error occurred")
                observability.error_metric(fault.code)
                return answer_failure(fault, *args)

        return handle

    return decorate


def _json_response(error: ServiceError, *_) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return Response(body=error_body(error), status_code=error.status_code, headers=headers)


def _refused_handshake(error: ServiceError, _event) -> Response:
    return Response(body=error_body(error), status_code=error.status_code)


def _error_frame(error: ServiceError, event) -> None:
    """The turn's `error` message on the connection, naming the turn when the message was a valid one.
    A connection no longer signed in (its token expired) is then closed: the client connects anew."""
    try:
        turn = parse_websocket_chat(event.body, get_settings().max_query_chars).turn
    except ServiceError:
        turn = None
    named = {"turn": turn} if turn else {}
    try:
        app.websocket_api.send(event.connection_id, json.dumps({"type": "error", **named, **error_body(error)}))
        if isinstance(error, Unauthorized):
            app.websocket_api.close(event.connection_id)
    except WebsocketDisconnectedError:
        pass  # the client closed first (as it should on `unauthorized`): nothing is left to tell


def _logged_only(_error: ServiceError, _event) -> None:
    """Nothing to answer: the connection is gone (its item's TTL cleans up)."""


rest_handler = _handler(_json_response)


@app.route("/chat", methods=["GET"], authorizer=users)
@rest_handler
def chat_get():
    owner = auth.rest_user(app.current_request)
    request = parse_chat_request(app.current_request.query_params, get_settings().max_query_chars)
    observability.bind(request.sessionid, request.turn)
    return services.chat().reply(owner, request.sessionid, request.query, request.turn,
                                 request.replaces).as_reply(request.sessionid)


# Every content type is let in so that a wrong one gets our JSON 400, not Chalice's 415.
@app.route("/chat", methods=["POST"], content_types=["*/*"], authorizer=users)
@rest_handler
def chat_post():
    owner = auth.rest_user(app.current_request)
    request = parse_chat_json(_json_body(), get_settings().max_query_chars)
    observability.bind(request.sessionid, request.turn)
    if not request.asynchronous:
        return services.chat().reply(owner, request.sessionid, request.query, request.turn,
                                     request.replaces).as_reply(request.sessionid)
    accepted = services.handover().accept(owner, request)
    if accepted.answered is not None:  # a retry of a turn answered already: its status
        return TurnStatus("done", accepted.answered).as_reply(request.sessionid, accepted.answered.turn_id)
    services.handover().publish(accepted.claim, request)
    return Response(body={"sessionid": request.sessionid, "turn": accepted.claim.turn_id, "status": "pending"},
                    status_code=202)


def _json_body() -> bytes:
    """The request's body, which must be declared JSON."""
    content_type = app.current_request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise InvalidRequest(f"Content-Type must be application/json, not '{content_type}'")
    return app.current_request.raw_body


@app.route("/sessions", methods=["GET"], authorizer=users)
@rest_handler
def sessions():
    """The user's sessions, newest activity first, a page at a time; with `q`, those whose titles
    hold its words."""
    owner = auth.rest_user(app.current_request)
    listing = parse_sessions_page(app.current_request.query_params)
    summaries, after = services.store().sessions.page(owner, listing.limit, listing.after, listing.q)
    body = {"sessions": [summary.as_listed() for summary in summaries]}
    if after:
        body["next"] = after
    return body


@app.route("/sessions/{sessionid}/turns/{turn}", methods=["GET"], authorizer=users)
@rest_handler
def turn_status(sessionid, turn):
    owner = auth.rest_user(app.current_request)
    sessionid, turn = parse_session_id(sessionid), parse_turn_id(turn)
    observability.bind(sessionid, turn)
    status = services.store().claims.status(owner, sessionid, turn)
    if status is None:
        raise NotFound(f"session {sessionid} has no turn {turn}")
    return status.as_reply(sessionid, turn)


@app.route("/sessions/{sessionid}/messages", methods=["GET"], authorizer=users)
@rest_handler
def session_messages(sessionid):
    owner = auth.rest_user(app.current_request)
    listing = parse_messages_page(sessionid, app.current_request.query_params)
    turns, after = services.store().history.turns_page(owner, listing.sessionid, listing.limit, listing.after)
    body = {"sessionid": listing.sessionid, "messages": [m for turn in turns for m in turn.messages()]}
    if after:
        body["next"] = after
    return body


@app.route("/sessions/{sessionid}", methods=["PATCH"], content_types=["*/*"], authorizer=users)
@rest_handler
def rename_session(sessionid):
    owner = auth.rest_user(app.current_request)
    sessionid = parse_session_id(sessionid)
    update = parse_session_update(_json_body())
    return services.store().sessions.rename(owner, sessionid, update.title).as_listed()


@app.route("/sessions/{sessionid}/export", methods=["GET"], authorizer=users)
@rest_handler
def export_session(sessionid):
    """The conversation as a file to download: `format=markdown` (the default) or `json`."""
    owner = auth.rest_user(app.current_request)
    request = parse_export(sessionid, app.current_request.query_params)
    body, headers = export.export_session(services.store(), owner, request.sessionid, request.format)
    return Response(body=body, headers=headers)


@app.route("/sessions/{sessionid}/turns/{turn}/feedback", methods=["PUT", "DELETE"], content_types=["*/*"],
           authorizer=users)
@rest_handler
def turn_feedback(sessionid, turn):
    """Rate a turn's answer (`PUT {"rating": "up" | "down", "comment"}`; again to change it), or
    take the rating back (`DELETE`)."""
    owner = auth.rest_user(app.current_request)
    sessionid, turn = parse_session_id(sessionid), parse_turn_id(turn)
    observability.bind(sessionid, turn)
    given = parse_feedback(_json_body()) if app.current_request.method == "PUT" else None
    rated = services.store().rate(owner, sessionid, turn, given.rating if given else None,
                                  given.comment if given else None)
    if given:
        observability.feedback_metric(given.rating)
    return {"sessionid": sessionid, "turn": turn, "feedback": rated.feedback}


@app.route("/sessions/{sessionid}", methods=["DELETE"], authorizer=users)
@rest_handler
def delete_session(sessionid):
    owner = auth.rest_user(app.current_request)
    sessionid = parse_session_id(sessionid)
    return {"sessionid": sessionid, "deleted_turns": services.store().sessions.delete(owner, sessionid)}


@app.on_ws_connect()
@_handler(_refused_handshake)
def websocket_connect(event):
    """Sign the connection in: the ID token comes in the query string (`?token=`), since a
    browser cannot set headers on a WebSocket; without a valid one the handshake is refused."""
    token = (event.to_dict().get("queryStringParameters") or {}).get("token")
    claims = services.token_verifier().verify(token)
    services.connections().open(event.connection_id, claims["sub"], claims["exp"])


@app.on_ws_disconnect()
@_handler(_logged_only)
def websocket_disconnect(event):
    """Forget the connection's user (the item's TTL does it should this fail)."""
    services.connections().close(event.connection_id)


@app.on_ws_message()
@_handler(_error_frame)
def websocket_message(event):
    """A chat turn sent over the WebSocket: `accepted` now, and `queued` when every worker is busy;
    the worker streams the answer."""
    owner = services.connections().owner(event.connection_id)
    request = parse_websocket_chat(event.body, get_settings().max_query_chars)
    observability.bind(request.sessionid, request.turn)
    accepted = services.handover().accept(owner, request)
    if accepted.answered is not None:  # answered already: a retry
        app.websocket_api.send(event.connection_id,
                               json.dumps({"type": "done", **accepted.answered.as_reply(request.sessionid)}))
        return
    # Sent before publishing, so that the worker's frames come after them; a client gone since
    # its message only stops the sending (Relay), never the handing over of its claimed turn.
    relay = Relay(functools.partial(app.websocket_api.send, event.connection_id), accepted.claim.turn_id)
    relay.accepted(request.sessionid)
    if not relay.gone and (ahead := services.handover().queued_ahead()) is not None:
        relay.queued(ahead)
    reply_to = ReplyTo(connection_id=event.connection_id, domain_name=event.domain_name, stage=event.stage)
    services.handover().publish(accepted.claim, request, reply_to)


# The queue's name and the worker's concurrency matter only to `chalice deploy`, and every deployed
# stage sets them. The event source never invokes more workers than the function's reserved
# concurrency (.chalice/config.json): throttled deliveries would count towards the DLQ.
@app.on_sqs_message(
    queue=os.environ.get("TURNS_QUEUE_NAME", "turns-queue-not-configured"),
    batch_size=1,
    maximum_concurrency=int(os.environ.get("WORKER_CONCURRENCY", Settings.model_fields["worker_concurrency"].default)),
)
def turn_worker(event):
    """Answer handed-over turns, each within the worker's deadline (its Lambda timeout, less a margin)."""
    for record in event:
        observability.worker_retries(int(record.to_dict()["attributes"]["ApproximateReceiveCount"]))
        # Chalice sets `app.lambda_context` for REST routes only; an event source's handler gets
        # Lambda's context on the event (chalice/app.py: EventSourceHandler, BaseLambdaEvent.context).
        worker_deadline = deadline.for_request(get_settings().worker_timeout_seconds, event.context)
        with deadline.applying(worker_deadline):
            worker.answer(record.body, services.chat(), app.websocket_api)


@app.route("/config", methods=["GET"])
@rest_handler
def page_config():
    """What the page needs: where the WebSocket API is, how to sign in (null: none), and the name
    of the model it talks to."""
    settings = get_settings()
    return {"websocket_url": settings.websocket_url, "sign_in": auth.sign_in_config(settings),
            "model": settings.model_display_name}


@app.route("/", methods=["GET"])
def index():
    """The web chat page; it calls the routes above relative to its own URL, and may connect
    to the WebSocket API and Cognito's API and nothing else."""
    return Response(body=page.html(), headers=page.headers(page.connect_origins(get_settings())))


@app.middleware("http")
def no_sniffing(event, get_response):
    """Every answer (errors and Chalice's own 405 and 415 included) keeps its declared type:
    a browser never runs a JSON body that happens to look like HTML or script."""
    response = get_response(event)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@app.middleware("all")
def structured_logs(event, get_response):
    """Every event's log lines carry its request id: Lambda's, or API Gateway's where Lambda
    gives none (and, once known, the session and turn: `observability.bind`)."""
    observability.configure_logging()
    if isinstance(event, Request):
        lambda_context, request_context = event.lambda_context, event.context
    else:
        lambda_context, request_context = event.context, event.to_dict().get("requestContext", {})
    observability.start(getattr(lambda_context, "aws_request_id", None) or request_context.get("requestId"))
    return get_response(event)
