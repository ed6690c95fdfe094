"""The Llama 2 chat model on a SageMaker endpoint running Hugging Face's TGI container.

The app speaks TGI's Messages API (`{"messages": [...]}` through InvokeEndpoint):
TGI renders the Llama 2 chat format (`<s>[INST] <<SYS>>…<</SYS>>…[/INST] … </s>`)
from the model's own chat template and answers with the reply alone, so no prompt
text can leak into the answer (the `return_full_text` trap of the plain API).

Importing this module imports langchain_aws (about a second: it loads tracing
support), so `services` imports it only when the chat route first needs it.
"""

import itertools
import json
import logging
import re
import time

import urllib3.exceptions
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ConnectTimeoutError, ReadTimeoutError
from langchain_aws.chat_models.sagemaker_endpoint import ChatModelContentHandler, ChatSagemakerEndpoint
from langchain_core.messages import AIMessage, AIMessageChunk

from chalicelib import waking
from chalicelib.errors import ModelBusy, ModelFailed, ModelInputTooLong, ModelTimeout, ServiceError
from chalicelib.token_bounds import neutralize_markers

logger = logging.getLogger(__name__)

# The most UTF-8 bytes one Llama 2 token decodes to ("▁административ", measured from its
# vocabulary in tests/test_token_bound.py): an answer of max_new_tokens tokens is at most
# max_new_tokens times this long, whatever it says. A longer one is not what it claims to be.
LONGEST_TOKEN_BYTES = 27


def max_answer_bytes(max_new_tokens: int) -> int:
    return max_new_tokens * LONGEST_TOKEN_BYTES


class TgiMessagesHandler(ChatModelContentHandler):
    """Turns LangChain's role/content dicts into a Messages API body, and the answer back.

    Prompt markers in users' and the model's words are neutralised on the way in. A whole
    answer (InvokeEndpoint) comes as a body, a streamed one (InvokeEndpointWithResponseStream)
    one line at a time: see `parse_stream_line` and `AnswerStream`.
    """

    content_type = "application/json"
    accepts = "application/json"

    def __init__(self, stop_sequences: list[str], max_new_tokens: int):
        self.stop_sequences = stop_sequences
        self.max_new_tokens = max_new_tokens

    def transform_input(self, prompt: list[dict], model_kwargs: dict) -> bytes:
        messages = [
            message if message["role"] == "system" else {**message, "content": neutralize_markers(message["content"])}
            for message in prompt
        ]
        return json.dumps({"messages": messages, **model_kwargs}).encode("utf-8")

    def transform_output(self, output) -> AIMessage | AIMessageChunk:
        if isinstance(output, bytes):
            return parse_stream_line(output)
        reply = parse_chat_completion(output.read())
        reply.content = final_answer(reply.content, self.stop_sequences)
        check_answer_length(reply.content, self.max_new_tokens)
        return reply


def final_answer(text: str, stop_sequences: list[str]) -> str:
    """The answer as stored: TGI ends an answer that hit a stop sequence with the sequence itself
    (it stops at the first one, so there is at most one, at the end); it is cut, and so is the
    whitespace around the answer. Empty is a failure: stored, an empty answer would sit in
    every later prompt; the client may retry instead."""
    text = text.strip()
    if stop := next((stop for stop in stop_sequences if text.endswith(stop)), None):
        text = text.removesuffix(stop).rstrip()
    if not text:
        raise ModelFailed("the model returned an empty answer")
    return text


def check_answer_length(text: str, max_new_tokens: int) -> None:
    if len(text.encode("utf-8")) > max_answer_bytes(max_new_tokens):
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
    """LangChain's usage metadata from TGI's `usage`; a malformed one is ignored, with a warning:
    the counts are a report, the answer is what was asked for."""
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


def parse_stream_line(line: bytes) -> AIMessageChunk:
    """One line of TGI's server-sent events, as LangChain's line iterator hands it over.

    Blank lines, `:` keep-alives and `data:[DONE]` carry no text (an empty chunk, which
    LangChain drops); a chunk becomes its delta text, with `finish_reason` in the response
    metadata and usage metadata on TGI's usage chunk; an error event raises the ServiceError
    its message amounts to, as for a whole answer. Anything else, e.g. the torn end of a
    stream that was cut off, is ModelFailed.
    """
    line = line.rstrip(b"\r")
    if not line or line.startswith(b":"):
        return AIMessageChunk(content="")
    field, separator, data = line.partition(b":")
    if field != b"data" or not separator:
        raise ModelFailed("the model's stream was not server-sent events")
    data = data.removeprefix(b" ")
    if data == b"[DONE]":
        return AIMessageChunk(content="")
    try:
        event = json.loads(data)
        if "error" in event:
            raise _stream_error(event["error"])
        choices = event["choices"]
        delta = choices[0]["delta"].get("content") or "" if choices else ""
        finish_reason = choices[0].get("finish_reason") if choices else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ModelFailed("the model's stream held something that is not a chat completion chunk") from None
    metadata = {"finish_reason": finish_reason} if finish_reason else {}
    return AIMessageChunk(content=_text(delta, "answer"), response_metadata=metadata,
                          **_usage_metadata(event.get("usage")))


def _stream_error(error) -> ServiceError:
    """TGI >= 2.4.1 sends {"message", "http_status_code": 422} whatever went wrong; earlier
    versions the error text alone, beside "error_type"."""
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str):
        return ModelFailed("the model failed mid-answer")
    if message == TGI_OVERLOADED:
        return ModelBusy("the model is overloaded; try again shortly")
    return _input_too_long(message) or ModelFailed("the model failed mid-answer")


class AnswerStream:
    """The text of a streamed answer, relayed as it comes, ending exactly as a whole answer would.

    Iterating yields text deltas that are safe to relay: joined, they are exactly `text`, the
    answer `final_answer` gives for the whole (the non-streaming path's answer). So leading
    whitespace is dropped, and whatever may still turn out to be trailing (whitespace, or the
    start of a stop sequence, which TGI streams too) is held back until more text follows.
    Failures raise the ServiceError they amount to. A stream that ends with neither a finish
    reason nor usage (asked for with every stream: TGI sends it last) was cut off: ModelFailed.

    After the iteration, `text` and `usage` (LangChain's usage metadata, or None) are set;
    `relayed` says whether any text was yielded (before that, a too-long prompt may be retried);
    `first_text_at` is when the first text came from the model (`clock`), even if held back.
    """

    def __init__(self, chunks, stop_sequences: list[str], max_new_tokens: int, clock=time.perf_counter):
        self._chunks = chunks
        self._clock = clock
        self.first_text_at: float | None = None
        self._stop_sequences = stop_sequences
        self._max_bytes = max_answer_bytes(max_new_tokens)
        self._max_new_tokens = max_new_tokens
        self.text: str | None = None
        self.usage: dict | None = None
        self.relayed = False

    def __iter__(self):
        received, sent, finished = "", 0, False
        try:
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
        except (BotoCoreError, ClientError, ServiceError, urllib3.exceptions.HTTPError) as error:
            raise model_failure(error) from error
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


class TgiChatEndpoint(ChatSagemakerEndpoint):
    """LangChain's SageMaker chat model; on the streaming path the body asks TGI for a stream
    with usage (the stream's last chunk), which the non-streaming path must not send. Both
    paths wait for a model that is waking up where the caller can (`waking`)."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        generate = super()._generate
        return waking.call(lambda: generate(messages, stop, run_manager, **kwargs))

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        kwargs = {**kwargs, "stream": True, "stream_options": {"include_usage": True}}
        stream = super()._stream
        yield from waking.call(lambda: _started(stream(messages, stop, run_manager, **kwargs)))


def _started(chunks):
    """The stream, its call made: a generator calls the endpoint when first advanced, so
    its first chunk is taken here (where a refusal can still be retried) and put back."""
    for first in chunks:
        return itertools.chain([first], chunks)
    return iter(())


def chat_model(settings, client) -> TgiChatEndpoint:
    """LangChain's SageMaker chat model with our handler and the settings' generation knobs."""
    return TgiChatEndpoint(
        endpoint_name=settings.sagemaker_endpoint_name,
        # Named on every InvokeEndpoint(WithResponseStream) when the model is an inference component.
        inference_component_name=settings.sagemaker_inference_component_name,
        client=client,
        content_handler=TgiMessagesHandler(settings.stop_sequences, settings.max_new_tokens),
        model_kwargs={
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "stop": settings.stop_sequences,
        },
    )


# TGI's messages for a prompt over MAX_INPUT_TOKENS, and over MAX_TOTAL_TOKENS with the answer.
_OVER_INPUT_LIMIT = re.compile(r"must have less than (\d+) tokens\. Given: (\d+)")
_OVER_TOTAL_LIMIT = re.compile(r"must be <= (\d+)\. Given: (\d+) `inputs` tokens and (\d+) `max_new_tokens`")
TGI_OVERLOADED = "Model is overloaded"


def _input_too_long(original: str) -> ModelInputTooLong | None:
    """The refusal of a too-long prompt, with the endpoint's own counts; None for other errors,
    and for counts that cannot be (given within what is allowed, or nothing allowed), which
    could not rescale a window."""
    if match := _OVER_INPUT_LIMIT.search(original):
        limit, given = map(int, match.groups())
        allowed = limit - 1
    elif match := _OVER_TOTAL_LIMIT.search(original):
        total, given, new_tokens = map(int, match.groups())
        allowed = total - new_tokens
    else:
        return None
    if not 0 < allowed < given:
        return None
    return ModelInputTooLong("the model rejected the prompt as too long", given, allowed)


_BUSY_CODES = {"ThrottlingException", "ServiceUnavailable", "ModelNotReadyException", "InternalDependencyException",
               "InternalStreamFailure"}
# A container's statuses that mean "busy, retry": overloaded, or not ready.
_BUSY_STATUSES = {429, 503}


def model_failure(error: Exception) -> ServiceError:
    """The service error that a failed endpoint call amounts to.

    Its message names the kind of failure only: SageMaker's and TGI's own texts carry
    account ids, log links and internals, so they go to the log (as the cause), not
    to the client.
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
        original = error.response.get("OriginalMessage", "")
        if status == 422 and (too_long := _input_too_long(original)):
            return too_long
        if status in _BUSY_STATUSES:
            return ModelBusy("the model is overloaded; try again shortly")
        return ModelFailed(f"the model failed (status {status})")
    return ModelFailed(f"the model endpoint refused the call ({code})")
