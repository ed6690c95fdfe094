"""TGI's Messages API as a SageMaker endpoint serves it: the one home of its rules for local stand-ins.

Both the local model server (llama.cpp) and the fake endpoint (tests, benchmark) answer with
these bodies, errors and streams, so the app's real error paths run offline (SageMaker's own
rules around them are local.sagemaker's; local.vllm is the other container):

- request: a Messages API body (local.chat_completions), checked like TGI (its 422 bodies and
  token-limit messages, router/src/validation.rs, TGI 2.x/3.x); with no `max_tokens`, TGI
  generates 100 tokens;
- answers: `chat.completion`, or with `"stream": true` TGI's server-sent events exactly as its
  router writes them (router/src/server.rs, chat.rs): `data:{json}` lines with no space,
  a blank line after each event, `:` keep-alives, `data:[DONE]` last; TGI validates after the
  stream began, so a refusal is an event `{"error": {"message", "http_status_code": 422}}`
  (TGI >= 2.4.1) in a stream that began with HTTP 200, and so is an error mid-answer.
"""

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS
from local import chat_completions
from local.chat_completions import ChatRequest, compact, usage
from local.sagemaker import ContainerError

NAME = "tgi"
# TGI 2.x's chat route generates this many tokens when a request has no `max_tokens`.
TGI_DEFAULT_MAX_TOKENS = 100
# TGI's --max-stop-sequences default.
TGI_MAX_STOP_SEQUENCES = 4
# TGI checks a request's parameters and limits inside the stream it already began.
VALIDATES_IN_STREAM = True


class TgiError(ContainerError):
    """An error of the TGI container: its HTTP answer before a stream begins, an event after."""

    def __init__(self, status: int, message: str, error_type: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type

    def body(self) -> str:
        """TGI's ErrorResponse, compact as its router (serde_json) writes it."""
        return compact({"error": self.message, "error_type": self.error_type})

    def stream_event(self) -> bytes:
        """The error once a stream has begun with HTTP 200: TGI says 422 whatever it was."""
        return sse_event({"error": {"message": self.message, "http_status_code": 422}})


def generation_error(detail: str) -> TgiError:
    """A generation that failed on the GPU, in TGI's words."""
    return TgiError(500, f"Request failed during generation: {detail}", "generation")


def template_error(detail: str) -> TgiError:
    """The model's chat template failed on the messages."""
    return TgiError(422, f"Template error: {detail}", "template_error")


def tgi_validation_error(detail: str) -> TgiError:
    return TgiError(422, f"Input validation error: {detail}", "validation")


def parse_chat_request(body: bytes) -> ChatRequest:
    """A Messages API body, with TGI's default for a missing `max_tokens`."""
    request = chat_completions.parse_chat_request(body)
    if request.max_new_tokens is None:
        request = replace(request, max_new_tokens=TGI_DEFAULT_MAX_TOKENS)
    return request


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

    def context(self) -> int:
        """The context a local model needs to serve these limits."""
        return self.max_total_tokens

    def answer_tokens(self, request: ChatRequest, input_tokens: int) -> int:
        """How many tokens TGI generates at most (the request's, its default filled in)."""
        return request.max_new_tokens

    def check(self, input_tokens: int, request: ChatRequest) -> None:
        """TGI checks the total first, then the input alone."""
        max_new_tokens = request.max_new_tokens
        if input_tokens + max_new_tokens > self.max_total_tokens:
            raise tgi_validation_error(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {input_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )
        if input_tokens > self.max_input_tokens:
            raise tgi_validation_error(
                f"`inputs` must have less than {self.max_input_tokens} tokens. Given: {input_tokens}"
            )


def token_limits(max_input_tokens: int, max_total_tokens: int) -> TokenLimits:
    """TGI's limits for the app's MAX_INPUT_TOKENS and MAX_TOTAL_TOKENS (the stack sets them alike)."""
    return TokenLimits(max_input_tokens, max_total_tokens)


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


def sse_event(document: dict) -> bytes:
    """One event as TGI's router (axum) writes it: no space after `data:`, a blank line after."""
    return f"data:{compact(document)}\n\n".encode()


SSE_DONE = b"data:[DONE]\n\n"
# axum's default keep-alive, every 15 s of silence: an empty comment.
SSE_KEEP_ALIVE = b":\n\n"
