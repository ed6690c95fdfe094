"""A fake Llama 2 TGI endpoint that answers at the HTTP level inside botocore.

It is hooked into a real `sagemaker-runtime` client's `before-send` event, so
botocore still builds the request and parses the answer, errors included: the app
sees exactly the exceptions a real endpoint would cause. Token limits are enforced
like TGI's with a worst-case tokenizer (one token per UTF-8 byte of the prompt
rendered in Llama 2's chat format), so a prompt it accepts fits any real count.
tests/fake_model_server.py serves the same fake over HTTP to real processes.
"""

import io
import json
import threading

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError


class _RawBody(io.BytesIO):
    def stream(self, **_):
        yield self.getvalue()


def http_response(status: int, body: dict, headers: dict | None = None) -> AWSResponse:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(raw)), **(headers or {})}
    return AWSResponse("https://runtime.sagemaker.fake", status, headers, _RawBody(raw))


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


def model_error(original_status: int, original_body: dict) -> AWSResponse:
    """What SageMaker answers when the container does not answer 200."""
    original = json.dumps(original_body)
    return http_response(
        424,
        {
            "Message": f'Received client error ({original_status}) from primary with message "{original}".',
            "OriginalStatusCode": original_status,
            "OriginalMessage": original,
            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/fake",
        },
        {"x-amzn-ErrorType": "ModelError"},
    )


def service_error(status: int, code: str, message: str) -> AWSResponse:
    return http_response(status, {"message": message}, {"x-amzn-ErrorType": code})


# A reply that runs script if a client inserts it as HTML: the web page must show it as text.
HTML_REPLY = '<img src=x onerror="window.__xss=1">'


class FakeEndpoint:
    """Answers "Answer N to: <question>" (HTML_REPLY to "html please") unless told to fail;
    records every request."""

    def __init__(self, max_input_tokens: int, max_total_tokens: int):
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.requests: list[dict] = []
        self.prompt_tokens: list[int] = []
        self._failures: list = []
        self._lock = threading.Lock()

    def attach(self, client) -> None:
        client.meta.events.register_first(
            "before-send.sagemaker-runtime.InvokeEndpoint", lambda request, **_: self.invoke(request.body)
        )

    def fail_next(self, failure) -> None:
        """Queue an AWSResponse to answer with, or an exception to raise, for one call."""
        self._failures.append(failure)

    def invoke(self, request_body: bytes) -> AWSResponse:
        """The answer to one InvokeEndpoint body, in botocore (`attach`) or over HTTP (fake_model_server)."""
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            body = json.loads(request_body)
            self.requests.append(body)
            number = len(self.requests)
        if isinstance(failure, Exception):
            raise failure
        if failure is not None:
            return failure
        tokens = len(render_llama2(body["messages"]).encode("utf-8")) + 1
        if tokens > self.max_input_tokens:
            return model_error(422, {
                "error": f"Input validation error: `inputs` must have less than {self.max_input_tokens} "
                f"tokens. Given: {tokens}",
                "error_type": "validation",
            })
        if tokens + body["max_tokens"] > self.max_total_tokens:
            return model_error(422, {
                "error": f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= "
                f"{self.max_total_tokens}. Given: {tokens} `inputs` tokens and {body['max_tokens']} "
                "`max_new_tokens`",
                "error_type": "validation",
            })
        with self._lock:
            self.prompt_tokens.append(tokens)
        question = body["messages"][-1]["content"]
        answer = HTML_REPLY if "html please" in question else f"Answer {number} to: {question}"
        return http_response(200, {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens, "completion_tokens": 8, "total_tokens": tokens + 8},
        })


def read_timeout() -> ReadTimeoutError:
    return ReadTimeoutError(endpoint_url="https://runtime.sagemaker.fake")
