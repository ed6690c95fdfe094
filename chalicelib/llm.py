"""The chat model on a SageMaker endpoint running TGI or vLLM (`SERVING`, docs/serving.md).

The app sends both containers the same chat-completions body (`{"messages": [...]}` through
InvokeEndpoint): TGI's Messages API and vLLM's OpenAI server (vLLM's `/invocations` treats a
body with `messages` as a chat completion) render the model's own chat template and answer with
the reply alone, so no prompt text can leak into the answer (the `return_full_text` trap of the
plain API). Answers, usage and stream chunks have one shape (OpenAI's `chat.completion` and
`chat.completion.chunk`); what differs is read by a small handler per container: its refusals
(`TgiMessagesHandler.refusal`, `VllmChatHandler.refusal`) and, in `parse_stream_line`, the
framing of a stream.

Importing this module imports langchain_aws (about a second: it loads tracing
support), so `services` imports it only when the chat route first needs it.
"""

import itertools
import json
import logging
import re
import time
from collections.abc import Callable

import urllib3.exceptions
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ConnectTimeoutError, ReadTimeoutError
from langchain_aws.chat_models.sagemaker_endpoint import (
    ChatLineIterator,
    ChatModelContentHandler,
    ChatSagemakerEndpoint,
)
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from chalicelib import waking
from chalicelib.errors import ModelBusy, ModelFailed, ModelInputTooLong, ModelTimeout, ServiceError
from chalicelib.token_bounds import neutralize_markers

logger = logging.getLogger(__name__)

# A container's refusal as the app reads it: (HTTP status or None, message) -> the ServiceError
# it amounts to, or None when it is not one the container's rules name.
Refusal = Callable[[int | None, str], ServiceError | None]
# A container's statuses that mean "busy, retry": overloaded, or not ready.
_BUSY_STATUSES = {429, 503}


class ChatCompletionsHandler(ChatModelContentHandler):
    """Turns LangChain's role/content dicts into a chat-completions body, and the answer back.

    Prompt markers in users' and the model's words are neutralised on the way in. A whole
    answer (InvokeEndpoint) comes as a body, a streamed one (InvokeEndpointWithResponseStream)
    one line at a time: see `parse_stream_line` and `AnswerStream`. An answer of max_new_tokens
    tokens is at most max_new_tokens times the model's longest token (`longest_token_bytes`) long,
    whatever it says: a longer one is not what it claims to be. A subclass names its container's
    refusals (`refusal`); `failure` turns any failed call into a ServiceError.
    """

    content_type = "application/json"
    accepts = "application/json"

    def __init__(self, stop_sequences: list[str], max_new_tokens: int, longest_token_bytes: int):
        self.stop_sequences = stop_sequences
        self.max_new_tokens = max_new_tokens
        self.longest_token_bytes = longest_token_bytes

    @staticmethod
    def refusal(status: int | None, message: str) -> ServiceError | None:
        raise NotImplementedError

    def transform_input(self, prompt: list[dict], model_kwargs: dict) -> bytes:
        messages = [
            message if message["role"] == "system" else {**message, "content": neutralize_markers(message["content"])}
            for message in prompt
        ]
        return json.dumps({"messages": messages, **model_kwargs}).encode("utf-8")

    def transform_output(self, output) -> AIMessage | AIMessageChunk:
        if isinstance(output, bytes):
            return parse_stream_line(output, self.refusal)
        reply = parse_chat_completion(output.read())
        reply.content = final_answer(reply.content, self.stop_sequences)
        check_answer_length(reply.content, self.max_new_tokens, self.longest_token_bytes)
        return reply

    def failure(self, error: Exception) -> ServiceError:
        return model_failure(error, self.refusal)


# TGI's messages for a prompt over MAX_INPUT_TOKENS, and over MAX_TOTAL_TOKENS with the answer
# (router/src/validation.rs); its answer beyond MAX_CONCURRENT_REQUESTS (router/src/server.rs).
_TGI_OVER_INPUT_LIMIT = re.compile(r"must have less than (\d+) tokens\. Given: (\d+)")
_TGI_OVER_TOTAL_LIMIT = re.compile(r"must be <= (\d+)\. Given: (\d+) `inputs` tokens and (\d+) `max_new_tokens`")
TGI_OVERLOADED = "Model is overloaded"


class TgiMessagesHandler(ChatCompletionsHandler):
    """Hugging Face TGI's Messages API. Its refusals: 422 for a prompt over its token limits
    (also inside a stream: TGI validates after the stream began, and since 2.4.1 says 422 for
    every error event), 429 "Model is overloaded"."""

    @staticmethod
    def refusal(status: int | None, message: str) -> ServiceError | None:
        if message == TGI_OVERLOADED:
            return ModelBusy("the model is overloaded; try again shortly")
        if match := _TGI_OVER_INPUT_LIMIT.search(message):
            limit, given = map(int, match.groups())
            return _input_too_long(given, allowed=limit - 1)
        if match := _TGI_OVER_TOTAL_LIMIT.search(message):
            total, given, new_tokens = map(int, match.groups())
            return _input_too_long(given, allowed=total - new_tokens)
        return None


# vLLM 0.27.1's refusal of a prompt that leaves no room for max_tokens within --max-model-len
# (vllm/renderers/params.py, TokenizeParams._token_len_check): the prompt is tokenized only up
# to one token past the room left, so its count is "at least" that many; or, before tokenizing,
# a prompt longer in characters than the room left times the vocabulary's longest token
# (_text_len_check): then it has more tokens than the room left.
_VLLM_OVER_CONTEXT = re.compile(
    r"maximum context length is (\d+) tokens\. However, you requested (\d+) output tokens and your prompt "
    r"contains (?:(?:at least )?(\d+) input tokens|\d+ characters \(more than \d+ characters, which is the "
    r"upper bound for (\d+) input tokens\))"
)
# The same refusals as later vLLM words them (vllm/renderers/params.py at vllm-project/vllm
# 017638d, TokenizeParams._token_len_check and _text_len_check): "You passed N input tokens and
# requested O output tokens. However, the model's context length is only T tokens, resulting in a
# maximum input length of I tokens." (N counted as above, at most I + 1), or "You passed C input
# characters ... of I tokens (at most X characters)." (then more than I tokens).
_VLLM_OVER_INPUT_LENGTH = re.compile(
    r"You passed (?:(\d+) input tokens|\d+ input characters) and requested \d+ output tokens\. However, the "
    r"model's context length is only \d+ tokens, resulting in a maximum input length of (\d+) tokens"
)


class VllmChatHandler(ChatCompletionsHandler):
    """vLLM's OpenAI-compatible server (the AWS vLLM DLC). Its refusals come before a stream
    begins, as HTTP 400 with an OpenAI error body; it queues what it cannot run yet (no
    overload status)."""

    @staticmethod
    def refusal(status: int | None, message: str) -> ServiceError | None:
        if match := _VLLM_OVER_CONTEXT.search(message):
            context, output, given, room = match.groups()
            allowed = int(context) - int(output)
            return _input_too_long(int(given) if given else int(room) + 1, allowed)
        if match := _VLLM_OVER_INPUT_LENGTH.search(message):
            given, allowed = match.groups()
            return _input_too_long(int(given) if given else int(allowed) + 1, int(allowed))
        return None


HANDLERS: dict[str, type[ChatCompletionsHandler]] = {"tgi": TgiMessagesHandler, "vllm": VllmChatHandler}


def _input_too_long(given: int, allowed: int) -> ModelInputTooLong | None:
    """The refusal of a too-long prompt, with the endpoint's own counts; None for counts that
    cannot be (given within what is allowed, or nothing allowed), which could not rescale a window."""
    if not 0 < allowed < given:
        return None
    return ModelInputTooLong("the model rejected the prompt as too long", given, allowed)


def final_answer(text: str, stop_sequences: list[str]) -> str:
    """The answer as stored: TGI ends an answer that hit a stop sequence with the sequence itself
    (it stops at the first one, so there is at most one, at the end; vLLM leaves it out); it is
    cut, and so is the whitespace around the answer. Empty is a failure: stored, an empty answer
    would sit in every later prompt; the client may retry instead."""
    text = text.strip()
    if stop := next((stop for stop in stop_sequences if text.endswith(stop)), None):
        text = text.removesuffix(stop).rstrip()
    if not text:
        raise ModelFailed("the model returned an empty answer")
    return text


def check_answer_length(text: str, max_new_tokens: int, longest_token_bytes: int) -> None:
    if len(text.encode("utf-8")) > max_new_tokens * longest_token_bytes:
        raise ModelFailed(f"the model's answer is longer than {max_new_tokens} tokens can be")


def _text(value, what: str) -> str:
    """`value` if it is text that can be stored: JSON may carry lone surrogates ("\\ud800"),
    which no UTF-8 store (DynamoDB) accepts."""
    if not isinstance(value, str):
        raise ModelFailed(f"the model's {what} has no text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelFailed(f"the model's {what} is not valid Unicode text") from None
    return value


def _usage_metadata(usage) -> dict:
    """LangChain's usage metadata from the answer's `usage`; a malformed one is ignored, with a
    warning: the counts are a report, the answer is what was asked for."""
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    if usage is None:
        return {}
    if not isinstance(usage, dict) or not all(
        type(usage.get(key)) is int and usage[key] >= 0 for key in keys
    ):
        logger.warning("ignored a malformed usage from the model: %.200r", usage)
        return {}
    return {"usage_metadata": {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
    }}


def parse_chat_completion(body: bytes) -> AIMessage:
    """The reply in a chat-completion answer, or ModelFailed if there is none."""
    try:
        completion = json.loads(body)
        content = completion["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ModelFailed("the model's answer was not a chat completion") from None
    return AIMessage(content=_text(content, "answer"), **_usage_metadata(completion.get("usage")))


def parse_stream_line(line: bytes, refusal: Refusal) -> AIMessageChunk:
    """One line of a streamed answer, as LangChain's line iterator hands it over, in any of the
    three framings (docs/serving.md): TGI's server-sent events `data:{json}`, vLLM's
    `data: {json}` ending `data: [DONE]` (SSE allows the one space after the colon, and only
    that one), and LMI's JSON lines, a bare `{json}`.

    Blank lines, `:` keep-alives and `[DONE]` carry no text (an empty chunk, which `ChatEndpoint`
    drops); a chunk becomes its delta text, with `finish_reason` in the response metadata and
    usage metadata on the usage chunk; an error event raises the ServiceError its status and
    message amount to (`refusal`, the container's reading), as for a whole answer. Anything
    else, e.g. the torn end of a stream that was cut off, is ModelFailed.
    """
    line = line.rstrip(b"\r")
    if not line or line.startswith(b":"):
        return AIMessageChunk(content="")
    if line.startswith(b"{"):
        data = line
    else:
        field, separator, data = line.partition(b":")
        if field != b"data" or not separator:
            raise ModelFailed("the model's stream was not server-sent events or JSON lines")
        data = data.removeprefix(b" ")
        if data == b"[DONE]":
            return AIMessageChunk(content="")
    try:
        event = json.loads(data)
        if "error" in event:
            raise _stream_error(event["error"], refusal)
        choices = event["choices"]
        delta = choices[0]["delta"].get("content") or "" if choices else ""
        finish_reason = choices[0].get("finish_reason") if choices else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ModelFailed("the model's stream held something that is not a chat completion chunk") from None
    metadata = {"finish_reason": finish_reason} if finish_reason else {}
    return AIMessageChunk(content=_text(delta, "answer"), response_metadata=metadata,
                          **_usage_metadata(event.get("usage")))


def _stream_error(error, refusal: Refusal) -> ServiceError:
    """An error event after the stream began with HTTP 200: TGI's {"message",
    "http_status_code"} (>= 2.4.1; earlier the message alone, beside "error_type"), vLLM's
    OpenAI error {"message", "type", "param", "code"}."""
    if isinstance(error, dict):
        message, status = error.get("message"), error.get("http_status_code", error.get("code"))
    else:
        message, status = error, None
    if not isinstance(message, str):
        return ModelFailed("the model failed mid-answer")
    status = status if type(status) is int else None
    if failure := refusal(status, message):
        return failure
    if status in _BUSY_STATUSES:
        return ModelBusy("the model is overloaded; try again shortly")
    return ModelFailed("the model failed mid-answer")


class AnswerStream:
    """The text of a streamed answer, relayed as it comes, ending exactly as a whole answer would.

    Iterating yields text deltas that are safe to relay: joined, they are exactly `text`, the
    answer `final_answer` gives for the whole (the non-streaming path's answer). So leading
    whitespace is dropped, and whatever may still turn out to be trailing (whitespace, or the
    start of a stop sequence, which TGI streams too) is held back until more text follows.
    Failures raise the ServiceError they amount to. A stream that ends with neither a finish
    reason nor usage (asked for with every stream: TGI and vLLM send it last, before their
    `[DONE]`, which adds nothing and whose absence alone is no loss) was cut off: ModelFailed.

    After the iteration, `text` and `usage` (LangChain's usage metadata, or None) are set;
    `relayed` says whether any text was yielded (before that, a too-long prompt may be retried);
    `first_text_at` is when the first text came from the model (`clock`), even if held back.
    """

    def __init__(self, chunks, stop_sequences: list[str], max_new_tokens: int, longest_token_bytes: int,
                 clock=time.perf_counter):
        self._chunks = chunks
        self._clock = clock
        self.first_text_at: float | None = None
        self._stop_sequences = stop_sequences
        self._max_bytes = max_new_tokens * longest_token_bytes
        self._max_new_tokens = max_new_tokens
        self.text: str | None = None
        self.usage: dict | None = None
        self.relayed = False

    def __iter__(self):
        received, sent, finished = "", 0, False
        for chunk in self._chunks:
            if chunk.content and self.first_text_at is None:
                self.first_text_at = self._clock()
            received += chunk.content
            finished = finished or bool(chunk.response_metadata.get("finish_reason"))
            self.usage = chunk.usage_metadata or self.usage
            if len(received.encode("utf-8")) > self._max_bytes:
                raise ModelFailed(f"the model's answer is longer than {self._max_new_tokens} tokens can be")
            if not sent:
                received = received.lstrip()
            safe = len(received) - self._held_back(received)
            if safe > sent:
                self.relayed = True
                yield received[sent:safe]
                sent = safe
        if not (finished or self.usage):
            raise ModelFailed("the model's answer was cut off")
        text = final_answer(received, self._stop_sequences)
        if len(text) > sent:
            self.relayed = True
            yield text[sent:]
        self.text = text

    def _held_back(self, text: str) -> int:
        """How many characters at the end of `text` may still be cut: whitespace, a start of a
        stop sequence (or a whole one), and the whitespace before it."""
        core = text.rstrip()
        held = max((n for stop in self._stop_sequences for n in range(len(stop), 0, -1)
                    if core.endswith(stop[:n])), default=0)
        return len(text) - len(core[: len(core) - held].rstrip())


_CALL_FAILURES = (BotoCoreError, ClientError, urllib3.exceptions.HTTPError)


class ChatEndpoint(ChatSagemakerEndpoint):
    """LangChain's SageMaker chat model; on the streaming path the body asks for a stream with
    usage (the stream's last chunk), which the non-streaming path must not send. Both paths wait
    for a model that is waking up where the caller can (`waking`), and a failed call, at its
    start or mid-stream, is the ServiceError its container's handler reads it as."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        generate = super()._generate
        try:
            return waking.call(lambda: generate(messages, stop, run_manager, **kwargs))
        except _CALL_FAILURES as error:
            raise self.content_handler.failure(error) from error

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        kwargs = {**kwargs, "stream": True, "stream_options": {"include_usage": True}}
        request = self._format_messages_request(messages=messages, **kwargs)
        try:
            yield from waking.call(lambda: _started(self._chunks(request, run_manager)))
        except _CALL_FAILURES as error:
            raise self.content_handler.failure(error) from error

    def _chunks(self, request: dict, run_manager):
        """Every chunk of the streamed answer that says something: text, a finish reason or usage.

        Written here rather than left to LangChain's `_stream`, which drops each chunk with
        neither text nor usage (langchain-aws 1.x, sagemaker_endpoint.py): TGI and vLLM put the
        finish reason on a chunk with empty text, so without usage the end of a whole answer
        would be lost and it would read as cut off (`AnswerStream`). Stop sequences are the
        container's job (`stop` in the body), so LangChain's cutting at `stop` is not needed."""
        response = self.client.invoke_endpoint_with_response_stream(**request)
        for line in ChatLineIterator(response["Body"]):
            message = self.content_handler.transform_output(line)
            if not (message.content or message.response_metadata or message.usage_metadata):
                continue  # a blank line, a keep-alive or [DONE]
            chunk = ChatGenerationChunk(message=message)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _started(chunks):
    """The stream, its call made: a generator calls the endpoint when first advanced, so
    its first chunk is taken here (where a refusal can still be retried) and put back."""
    for first in chunks:
        return itertools.chain([first], chunks)
    return iter(())


def chat_model(settings, client) -> ChatEndpoint:
    """LangChain's SageMaker chat model with the container's handler and the settings' knobs."""
    return ChatEndpoint(
        endpoint_name=settings.sagemaker_endpoint_name,
        # Named on every InvokeEndpoint(WithResponseStream) when the model is an inference component.
        inference_component_name=settings.sagemaker_inference_component_name,
        client=client,
        content_handler=HANDLERS[settings.serving](
            settings.stop_sequences, settings.max_new_tokens, settings.model.family.longest_token_bytes),
        model_kwargs={
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "stop": settings.stop_sequences,
        },
    )


_BUSY_CODES = {"ThrottlingException", "ServiceUnavailable", "ModelNotReadyException", "InternalDependencyException",
               "InternalStreamFailure"}


def _original_message(body: str) -> str:
    """The message of a container's error body as SageMaker passes it on (OriginalMessage): TGI's
    {"error": "...", "error_type"}, vLLM's {"error": {"message", ...}}; else the body itself."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) else body


def model_failure(error: Exception, refusal: Refusal) -> ServiceError:
    """The service error that a failed endpoint call amounts to, the container's own refusals
    read by `refusal`.

    Its message names the kind of failure only: SageMaker's and the container's own texts carry
    account ids, log links and internals, so they go to the log (as the cause), not to the client.
    """
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, (ReadTimeoutError, ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError)):
        return ModelTimeout("the model did not answer in time; try again")
    if isinstance(error, ConnectionError):
        return ModelBusy("the model endpoint cannot be reached; try again shortly")
    if isinstance(error, urllib3.exceptions.HTTPError):
        return ModelFailed("the model's answer broke off")
    if not isinstance(error, ClientError):
        return ModelFailed(f"the model call failed: {type(error).__name__}")
    code = error.response.get("Error", {}).get("Code", "")
    if code in _BUSY_CODES:
        return ModelBusy(f"the model endpoint is busy ({code}); try again shortly")
    if code == "ModelStreamError":
        return ModelFailed("the model's answer broke off")
    if code == "ModelError":
        status = error.response.get("OriginalStatusCode")
        if failure := refusal(status, _original_message(error.response.get("OriginalMessage", ""))):
            return failure
        if status in _BUSY_STATUSES:
            return ModelBusy("the model is overloaded; try again shortly")
        return ModelFailed(f"the model failed (status {status})")
    return ModelFailed(f"the model endpoint refused the call ({code})")
