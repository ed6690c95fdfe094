"""A fake Llama 2 endpoint serving as TGI or vLLM, in botocore or over HTTP, for tests and the benchmark.

In botocore it answers a real `sagemaker-runtime` client from its `before-send` event, so botocore
still builds the request and parses the answer (event streams included, with its own parser):
the app sees exactly what a real endpoint would give it. Over HTTP (`serving`) it answers real
processes such as `chalice local` at AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME. Bodies, errors and
streams come from the container's module (`local.tgi` or `local.vllm`, by `serving`) and
`local.sagemaker`, as the local model server's do.

Token limits are enforced like the container's with a worst-case tokenizer (one token per UTF-8 byte of
the prompt rendered in Llama 2's chat format, special tokens one each), so a prompt it accepts
fits any real count, and `usage` reports the same counts; or, given a `Llama2Tokenizer`, with
Llama 2's real counts, which its `usage` then reports. An answer can be paced
(`tokens_per_second`; a whole one comes once its last token would), a stream interleaved with
keep-alives and broken on purpose (`fail_next(StreamFault...)`), and the model scaled to zero and
waking up for a while (`waking.sleep_for(seconds)`: SageMaker's no-capacity refusal until then).
Or an answer comes as one GPU batching every request would generate it (`batching`,
local/continuous_batching.py): slower the more run at once, queued beyond its KV cache.
"""

import contextlib
import io
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from urllib3.exceptions import ProtocolError

from local import sagemaker
from local.containers import CONTAINERS
from local.sagemaker import ContainerError

FAKE_URL = "https://runtime.sagemaker.fake"
# A reply that runs script if a client inserts it as HTML: the web page must show it as text.
HTML_REPLY = '<img src=x onerror="window.__xss=1">'


def render_llama2(messages: list[dict]) -> str:
    """Llama 2's chat template, as its tokenizer_config renders it."""
    system = ""
    if messages and messages[0]["role"] == "system":
        system = f"<<SYS>>\n{messages[0]['content']}\n<</SYS>>\n\n"
        messages = messages[1:]
    text = ""
    for index, message in enumerate(messages):
        if message["role"] == "user":
            content = (system + message["content"]) if index == 0 else message["content"]
            text += f"<s>[INST] {content.strip()} [/INST]"
        else:
            text += f" {message['content'].strip()} </s>"
    return text


def worst_case_tokens(text: str) -> int:
    """At least as many tokens as Llama 2 makes of `text`: one a UTF-8 byte, but for the special
    tokens <s> and </s>, one each, as the real tokenizer counts them."""
    return len(re.sub(r"</?s>", "\x00", text).encode("utf-8"))


def http_response(status: int, body: dict, headers: dict | None = None) -> sagemaker.Reply:
    """Any JSON answer, to make the endpoint say something odd."""
    return sagemaker.Reply.json(status, body, headers)


def read_timeout() -> ReadTimeoutError:
    return ReadTimeoutError(endpoint_url=FAKE_URL)


@dataclass(frozen=True)
class StreamFault:
    """A streamed answer that breaks after `after_tokens` tokens: with the container's error
    event and the end of its stream, with SageMaker's exception event, or, when neither, with the
    connection cut."""

    after_tokens: int
    error: ContainerError | None = None
    exception: bytes | None = None

    @classmethod
    def container_error(cls, after_tokens: int, error: ContainerError) -> "StreamFault":
        """The container's error event and [DONE], in a stream that began with HTTP 200."""
        return cls(after_tokens, error=error)

    @classmethod
    def sagemaker(cls, after_tokens: int, exception_type: str, message: str, error_code: str | None = None):
        """SageMaker's own ModelStreamError or InternalStreamFailure event."""
        return cls(after_tokens, exception=sagemaker.stream_exception(exception_type, message, error_code))

    @classmethod
    def cut(cls, after_tokens: int) -> "StreamFault":
        return cls(after_tokens)


class _Broken(Exception):
    def __init__(self, fault: StreamFault):
        self.fault = fault


def _payload_parts(event: bytes) -> tuple[bytes, bytes]:
    """SageMaker does not cut its PayloadParts at line ends: each event comes in two halves."""
    half = len(event) // 2
    return sagemaker.payload_part(event[:half]), sagemaker.payload_part(event[half:])


class FakeEndpoint:
    """Answers "Answer N to: <question>" (HTML_REPLY to "html please") unless told to fail;
    records every request body and every accepted prompt's token count."""

    def __init__(self, max_input_tokens: int, max_total_tokens: int, tokens_per_second: float | None = None,
                 keep_alives: bool = False, tokenizer=None, reports_usage: bool = True, answer_for=None,
                 serving: str = "tgi", batching=None):
        """`tokenizer`: a `Llama2Tokenizer` to count as a real Llama 2 endpoint does (limits and
        usage), instead of the worst case. `reports_usage=False`: answers without `usage`.
        `answer_for(number, question)`: the answer text, instead of "Answer N to: <question>".
        `serving`: the container whose protocol it speaks (the app's SERVING).
        `batching`: a `ContinuousBatching` that paces every answer, one word a token, instead of
        `tokens_per_second`."""
        self.container = CONTAINERS[serving]
        self.identity = self.container.Model("fake-llama-2", f"fake-{serving}")
        # Tests may change them between calls.
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.tokenizer = tokenizer
        self.reports_usage = reports_usage
        self.answer_for = answer_for
        self.tokens_per_second = tokens_per_second
        self.batching = batching
        self.keep_alives = keep_alives
        self.requests: list[dict] = []
        # The inference component each call named (InferenceComponentName), None where none.
        self.inference_components: list[str | None] = []
        self.waking = sagemaker.Waking()
        self.prompt_tokens: list[int] = []
        self._failures: list = []
        self._lock = threading.Lock()

    def attach(self, client) -> None:
        """Answer `client`'s InvokeEndpoint and InvokeEndpointWithResponseStream calls."""
        events = client.meta.events
        def invoke(request, **streaming) -> AWSResponse:
            component = request.headers.get(sagemaker.INFERENCE_COMPONENT_HEADER)  # bytes, as botocore sends it
            self.named(component.decode() if component else None)
            return aws_response(self.invoke(request.body, **streaming))

        events.register_first("before-send.sagemaker-runtime.InvokeEndpoint",
                              lambda request, **_: invoke(request))
        events.register_first("before-send.sagemaker-runtime.InvokeEndpointWithResponseStream",
                              lambda request, **_: invoke(request, stream=True))

    def named(self, inference_component: str | None) -> None:
        """Record the inference component a call named (its InferenceComponentName)."""
        with self._lock:
            self.inference_components.append(inference_component)

    def fail_next(self, failure) -> None:
        """Queue, for one call: a Reply to answer with, a SageMakerError, a ContainerError (a 424
        ModelError, or in a stream that TGI validates its error event), a StreamFault, or an
        exception to raise."""
        self._failures.append(failure)

    def invoke(self, request_body: bytes, stream: bool = False) -> sagemaker.Reply:
        """The answer to one call's body, in botocore (`attach`) or over HTTP (`serving`)."""
        with self._lock:
            try:
                self.waking.check()
            except sagemaker.SageMakerError as error:
                return error.reply()
            failure = self._failures.pop(0) if self._failures else None
            self.requests.append(json.loads(request_body))
            number = len(self.requests)
        if isinstance(failure, sagemaker.Reply):
            return failure
        if isinstance(failure, sagemaker.SageMakerError):
            return failure.reply()
        if isinstance(failure, Exception) and not isinstance(failure, ContainerError):
            raise failure
        container = self.container
        try:
            request = container.parse_chat_request(request_body)
            if self.tokenizer is not None:
                tokens = self.tokenizer.prompt_tokens(request.messages)
            else:
                tokens = worst_case_tokens(render_llama2(request.messages)) + 1
            limits = container.token_limits(self.max_input_tokens, self.max_total_tokens)
            try:
                if isinstance(failure, ContainerError):
                    raise failure
                container.check_parameters(request)
                limits.check(tokens, request)
            except ContainerError as error:
                if stream and container.VALIDATES_IN_STREAM:
                    return sagemaker.Reply.event_stream(self._error_ending(error))
                raise sagemaker.model_error("fake", error) from None
        except sagemaker.SageMakerError as error:
            return error.reply()
        with self._lock:
            self.prompt_tokens.append(tokens)
        question = request.messages[-1]["content"]
        if self.answer_for is not None:
            answer = self.answer_for(number, question)
        else:
            answer = HTML_REPLY if "html please" in question else f"Answer {number} to: {question}"
        words = re.findall(r"\s*\S+", " " + answer)
        if self.tokenizer is not None:
            completion_tokens = self.tokenizer.answer_tokens(answer)
        else:
            completion_tokens = worst_case_tokens(answer) + 1  # and the end of sequence
        if self.batching is not None:
            words = self.batching.paced(words, tokens, limits.answer_tokens(request, tokens), label=question)
        if not stream:
            for _ in self._paced(words, None):  # a whole answer comes once its last token would
                pass
            completion = self.identity.completion(answer, "stop", tokens, completion_tokens)
            if not self.reports_usage:
                del completion["usage"]
            return sagemaker.Reply.json(200, completion)
        events = self.identity.stream(request, self._paced(words, failure), lambda: "stop", tokens)
        return sagemaker.Reply.event_stream(self._messages(events))

    def _paced(self, words: list[str], fault: StreamFault | None) -> Iterator[str]:
        for index, word in enumerate(words):
            if fault is not None and index == fault.after_tokens:
                raise _Broken(fault)
            if self.tokens_per_second:
                time.sleep(1 / self.tokens_per_second)
            yield word
        if fault is not None:
            raise _Broken(fault)

    def _error_ending(self, error: ContainerError) -> tuple[bytes, ...]:
        """The container's error event and the end of its stream."""
        return (*_payload_parts(error.stream_event()), *_payload_parts(self.container.SSE_DONE))

    def _messages(self, events: Iterator[bytes]) -> Iterator[bytes]:
        keep_alive = self.container.SSE_KEEP_ALIVE if self.keep_alives else None
        try:
            for event in events:
                if keep_alive:
                    yield from _payload_parts(keep_alive)
                yield from _payload_parts(event)
        except _Broken as broken:
            fault = broken.fault
            if fault.error is not None:
                yield from self._error_ending(fault.error)
            elif fault.exception is not None:
                yield fault.exception
            else:
                raise sagemaker.StreamCut() from None


class _RawBody:
    """What botocore reads an answer from, as it reads urllib3's: `stream()` for event streams,
    `read()` for a blob. A cut stream fails the way urllib3 does on a broken connection."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._read: io.BytesIO | None = None

    def stream(self, **_):
        try:
            yield from self._chunks
        except sagemaker.StreamCut:
            raise ProtocolError("Connection broken: the fake endpoint cut the stream") from None

    def read(self, amt=None):
        if self._read is None:
            self._read = io.BytesIO(b"".join(self.stream()))
        return self._read.read(amt)

    def close(self):
        """Nothing to release."""


def aws_response(reply: sagemaker.Reply) -> AWSResponse:
    return AWSResponse(FAKE_URL, reply.status, reply.headers, _RawBody(reply.body))


class FakeModelServer(ThreadingHTTPServer):
    """The fake over HTTP, on a thread of the process that set it up, so a test still queues
    failures on its FakeEndpoint and reads its requests."""

    daemon_threads = True

    def __init__(self, fake: FakeEndpoint):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.answering = threading.Event()
        self.answering.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @contextlib.contextmanager
    def holding_answers(self) -> Iterator[None]:
        """Keep answers back until the block ends, so a test sees what a client shows meanwhile."""
        self.answering.clear()
        try:
            yield
        finally:
            self.answering.set()


class _Handler(BaseHTTPRequestHandler):
    server: FakeModelServer
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._start(200 if self.path == "/ping" else 404, {"Content-Length": "0"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        route = sagemaker.INVOCATIONS_PATH.fullmatch(self.path)
        if route is None:
            self._start(404, {"Content-Length": "0"})
            return
        self.server.answering.wait()
        self.server.fake.named(self.headers.get(sagemaker.INFERENCE_COMPONENT_HEADER))
        self.server.fake.invoke(body, stream=bool(route["stream"])).write_to(self)

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, *_):
        """Quiet: the app's own log already names every failed call."""


@contextlib.contextmanager
def serving(fake: FakeEndpoint) -> Iterator[FakeModelServer]:
    """Serve `fake` on a free port of 127.0.0.1 until the block ends."""
    server = FakeModelServer(fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
