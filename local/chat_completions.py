"""The chat-completions body that both containers take (TGI's Messages API, vLLM's OpenAI
server) and the usage both report: what local.tgi and local.vllm share.

A body of the wrong shape is refused as SageMaker's 400 `ValidationError` by the local stand-ins
(a simplification: the container would refuse it in its own words, which the app does not read).
"""

import json
from dataclasses import dataclass

from local.sagemaker import validation_error

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatRequest:
    """The fields the containers act on; `max_new_tokens` None where the body has no `max_tokens`
    (each container has its own default)."""

    messages: list[dict]
    max_new_tokens: int | None
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
    """Read a chat-completions body; a body of the wrong shape is a 400 ValidationError."""
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
        max_new_tokens=max_tokens,
        temperature=_optional(payload, "temperature", (int, float), "a number"),
        top_p=_optional(payload, "top_p", (int, float), "a number"),
        stop=stop,
        stream=bool(_optional(payload, "stream", (bool,), "a boolean")),
        include_usage=bool(_optional(stream_options, "include_usage", (bool,), "a boolean")),
    )


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def compact(document) -> str:
    """JSON as both servers write it (serde_json, Starlette's JSONResponse, pydantic): no spaces."""
    return json.dumps(document, separators=(",", ":"))
