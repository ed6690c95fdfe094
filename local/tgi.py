"""TGI's Messages API as a SageMaker endpoint serves it: the one home of its rules for local stand-ins.

Both the local model server (llama.cpp) and the fake endpoint (tests, benchmark) answer with
these bodies, errors and streams, so the app's real error paths run offline:

- request: a Messages API body, validated like SageMaker (400 `ValidationError`) and TGI
  (its 422 bodies and token-limit messages, router/src/validation.rs, TGI 2.x/3.x);
- errors: SageMaker hands a container's error back as a 424 `ModelError` carrying the
  original status and body;
- answers: `chat.completion`, or with `"stream": true` TGI's server-sent events exactly as its
  router writes them (router/src/server.rs, chat.rs): `data:{json}` lines with no space,
  a blank line after each event, `:` keep-alives, `data:[DONE]` last; an error after the
  stream began is an event `{"error": {"message", "http_status_code": 422}}` (TGI >= 2.4.1);
- an inference component with no copy (scaled to zero, or scaling out from zero) refuses every
  call with SageMaker's 400 `ValidationError` "Inference Component has no capacity..." (`Waking`);
- InvokeEndpointWithResponseStream: SageMaker cuts the container's bytes into `PayloadPart`
  events of the AWS event-stream format, and reports its own mid-stream failures as
  `ModelStreamError` / `InternalStreamFailure` exception events.
"""

import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

# moto (a dev dependency) has the AWS event-stream encoder: prelude, headers, both CRC32s.
from moto.core.eventstream import EventStreamEncoder

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS

# TGI 2.x's chat route generates this many tokens when a request has no `max_tokens`.
TGI_DEFAULT_MAX_TOKENS = 100
# TGI's --max-stop-sequences default.
TGI_MAX_STOP_SEQUENCES = 4
ROLES = ("system", "user", "assistant")

# SageMaker names an account and a region in its error messages; a local endpoint has neither.
LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"
# The two SageMaker runtime routes a model answers: InvokeEndpoint and its streaming twin.
INVOCATIONS_PATH = re.compile(r"/endpoints/(?P<name>[^/]+)/invocations(?P<stream>-response-stream)?")
EVENT_STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
SSE_CONTENT_TYPE = "text/event-stream"


class SageMakerError(Exception):
    """An error as SageMaker runtime answers it: botocore reads the code from x-amzn-ErrorType
    and the modeled fields (e.g. ModelError's OriginalStatusCode) from the JSON body."""

    def __init__(self, status: int, error_type: str, body: dict):
        super().__init__(body)
        self.status = status
        self.error_type = error_type
        self.body = body

    def reply(self) -> "Reply":
        return Reply.json(self.status, self.body, {"x-amzn-ErrorType": self.error_type})


class TgiError(Exception):
    """An error of the TGI container: its HTTP answer before a stream begins, an event after."""

    def __init__(self, status: int, message: str, error_type: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type

    def body(self) -> str:
        """TGI's ErrorResponse, compact as its router (serde_json) writes it."""
        return _compact({"error": self.message, "error_type": self.error_type})

    def stream_event(self) -> bytes:
        """The error once a stream has begun with HTTP 200: TGI says 422 whatever it was."""
        return sse_event({"error": {"message": self.message, "http_status_code": 422}})


def validation_error(message: str) -> SageMakerError:
    """SageMaker rejecting a request itself."""
    return SageMakerError(
        400, "ValidationError:http://internal.amazon.com/coral/com.amazon.coral.validate/", {"message": message}
    )


# The header botocore sends InvokeEndpoint's InferenceComponentName in.
INFERENCE_COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"


def no_capacity_error() -> SageMakerError:
    """SageMaker's answer while the inference component has no copy, verbatim (as AWS's
    scale-to-zero walkthrough shows it)."""
    return validation_error(
        "Inference Component has no capacity to process this request. ApplicationAutoScaling may be "
        "in-progress (if configured) or try to increase the capacity by invoking "
        "UpdateInferenceComponentRuntimeConfig API."
    )


class Waking:
    """An endpoint scaled to zero that is starting: no capacity until `seconds` from now."""

    def __init__(self, seconds: float = 0.0, clock=time.monotonic):
        self._clock = clock
        self._awake_at = clock() + seconds

    def sleep_for(self, seconds: float) -> None:
        self._awake_at = self._clock() + seconds

    def check(self) -> None:
        """Raise SageMaker's no-capacity error while the model is not up yet."""
        if self._clock() < self._awake_at:
            raise no_capacity_error()


def service_error(status: int, code: str, message: str) -> SageMakerError:
    """One of SageMaker's own failures, e.g. ThrottlingException or ServiceUnavailable."""
    return SageMakerError(status, code, {"message": message})


def model_error(endpoint_name: str, error: TgiError) -> SageMakerError:
    """How SageMaker passes on a container's error: a 424 that carries the original status and body."""
    log_group = f"/aws/sagemaker/Endpoints/{endpoint_name}"
    kind = "client" if error.status < 500 else "server"
    message = (
        f'Received {kind} error ({error.status}) from primary with message "{error.body()}". '
        f"See https://{LOCAL_REGION}.console.aws.amazon.com/cloudwatch/home?region={LOCAL_REGION}"
        f"#logEventViewer:group={log_group} in account {LOCAL_ACCOUNT} for more information."
    )
    return SageMakerError(
        424,
        "ModelError:http://internal.amazon.com/coral/com.amazonaws.sagemaker/",
        {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "LogStreamArn": f"arn:aws:logs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:log-group:{log_group}",
            "Message": message,
            "OriginalMessage": error.body(),
            "OriginalStatusCode": error.status,
        },
    )


def tgi_validation_error(detail: str) -> TgiError:
    return TgiError(422, f"Input validation error: {detail}", "validation")


@dataclass(frozen=True)
class ChatRequest:
    """The Messages API fields TGI acts on, with TGI's defaults filled in."""

    messages: list[dict]
    max_new_tokens: int
    temperature: float | None
    top_p: float | None
    stop: list[str]
    stream: bool = False
    include_usage: bool = False


def _optional(payload: dict, key: str, kinds: tuple[type, ...], description: str):
    value = payload.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise validation_error(f"`{key}` must be {description}")
    return value


def parse_chat_request(body: bytes) -> ChatRequest:
    """Read a Messages API body; a body of the wrong shape is a 400 ValidationError."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise validation_error(f"The request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise validation_error("The request body must be a JSON object")

    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise validation_error("`messages` must be a non-empty list")
    for index, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise validation_error(f"`messages[{index}]` must have a role of {', '.join(ROLES)} and a string content")

    max_tokens = _optional(payload, "max_tokens", (int,), "an integer")
    if max_tokens is not None and max_tokens < 0:
        raise validation_error("`max_tokens` must not be negative")
    stop = payload.get("stop")
    if stop is None:
        stop = []
    if not isinstance(stop, list) or not all(isinstance(sequence, str) for sequence in stop):
        raise validation_error("`stop` must be a list of strings")
    stream_options = _optional(payload, "stream_options", (dict,), "an object") or {}

    return ChatRequest(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        max_new_tokens=TGI_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        temperature=_optional(payload, "temperature", (int, float), "a number"),
        top_p=_optional(payload, "top_p", (int, float), "a number"),
        stop=stop,
        stream=bool(_optional(payload, "stream", (bool,), "a boolean")),
        include_usage=bool(_optional(stream_options, "include_usage", (bool,), "a boolean")),
    )


def check_parameters(request: ChatRequest) -> None:
    """TGI's checks of the generation parameters, in its order and words (router/src/validation.rs)."""
    # TGI's chat route turns temperature 0 into greedy decoding before validating.
    if request.temperature is not None and request.temperature < 0:
        raise tgi_validation_error("`temperature` must be strictly positive")
    if request.top_p is not None and not 0.0 < request.top_p < 1.0:
        raise tgi_validation_error("`top_p` must be > 0.0 and < 1.0")
    if request.max_new_tokens == 0:
        raise tgi_validation_error("`max_new_tokens` must be strictly positive")
    if len(request.stop) > TGI_MAX_STOP_SEQUENCES:
        raise tgi_validation_error(
            f"`stop` supports up to {TGI_MAX_STOP_SEQUENCES} stop sequences. Given: {len(request.stop)}"
        )


@dataclass(frozen=True)
class TokenLimits:
    """TGI's --max-input-tokens and --max-total-tokens."""

    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    max_total_tokens: int = DEFAULT_MAX_TOTAL_TOKENS

    @classmethod
    def from_environment(cls, environ=os.environ) -> "TokenLimits":
        """From the variables the app reads, so a local endpoint has the app's limits."""
        limits = cls(
            max_input_tokens=int(environ.get("MAX_INPUT_TOKENS", DEFAULT_MAX_INPUT_TOKENS)),
            max_total_tokens=int(environ.get("MAX_TOTAL_TOKENS", DEFAULT_MAX_TOTAL_TOKENS)),
        )
        if not 0 < limits.max_input_tokens < limits.max_total_tokens:
            raise ValueError("MAX_INPUT_TOKENS must be positive and less than MAX_TOTAL_TOKENS, as TGI requires")
        return limits

    def check(self, input_tokens: int, max_new_tokens: int) -> None:
        """TGI checks the total first, then the input alone."""
        if input_tokens + max_new_tokens > self.max_total_tokens:
            raise tgi_validation_error(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {input_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )
        if input_tokens > self.max_input_tokens:
            raise tgi_validation_error(
                f"`inputs` must have less than {self.max_input_tokens} tokens. Given: {input_tokens}"
            )


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Model:
    """What TGI says about itself in every answer."""

    name: str
    fingerprint: str

    def completion(self, content: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
        """A whole answer: TGI's chat.completion."""
        return {
            "object": "chat.completion",
            "id": "",
            "created": int(time.time()),
            "model": self.name,
            "system_fingerprint": self.fingerprint,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage(prompt_tokens, completion_tokens),
        }

    def chunk(self, content: str, finish_reason: str | None = None) -> dict:
        """One token of a streamed answer; the last one carries the finish reason."""
        choice = {"index": 0, "delta": {"role": "assistant", "content": content},
                  "logprobs": None, "finish_reason": finish_reason}
        return self._chunk([choice], None)

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        """The chunk TGI adds before [DONE] when asked `stream_options.include_usage`."""
        return self._chunk([], usage(prompt_tokens, completion_tokens))

    def _chunk(self, choices: list, usage_or_none: dict | None) -> dict:
        return {"object": "chat.completion.chunk", "id": "", "created": int(time.time()), "model": self.name,
                "system_fingerprint": self.fingerprint, "choices": choices, "usage": usage_or_none}

    def stream(self, request: ChatRequest, tokens: Iterable[str], finish_reason, prompt_tokens: int) -> Iterator[bytes]:
        """TGI's events for a generation: a chunk per token, the finish reason on the last one
        (an empty delta, as TGI sends for the end-of-sequence token), usage if asked, [DONE].
        `finish_reason` is called once the tokens are exhausted."""
        count = 0
        for token in tokens:
            count += 1
            yield sse_event(self.chunk(token))
        yield sse_event(self.chunk("", finish_reason()))
        if request.include_usage:
            yield sse_event(self.usage_chunk(prompt_tokens, count))
        yield SSE_DONE


def _compact(document) -> str:
    return json.dumps(document, separators=(",", ":"))


def sse_event(document: dict) -> bytes:
    """One event as TGI's router (axum) writes it: no space after `data:`, a blank line after."""
    return f"data:{_compact(document)}\n\n".encode()


SSE_DONE = b"data:[DONE]\n\n"
# axum's default keep-alive, every 15 s of silence: an empty comment.
SSE_KEEP_ALIVE = b":\n\n"

_ENCODER = EventStreamEncoder()


def payload_part(data: bytes) -> bytes:
    """Bytes of the container's answer in one event-stream message, as SageMaker relays them."""
    return _ENCODER.encode_message(
        {":message-type": "event", ":event-type": "PayloadPart", ":content-type": "application/octet-stream"}, data
    )


def stream_exception(exception_type: str, message: str, error_code: str | None = None) -> bytes:
    """SageMaker's own failure inside a stream: `ModelStreamError` (e.g. ErrorCode StreamBroken,
    ModelInvocationTimeExceeded) or `InternalStreamFailure`; botocore raises it as EventStreamError."""
    body = {"Message": message} | ({"ErrorCode": error_code} if error_code else {})
    return _ENCODER.encode_message(
        {":message-type": "exception", ":exception-type": exception_type, ":content-type": "application/json"},
        json.dumps(body).encode("utf-8"),
    )


class StreamCut(Exception):
    """Raised by a reply's body to end the connection mid-answer, without the stream's end."""


@dataclass
class Reply:
    """An HTTP answer of the endpoint; a streamed body is produced as it is sent."""

    status: int
    headers: dict[str, str]
    body: Iterable[bytes] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, document: dict, headers: dict[str, str] | None = None) -> "Reply":
        body = json.dumps(document).encode("utf-8")
        return cls(status, {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})},
                   [body])

    @classmethod
    def event_stream(cls, messages: Iterable[bytes]) -> "Reply":
        """SageMaker's InvokeEndpointWithResponseStream answer: event-stream messages, e.g.
        `payload_part`s of the container's SSE bytes."""
        return cls(
            200,
            {"Content-Type": EVENT_STREAM_CONTENT_TYPE, "X-Amzn-SageMaker-Content-Type": SSE_CONTENT_TYPE,
             "x-Amzn-Invoked-Production-Variant": "AllTraffic"},
            messages,
        )

    def write_to(self, handler: BaseHTTPRequestHandler) -> None:
        """Send over HTTP/1.1: with its length when known, else chunk by chunk as the body is
        produced; a StreamCut closes the connection without the stream's end."""
        handler.send_response(self.status)
        handler.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        chunked = "Content-Length" not in self.headers
        for name, value in self.headers.items():
            handler.send_header(name, value)
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for data in self.body:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                handler.wfile.flush()
        except StreamCut:
            handler.close_connection = True
            return
        if chunked:
            handler.wfile.write(b"0\r\n\r\n")
