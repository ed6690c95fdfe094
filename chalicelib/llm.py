"""The Llama 2 chat model on a SageMaker endpoint running Hugging Face's TGI container.

The app speaks TGI's Messages API (`{"messages": [...]}` through InvokeEndpoint):
TGI renders the Llama 2 chat format (`<s>[INST] <<SYS>>…<</SYS>>…[/INST] … </s>`)
from the model's own chat template and answers with the reply alone, so no prompt
text can leak into the answer (the `return_full_text` trap of the plain API).

Importing this module imports langchain_aws (about a second: it loads tracing
support), so `services` imports it only when the chat route first needs it.
"""

import json
import re

from botocore.exceptions import ClientError, ConnectionError, ConnectTimeoutError, ReadTimeoutError
from langchain_aws.chat_models.sagemaker_endpoint import ChatModelContentHandler, ChatSagemakerEndpoint
from langchain_core.messages import AIMessage, BaseMessage

from chalicelib.errors import ModelBusy, ModelFailed, ModelInputTooLong, ModelTimeout, ServiceError

# Llama 2's tokenizer is SentencePiece with byte fallback: every token covers at
# least one UTF-8 byte, so a text's byte count bounds its token count from above.
# A message adds at most this many tokens of template around it
# ("<s>[INST] ", " [/INST]", " </s>", "<<SYS>>\n", "\n<</SYS>>\n\n").
TEMPLATE_TOKENS_PER_MESSAGE = 20
# The BOS token the tokenizer puts in front of the prompt.
PROMPT_START_TOKENS = 1


# Text with meaning to Llama 2's prompt: "<s>" and "</s>" are the BOS and EOS special
# tokens (the tokenizer finds them inside text), "[INST]", "[/INST]", "<<SYS>>" and
# "<</SYS>>" delimit turns and the system prompt. In users' and the model's words
# they are broken with a zero-width space, so no message can forge a turn or a system
# prompt. The stored history keeps the words as they were.
_PROMPT_MARKERS = re.compile(r"</?s>|\[/?INST\]|<</?SYS>>")


def neutralize_markers(text: str) -> str:
    return _PROMPT_MARKERS.sub(lambda marker: marker[0][0] + "\u200b" + marker[0][1:], text)


def token_upper_bound(text: str) -> int:
    """At least as many tokens as Llama 2 makes of `text` as one chat message."""
    return len(neutralize_markers(text).encode("utf-8")) + TEMPLATE_TOKENS_PER_MESSAGE


def prompt_token_upper_bound(messages: list[BaseMessage]) -> int:
    return PROMPT_START_TOKENS + sum(token_upper_bound(message.content) for message in messages)


class TgiMessagesHandler(ChatModelContentHandler):
    """Turns LangChain's role/content dicts into a Messages API body, and the answer back.

    Prompt markers in users' and the model's words are neutralised on the way in. TGI
    ends an answer that hit a stop sequence with the sequence itself; it is cut off here.
    """

    content_type = "application/json"
    accepts = "application/json"

    def __init__(self, stop_sequences: list[str]):
        self.stop_sequences = stop_sequences

    def transform_input(self, prompt: list[dict], model_kwargs: dict) -> bytes:
        messages = [
            message if message["role"] == "system" else {**message, "content": neutralize_markers(message["content"])}
            for message in prompt
        ]
        return json.dumps({"messages": messages, **model_kwargs}).encode("utf-8")

    def transform_output(self, output) -> AIMessage:
        reply = parse_chat_completion(output.read())
        for stop in self.stop_sequences:
            if reply.content.endswith(stop):
                reply.content = reply.content.removesuffix(stop).rstrip()
        if not reply.content:
            # Stored, an empty answer would sit in every later prompt; the client may retry instead.
            raise ModelFailed("the model returned an empty answer")
        return reply


def parse_chat_completion(body: bytes) -> AIMessage:
    """The reply in a chat-completion answer, or ModelFailed if there is none."""
    try:
        completion = json.loads(body)
        content = completion["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ModelFailed("the model's answer was not a chat completion") from None
    if not isinstance(content, str):
        raise ModelFailed("the model's answer has no text")
    usage = completion.get("usage") or {}
    metadata = {}
    if {"prompt_tokens", "completion_tokens", "total_tokens"} <= usage.keys():
        metadata["usage_metadata"] = {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        }
    return AIMessage(content=content.strip(), **metadata)


def chat_model(settings, client):
    """LangChain's SageMaker chat model with our handler and the settings' generation knobs."""
    return ChatSagemakerEndpoint(
        endpoint_name=settings.sagemaker_endpoint_name,
        client=client,
        content_handler=TgiMessagesHandler(settings.stop_sequences),
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


def _input_too_long(original: str) -> ModelInputTooLong | None:
    """The refusal of a too-long prompt, with the endpoint's own counts; None for other 422s."""
    if match := _OVER_INPUT_LIMIT.search(original):
        limit, given = map(int, match.groups())
        allowed = limit - 1
    elif match := _OVER_TOTAL_LIMIT.search(original):
        total, given, new_tokens = map(int, match.groups())
        allowed = total - new_tokens
    else:
        return None
    return ModelInputTooLong("the model rejected the prompt as too long", given, allowed)


_BUSY_CODES = {"ThrottlingException", "ServiceUnavailable", "ModelNotReadyException", "InternalDependencyException"}


def model_failure(error: Exception) -> ServiceError:
    """The service error that a failed endpoint call amounts to.

    Its message names the kind of failure only: SageMaker's and TGI's own texts carry
    account ids, log links and internals, so they go to the log (as the cause), not
    to the client.
    """
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, (ReadTimeoutError, ConnectTimeoutError)):
        return ModelTimeout("the model did not answer in time; try again")
    if isinstance(error, ConnectionError):
        return ModelBusy("the model endpoint cannot be reached; try again shortly")
    if not isinstance(error, ClientError):
        return ModelFailed(f"the model call failed: {type(error).__name__}")
    code = error.response.get("Error", {}).get("Code", "")
    if code in _BUSY_CODES:
        return ModelBusy(f"the model endpoint is busy ({code}); try again shortly")
    if code == "ModelError":
        status = error.response.get("OriginalStatusCode")
        original = error.response.get("OriginalMessage", "")
        if status == 422 and (too_long := _input_too_long(original)):
            return too_long
        if status == 429:
            return ModelBusy("the model is overloaded; try again shortly")
        return ModelFailed(f"the model failed (status {status})")
    return ModelFailed(f"the model endpoint refused the call ({code})")
