"""vLLM's OpenAI server as the AWS vLLM DLC serves it on SageMaker: the one home of its rules
for local stand-ins (local.tgi is the other container; SageMaker's own rules are local.sagemaker's).

Read from vLLM 0.27.1, the version of the pinned image (upstream `vllm/vllm-openai:v0.27.1`
with AWS's SageMaker entrypoint, docs/serving.md):

- request: `/invocations` takes a body with `messages` as a chat completion
  (vllm/entrypoints/serve/sagemaker/api_router.py); no `max_tokens` means the rest of the
  context (vllm/entrypoints/serve/utils/api_utils.py, get_max_tokens);
- limits: one, --max-model-len (`SM_VLLM_MAX_MODEL_LEN`), which the stack sets to the app's
  MAX_TOTAL_TOKENS. A prompt with no room for `max_tokens` within it is refused before any
  stream begins, HTTP 400, in vLLM's words (vllm/renderers/params.py, TokenizeParams): the
  prompt is tokenized only to one token past the room, so the count is "at least" that;
- parameters: vLLM's checks and words (vllm/sampling_params.py, SamplingParams._verify_args),
  also HTTP 400 before any stream;
- errors: an OpenAI error body {"error": {"message", "type", "param", "code"}} with the
  status as its code (vllm/entrypoints/serve/utils/error_response.py);
- answers: `chat.completion`, or with `"stream": true` server-sent events
  (vllm/entrypoints/openai/chat_completion/serving.py, chat_completion_stream_generator):
  `data: {json}` with a space, a blank line after each; a first chunk with the role, one a
  token, the finish reason on the last, with `stream_options.include_usage` a last chunk with
  no choices and the usage, then `data: [DONE]`. No keep-alives. An error after the stream
  began is `data: {error}` (json.dumps' default separators), then `data: [DONE]`; a generation
  that failed in the engine says only "Internal server error" (GenerationError).
"""

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from chalicelib.settings import DEFAULT_MAX_TOTAL_TOKENS
from local import chat_completions
from local.chat_completions import ChatRequest, compact, usage
from local.sagemaker import ContainerError

NAME = "vllm"
# vLLM checks a request wholly before it starts a stream.
VALIDATES_IN_STREAM = False


class VllmError(ContainerError):
    """An error of vLLM's server: an OpenAI error body with the HTTP status, or after the stream
    began an event of the same body."""

    def __init__(self, status: int, message: str, error_type: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param

    def _document(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.status}}

    def body(self) -> str:
        """As FastAPI's JSONResponse writes it: compact."""
        return compact(self._document())

    def stream_event(self) -> bytes:
        """create_streaming_error_response: json.dumps with its default separators."""
        return f"data: {json.dumps(self._document())}\n\n".encode()


def parse_chat_request(body: bytes) -> ChatRequest:
    """A chat-completions body; a missing `max_tokens` stays None (the rest of the context)."""
    return chat_completions.parse_chat_request(body)


def template_error(detail: str) -> VllmError:
    """The model's chat template failed on the messages: jinja2's TemplateError is a 400."""
    return VllmError(400, detail)


def generation_error(detail: str) -> VllmError:
    """A generation that failed in the engine: vLLM keeps the detail to its log."""
    return VllmError(500, "Internal server error", "InternalServerError")


def check_parameters(request: ChatRequest) -> None:
    """vLLM's checks of the sampling parameters the app sends, in their order and words."""
    if request.temperature is not None and request.temperature < 0.0:
        raise VllmError(400, f"temperature must be non-negative, got {request.temperature}.", param="temperature")
    if request.temperature is not None and request.temperature > 2.0:
        raise VllmError(400, f"temperature must be in [0, 2], got {request.temperature}.", param="temperature")
    if request.top_p is not None and not 0.0 < request.top_p <= 1.0:
        raise VllmError(400, f"top_p must be in (0, 1], got {request.top_p}.", param="top_p")
    if request.max_new_tokens is not None and request.max_new_tokens < 1:
        raise VllmError(400, f"max_tokens must be at least 1, got {request.max_new_tokens}.", param="max_tokens")


@dataclass(frozen=True)
class TokenLimits:
    """vLLM's --max-model-len: prompt and answer together."""

    max_model_len: int = DEFAULT_MAX_TOTAL_TOKENS

    @classmethod
    def from_environment(cls, environ=os.environ) -> "TokenLimits":
        """From the app's MAX_TOTAL_TOKENS, which the stack gives vLLM as SM_VLLM_MAX_MODEL_LEN."""
        limits = cls(int(environ.get("MAX_TOTAL_TOKENS", DEFAULT_MAX_TOTAL_TOKENS)))
        if limits.max_model_len < 1:
            raise ValueError("MAX_TOTAL_TOKENS must be positive")
        return limits

    def context(self) -> int:
        return self.max_model_len

    def answer_tokens(self, request: ChatRequest, input_tokens: int) -> int:
        """`max_tokens`, else the rest of the context (get_max_tokens)."""
        room = self.max_model_len - input_tokens
        return room if request.max_new_tokens is None else min(request.max_new_tokens, room)

    def check(self, input_tokens: int, request: ChatRequest) -> None:
        """TokenizeParams: `max_tokens` within the context, then the prompt within what it leaves."""
        max_output = request.max_new_tokens or 0
        if max_output > self.max_model_len:
            raise VllmError(
                400,
                f"max_tokens={max_output}cannot be greater than max_model_len=max_total_tokens={self.max_model_len}. "
                "Please request fewer output tokens.",
                param="max_tokens",
            )
        max_input = self.max_model_len - max_output
        if input_tokens <= max_input:
            return
        counted = min(input_tokens, max_input + 1)  # tokenized with truncation to max_input + 1
        qualifier = "at least " if counted == max_input + 1 else ""
        raise VllmError(
            400,
            f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
            f"{max_output} output tokens and your prompt contains {qualifier}{counted} input tokens, "
            f"for a total of {qualifier}{counted + max_output} tokens. Please reduce the length of the input "
            "prompt or the number of requested output tokens.",
            param="input_tokens",
        )


def token_limits(max_input_tokens: int, max_total_tokens: int) -> TokenLimits:
    """vLLM's limit for the app's settings: it has no input limit of its own."""
    return TokenLimits(max_total_tokens)


@dataclass(frozen=True)
class Model:
    """What vLLM says about itself in every answer: the served model's name."""

    name: str
    fingerprint: str | None = None

    def completion(self, content: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
        """A whole answer: vLLM's ChatCompletionResponse."""
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": None,
                            "audio": None, "function_call": None, "tool_calls": [], "reasoning": None},
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }],
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": {**usage(prompt_tokens, completion_tokens), "prompt_tokens_details": None},
            "prompt_logprobs": None,
        }

    def stream(self, request: ChatRequest, tokens: Iterable[str], finish_reason, prompt_tokens: int) -> Iterator[bytes]:
        """vLLM's events for a generation: the role, a chunk per token, the finish reason (with
        an empty delta for the end-of-sequence token), usage if asked, [DONE]."""
        request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list, **extra) -> bytes:
            return sse_event({"id": request_id, "object": "chat.completion.chunk", "created": created,
                              "model": self.name, "choices": choices, **extra})

        def choice(delta: dict, reason: str | None = None) -> list:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]

        yield chunk(choice({"role": "assistant", "content": ""}))
        count = 0
        for token in tokens:
            count += 1
            yield chunk(choice({"content": token}))
        yield chunk([{**choice({"content": ""}, finish_reason())[0], "stop_reason": None}])
        if request.include_usage:
            yield chunk([], usage=usage(prompt_tokens, count))
        yield SSE_DONE


def sse_event(document: dict) -> bytes:
    """One event as vLLM writes it: `data: ` with a space, pydantic's compact JSON, a blank line."""
    return f"data: {compact(document)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"
# vLLM's StreamingResponse sends nothing while it waits.
SSE_KEEP_ALIVE = None
