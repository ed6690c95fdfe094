"""Each way the endpoint can fail maps to a JSON error, and a failed turn stores nothing."""

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

from local.fake_model import aws_response, http_response, read_timeout
from local.sagemaker import service_error
from local.tgi import TgiError
from tests.conftest import stored_items


@pytest.mark.parametrize(
    "failure, status, code",
    [
        (TgiError(500, "Request failed during generation: CUDA out of memory", "generation"), 502, "model_error"),
        (TgiError(422, "Input validation error: `max_new_tokens` must be strictly positive", "validation"),
         502, "model_error"),
        (service_error(400, "ValidationError", "Endpoint llama2-test of account 1234 not found."), 502, "model_error"),
        (service_error(500, "InternalFailure", "An internal failure occurred."), 502, "model_error"),
        (http_response(200, {"generated_text": "not a chat completion"}), 502, "model_error"),
        (service_error(400, "ThrottlingException", "Rate exceeded"), 503, "model_unavailable"),
        (service_error(503, "ServiceUnavailable", "Service unavailable"), 503, "model_unavailable"),
        (TgiError(429, "Model is overloaded", "overloaded"), 503, "model_unavailable"),
        (EndpointConnectionError(endpoint_url="https://runtime.sagemaker.fake"), 503, "model_unavailable"),
        (read_timeout(), 504, "model_timeout"),
        (ConnectTimeoutError(endpoint_url="https://runtime.sagemaker.fake"), 504, "model_timeout"),
    ],
    ids=["model-500", "model-422", "no-endpoint", "internal", "not-chat", "throttled", "unavailable",
         "overloaded", "unreachable", "read-timeout", "connect-timeout"],
)
def test_failure_maps_to_json_error_and_history_is_unchanged(api, endpoint, failure, status, code):
    api.http.get("/chat?sessionid=s&query=first")
    before = api.http.get("/sessions/s/messages").json_body

    endpoint.fail_next(failure)
    response = api.http.get("/chat?sessionid=s&query=second")

    assert response.status_code == status
    assert response.json_body["error"] == code
    assert "Traceback" not in response.body.decode()
    for upstream_detail in ("account", "CUDA", "Rate exceeded", "arn:", "Service unavailable"):
        assert upstream_detail not in response.json_body["message"]  # logged, not shown
    assert api.http.get("/sessions/s/messages").json_body == before
    if status == 503:
        assert response.headers["Retry-After"] == "5"


def test_the_client_can_retry_after_a_failure(api, endpoint):
    endpoint.fail_next(read_timeout())
    assert api.http.get("/chat?sessionid=s&query=hello").status_code == 504

    response = api.http.get("/chat?sessionid=s&query=hello")

    assert response.status_code == 200
    assert len(api.http.get("/sessions/s/messages").json_body["messages"]) == 2


def test_history_store_failure_is_a_json_error(api, endpoint, dynamodb):
    dynamodb.delete_table(TableName="chat-test")

    response = api.http.get("/chat?sessionid=s&query=hello")

    assert response.status_code == 500
    assert response.json_body == {
        "error": "history_error", "message": "the history store failed (ResourceNotFoundException)"
    }
    assert endpoint.requests == []


def test_an_empty_answer_is_a_502_and_is_not_stored(api, endpoint):
    endpoint.fail_next(http_response(200, {"choices": [{"message": {"role": "assistant", "content": " [INST]"}}]}))

    response = api.http.get("/chat?sessionid=s&query=hello")

    assert response.status_code == 502 and response.json_body["message"] == "the model returned an empty answer"
    assert api.http.get("/sessions/s/messages").json_body["messages"] == []


@pytest.mark.parametrize("operation", ["Query", "PutItem"])
def test_a_throttled_history_is_a_503_to_retry_and_stores_nothing(api, endpoint, dynamodb, monkeypatch, operation):
    from chalicelib import clients

    make_client = clients.dynamodb

    def throttled_client():
        client = make_client()
        throttled = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
        client.meta.events.register(f"before-call.dynamodb.{operation}", lambda **_: (
            aws_response(http_response(400, {})), {"Error": throttled, "ResponseMetadata": {"HTTPStatusCode": 400}}))
        return client

    monkeypatch.setattr(clients, "dynamodb", throttled_client)

    response = api.http.get("/chat?sessionid=s&query=hello")

    assert response.status_code == 503 and response.json_body["error"] == "history_unavailable"
    assert response.headers["Retry-After"] == "5"
    assert stored_items(dynamodb, "s") == []
    assert len(endpoint.requests) == (operation == "PutItem")  # the model is asked only after the read


def test_an_unexpected_error_is_still_a_json_500(api, monkeypatch):
    from chalicelib.history import History

    def broken(self, session_id, limit, after):
        raise KeyError("a bug")

    monkeypatch.setattr(History, "turns_page", broken)

    response = api.http.get("/sessions/s/messages")

    assert response.status_code == 500
    assert response.json_body == {"error": "internal_error", "message": "an internal error occurred"}


def completion(content, usage) -> dict:
    return {"object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage}


@pytest.mark.parametrize("usage", [[1, 2, 3], "many", {"prompt_tokens": "5", "completion_tokens": "2",
                                                        "total_tokens": "7"}],
                         ids=["a-list", "a-string", "counts-as-strings"])
def test_a_malformed_usage_is_ignored_and_the_turn_answers(api, endpoint, usage, caplog):
    endpoint.fail_next(http_response(200, completion("Paris.", usage)))

    response = api.http.get("/chat?sessionid=s&query=hello")

    assert response.status_code == 200 and response.json_body["answer"] == "Paris."
    assert "malformed usage" in caplog.text


@pytest.mark.parametrize("failure, message", [
    (TgiError(422, "Input validation error: `inputs` must have less than 3584 tokens. Given: 0", "validation"),
     "the model failed (status 422)"),
    (TgiError(422, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
                   "Given: 0 `inputs` tokens and 512 `max_new_tokens`", "validation"), "the model failed (status 422)"),
    (http_response(200, completion("\ud800", None)), "the model's answer is not valid Unicode text"),
    (http_response(200, completion("x" * (512 * 27 + 1), None)), "the model's answer is longer than 512 tokens can be"),
], ids=["given-0", "total-given-0", "lone-surrogate", "longer-than-tokens-can-be"])
def test_an_impossible_answer_is_a_502_and_nothing_is_stored(api, endpoint, dynamodb, failure, message):
    api.http.get("/chat?sessionid=s&query=first")
    before = stored_items(dynamodb, "s")
    endpoint.fail_next(failure)

    response = api.http.get("/chat?sessionid=s&query=second")

    assert response.status_code == 502
    assert response.json_body == {"error": "model_error", "message": message}
    assert stored_items(dynamodb, "s") == before


def test_a_containers_503_is_a_503_to_retry(api, endpoint):
    endpoint.fail_next(TgiError(503, "Service Unavailable", "unavailable"))

    response = api.http.get("/chat?sessionid=s&query=hello")

    assert response.status_code == 503 and response.json_body["error"] == "model_unavailable"
    assert response.headers["Retry-After"] == "5"
