"""A local SageMaker endpoint that serves a GGUF model as the TGI or the vLLM container would.

boto3's `sagemaker-runtime` client reaches it through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, so the
app runs offline with the code it runs in the cloud. It fails the way the real endpoint does:
SageMaker's own rejections are 400 `ValidationError`; the container's (TGI's 422 bodies, vLLM's
400 OpenAI errors) are handed back inside a 424 `ModelError`, so local mode exercises the app's
real error paths. InvokeEndpointWithResponseStream relays the container's stream in AWS
event-stream framing, errors inside it as the container sends them. The rules live in
`local.sagemaker` and the container's module (`local.tgi`, `local.vllm`).

    python -m local.model_server --host 127.0.0.1 --port 8080 [--serving tgi|vllm] [--model PATH]
                                 [--endpoint-name NAME] [--waking-seconds N]

`--waking-seconds N` starts it as an endpoint scaled to zero that is waking up: for its first N
seconds every call gets SageMaker's no-capacity refusal, as the app meets it in the cloud.
"""

import argparse
import errno
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from local import sagemaker
from local.chat_completions import ChatRequest
from local.containers import CONTAINERS
from local.logs import OneLinePerRequest
from local.sagemaker import ContainerError
from local.settings import BUNDLED_MODEL_PACKAGE, MODEL_PATH_VARIABLE, bundled_model_path

# The app's setting of the container it talks to (chalicelib.settings): make run passes it to both.
SERVING_VARIABLE = "SERVING"


class LocalModel:
    """One llama.cpp model and its own chat template, behind a lock: a Llama object must not
    serve two threads at once."""

    def __init__(self, path: Path, container):
        self.name = path.name
        self.container = container
        self.identity = container.Model(path.name, f"llama-cpp-python-{llama_cpp.__version__}")
        self.limits = container.TokenLimits.from_environment()
        self._lock = threading.Lock()
        # llama.cpp's threads busy-wait: on a few shared cores more than one stalls for seconds.
        self._llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=self.limits.context(),
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
            raise self.container.template_error(str(error)) from None
        tokens = self._llama.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return len(tokens)

    def close(self) -> None:
        """Wait out a generation in progress and keep request threads, which do not outlive the
        process, out of llama.cpp while the interpreter frees the model."""
        self._lock.acquire()

    def _generate(self, request: ChatRequest, prompt_tokens: int, stream: bool):
        # Both sample at temperature 1 unless told, greedily at 0, with no top-k or min-p.
        return self._llama.create_chat_completion(
            messages=request.messages,
            max_tokens=self.limits.answer_tokens(request, prompt_tokens),
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=0,
            min_p=0.0,
            stop=request.stop,
            stream=stream,
        )

    def answer(self, request: ChatRequest) -> dict:
        """The container's chat.completion for a request, or its refusal if it is invalid or over
        the limits."""
        self.container.check_parameters(request)
        with self._lock:
            prompt_tokens = self._count_prompt_tokens(request.messages)
            self.limits.check(prompt_tokens, request)
            completion = self._generate(request, prompt_tokens, stream=False)
        choice, usage = completion["choices"][0], completion["usage"]
        return self.identity.completion(choice["message"]["content"], choice["finish_reason"],
                                        usage["prompt_tokens"], usage["completion_tokens"])

    def stream(self, request: ChatRequest) -> Iterator[bytes]:
        """The container's stream for a request, produced as it is sent. vLLM refuses before the
        stream (an HTTP error); TGI only a template error: anything else it refuses is an error
        event in a stream that began with HTTP 200."""
        with self._lock:
            prompt_tokens = self._count_prompt_tokens(request.messages)
        if not self.container.VALIDATES_IN_STREAM:
            self._check(request, prompt_tokens)
        return self._stream_events(request, prompt_tokens)

    def _check(self, request: ChatRequest, prompt_tokens: int) -> None:
        self.container.check_parameters(request)
        self.limits.check(prompt_tokens, request)

    def _stream_events(self, request: ChatRequest, prompt_tokens: int) -> Iterator[bytes]:
        try:
            self._check(request, prompt_tokens)
        except ContainerError as error:
            yield error.stream_event()
            yield self.container.SSE_DONE
            return
        finish = {"reason": "length"}

        def tokens(chunks) -> Iterator[str]:
            """llama.cpp yields about one chunk per token; the containers count what is relayed."""
            for chunk in chunks:
                choice = chunk["choices"][0]
                finish["reason"] = choice.get("finish_reason") or finish["reason"]
                if content := choice["delta"].get("content"):
                    yield content

        with self._lock:
            yield from self.identity.stream(
                request, tokens(self._generate(request, prompt_tokens, stream=True)), lambda: finish["reason"],
                prompt_tokens
            )


class ModelServer(ThreadingHTTPServer):
    """SageMaker runtime in front of one model; threaded so /ping answers while it generates."""

    # Set once loaded: the port is bound first, so that a taken port is reported at once.
    model: LocalModel

    def __init__(self, address: tuple[str, int], endpoint_name: str | None, waking: sagemaker.Waking):
        super().__init__(address, InvocationHandler)
        self.endpoint_name = endpoint_name
        self.waking = waking

    def invoke(self, endpoint_name: str, body: bytes, stream: bool) -> sagemaker.Reply:
        """SageMaker's checks, then the container's: a container error comes back as ModelError.
        InvokeEndpointWithResponseStream relays the container's stream (it asks for one)."""
        try:
            if self.endpoint_name is not None and endpoint_name != self.endpoint_name:
                raise sagemaker.validation_error(
                    f"Endpoint {endpoint_name} of account {sagemaker.LOCAL_ACCOUNT} not found.")
            self.waking.check()
            request = self.model.container.parse_chat_request(body)
            try:
                if stream:
                    return sagemaker.Reply.event_stream(map(sagemaker.payload_part, self.model.stream(request)))
                return sagemaker.Reply.json(
                    200, self.model.answer(request), {"x-Amzn-Invoked-Production-Variant": "AllTraffic"}
                )
            except ContainerError as error:
                raise sagemaker.model_error(endpoint_name, error) from None
        except sagemaker.SageMakerError as error:
            return error.reply()


class InvocationHandler(OneLinePerRequest, BaseHTTPRequestHandler):
    """The routes of the SageMaker runtime protocol that a model container serves; one line per
    invocation in make run's log, the health checks' only with VERBOSE=1."""

    # Keep-alive, as boto3's connection pool expects.
    protocol_version = "HTTP/1.1"
    health_paths = ("/ping",)
    server: ModelServer

    def do_GET(self):
        if self.path == "/ping":
            sagemaker.Reply(200, {"Content-Length": "0"}).write_to(self)
        else:
            self._send_not_found()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        route = sagemaker.INVOCATIONS_PATH.fullmatch(urllib.parse.urlsplit(self.path).path)
        if route is None:
            self._send_not_found()
            return
        self.server.invoke(urllib.parse.unquote(route["name"]), body, bool(route["stream"])).write_to(self)

    def _send_not_found(self):
        not_found = sagemaker.service_error(
            404, "UnknownOperationException", f"No route for {self.command} {self.path}")
        not_found.reply().write_to(self)


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
        "--serving", choices=sorted(CONTAINERS), default=os.environ.get(SERVING_VARIABLE, "tgi"),
        help=f"the container whose protocol to speak (default: ${SERVING_VARIABLE}, else tgi)",
    )
    parser.add_argument(
        "--endpoint-name",
        help="answer only this endpoint name, as SageMaker does (default: any name)",
    )
    parser.add_argument(
        "--waking-seconds", type=float, default=0.0,
        help="answer SageMaker's no-capacity error (a model scaled to zero, waking) for this long after start",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    container = CONTAINERS[arguments.serving]
    try:
        container.TokenLimits.from_environment()
    except ValueError as error:
        print(f"model server: invalid token limits: {error}", file=sys.stderr)
        return 2
    try:
        # Waking from the start, the model's load included.
        server = ModelServer((arguments.host, arguments.port), arguments.endpoint_name,
                             sagemaker.Waking(arguments.waking_seconds))
    except OSError as error:
        in_use = error.errno == errno.EADDRINUSE
        reason = "is already in use" if in_use else f"cannot be used: {error.strerror}"
        print(f"model server: port {arguments.port} on {arguments.host} {reason}", file=sys.stderr)
        return 1

    model_path = arguments.model or bundled_model_path()
    started = time.perf_counter()
    try:
        server.model = LocalModel(model_path, container)
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
        f"serving={container.NAME} model={model_path} loaded_in={load_seconds:.2f}s {server.model.limits}",
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
