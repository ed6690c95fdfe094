"""Routes of the chat API: parse the request, call the service, map errors to JSON."""

import functools

from chalice import Response

from chalicelib import deadline, page, services
from chalicelib.errors import InvalidRequest, ServiceError
from chalicelib.settings import get_settings
from chalicelib.threadsafe import ThreadSafeChalice
from chalicelib.validation import parse_chat_json, parse_chat_request, parse_messages_page, parse_session_id

app = ThreadSafeChalice(app_name="llama2-chatbot")


def _json_errors(view):
    """Serve the view within the request's deadline; answer a ServiceError with its
    status and a JSON body naming the problem."""

    @functools.wraps(view)
    def answer(*args, **kwargs):
        try:
            request_deadline = deadline.for_request(get_settings().request_timeout_seconds, app.lambda_context)
            with deadline.applying(request_deadline):
                return view(*args, **kwargs)
        except ServiceError as error:
            if error.status_code >= 500:
                app.log.error("%s: %s", error.code, error, exc_info=error.__cause__)
            body = {"error": error.code, "message": str(error)}
            if error.field:
                body["field"] = error.field
            headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
            return Response(body=body, status_code=error.status_code, headers=headers)
        except Exception:
            app.log.exception("unexpected error")
            return Response(body={"error": "internal_error", "message": "an internal error occurred"},
                            status_code=500)

    return answer


@app.route("/chat", methods=["GET"])
@_json_errors
def chat_get():
    request = parse_chat_request(app.current_request.query_params, get_settings().max_query_chars)
    return services.chat().reply(request.sessionid, request.query, request.turn).as_reply(request.sessionid)


# Every content type is let in so that a wrong one gets our JSON 400, not Chalice's 415.
@app.route("/chat", methods=["POST"], content_types=["*/*"])
@_json_errors
def chat_post():
    content_type = app.current_request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise InvalidRequest(f"Content-Type must be application/json, not '{content_type}'")
    request = parse_chat_json(app.current_request.raw_body, get_settings().max_query_chars)
    return services.chat().reply(request.sessionid, request.query, request.turn).as_reply(request.sessionid)


@app.route("/sessions/{sessionid}/messages", methods=["GET"])
@_json_errors
def session_messages(sessionid):
    listing = parse_messages_page(sessionid, app.current_request.query_params)
    turns, after = services.history().turns_page(listing.sessionid, listing.limit, listing.after)
    body = {"sessionid": listing.sessionid, "messages": [m for turn in turns for m in turn.messages()]}
    if after:
        body["next"] = after
    return body


@app.route("/sessions/{sessionid}", methods=["DELETE"])
@_json_errors
def delete_session(sessionid):
    sessionid = parse_session_id(sessionid)
    return {"sessionid": sessionid, "deleted_turns": services.history().delete_session(sessionid)}


@app.route("/", methods=["GET"])
def index():
    """The web chat page; it calls the routes above relative to its own URL."""
    return Response(body=page.html(), headers=page.headers())


@app.middleware("http")
def no_sniffing(event, get_response):
    """Every answer (errors and Chalice's own 405 and 415 included) keeps its declared type:
    a browser never runs a JSON body that happens to look like HTML or script."""
    response = get_response(event)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
