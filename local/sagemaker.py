"""SageMaker runtime as an endpoint answers: the one home of its rules for local stand-ins.

Whatever the container (local.tgi, local.vllm), SageMaker puts its own rules around it:

- it rejects a request itself with 400 `ValidationError` (an unknown endpoint; an inference
  component with no copy, scaled to zero or scaling out from zero: "Inference Component has no
  capacity..." (`Waking`));
- it hands a container's error back as a 424 `ModelError` carrying the original status and body;
- InvokeEndpointWithResponseStream cuts the container's bytes into `PayloadPart` events of the
  AWS event-stream format, and reports its own mid-stream failures as `ModelStreamError` /
  `InternalStreamFailure` exception events.
"""

import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

# moto (a dev dependency) has the AWS event-stream encoder: prelude, headers, both CRC32s.
from moto.core.eventstream import EventStreamEncoder

# SageMaker names an account and a region in its error messages; a local endpoint has neither.
LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"
# The two SageMaker runtime routes a model answers: InvokeEndpoint and its streaming twin.
INVOCATIONS_PATH = re.compile(r"/endpoints/(?P<name>[^/]+)/invocations(?P<stream>-response-stream)?")
EVENT_STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
SSE_CONTENT_TYPE = "text/event-stream"
# The header botocore sends InvokeEndpoint's InferenceComponentName in.
INFERENCE_COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"


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


class ContainerError(Exception):
    """An error of the model's container: its HTTP answer (`status`, `body()`) before a stream
    begins, an event (`stream_event()`) after."""

    status: int

    def body(self) -> str:
        raise NotImplementedError

    def stream_event(self) -> bytes:
        raise NotImplementedError


def validation_error(message: str) -> SageMakerError:
    """SageMaker rejecting a request itself."""
    return SageMakerError(
        400, "ValidationError:http://internal.amazon.com/coral/com.amazon.coral.validate/", {"message": message}
    )


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


def model_error(endpoint_name: str, error: ContainerError) -> SageMakerError:
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
