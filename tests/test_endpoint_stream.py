"""The app's model against the fake endpoint of each container (TGI, vLLM) through a real botocore
client and LangChain's `stream`: what is asked, what is relayed, and how each failure maps."""

import time

import botocore.session
import pytest
import urllib3.exceptions
from botocore.config import Config
from langchain_core.messages import HumanMessage

from chalicelib.errors import ModelBusy, ModelFailed, ModelInputTooLong, ModelTimeout
from chalicelib.llm import HANDLERS, AnswerStream, chat_model
from chalicelib.settings import Settings
from local.containers import CONTAINERS
from local.fake_model import FakeEndpoint, StreamFault, serving

SERVINGS = sorted(CONTAINERS)


@pytest.fixture(params=SERVINGS)
def model(request, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_ENDPOINT_NAME", "fake")
    monkeypatch.setenv("CHAT_TABLE_NAME", "unused")
    monkeypatch.setenv("SERVING", request.param)
    settings = Settings.from_environment()
    client = botocore.session.get_session().create_client("sagemaker-runtime")
    fake = FakeEndpoint(settings.max_input_tokens, settings.max_total_tokens, keep_alives=True,
                        serving=request.param)
    fake.attach(client)
    return fake, chat_model(settings, client), settings


def stream_answer(model, question="What is the capital of France?"):
    fake, chat, settings = model
    answer = AnswerStream(chat.stream([HumanMessage(question)]), settings.stop_sequences, settings.max_new_tokens,
                          settings.model.family.longest_token_bytes)
    return list(answer), answer


def test_the_stream_path_asks_for_a_stream_with_usage_and_the_whole_path_does_not(model):
    fake, chat, _ = model
    deltas, answer = stream_answer(model)
    assert "".join(deltas) == answer.text == "Answer 1 to: What is the capital of France?"
    assert len(deltas) > 3 and answer.usage["output_tokens"] == len(deltas)
    assert fake.requests[0]["stream"] is True and fake.requests[0]["stream_options"] == {"include_usage": True}

    assert chat.invoke([HumanMessage("again")]).content == "Answer 2 to: again"
    assert "stream" not in fake.requests[1] and "stream_options" not in fake.requests[1]


def test_the_chat_model_speaks_the_containers_protocol(model):
    fake, chat, settings = model
    assert type(chat.content_handler) is HANDLERS[settings.serving]
    assert fake.container.NAME == settings.serving


def test_a_too_long_prompt_is_refused_before_any_text(model):
    """TGI refuses inside the stream it began, vLLM with HTTP 400 before it: the same failure."""
    fake, chat, settings = model
    fake.max_input_tokens, fake.max_total_tokens = 10, 10 + settings.max_new_tokens
    answer = AnswerStream(chat.stream([HumanMessage("a long question")]), settings.stop_sequences,
                          settings.max_new_tokens, settings.model.family.longest_token_bytes)
    with pytest.raises(ModelInputTooLong) as raised:
        list(answer)
    assert not answer.relayed
    assert raised.value.allowed <= 10 < raised.value.given
    with pytest.raises(ModelInputTooLong):
        chat.invoke([HumanMessage("a long question")])


@pytest.mark.parametrize("fault, failure", [
    ("generation-error", ModelFailed),
    (StreamFault.sagemaker(2, "ModelStreamError", "stream broken", "StreamBroken"), ModelFailed),
    (StreamFault.sagemaker(2, "InternalStreamFailure", "internal failure"), ModelBusy),
    (StreamFault.cut(2), ModelFailed),
], ids=["container-error", "model-stream-error", "internal-stream-failure", "cut"])
def test_a_stream_that_breaks_midway_is_a_service_error_after_some_text(model, fault, failure):
    fake, chat, settings = model
    if fault == "generation-error":
        fault = StreamFault.container_error(2, fake.container.generation_error("CUDA out of memory"))
    fake.fail_next(fault)
    answer = AnswerStream(chat.stream([HumanMessage("hello")]), settings.stop_sequences, settings.max_new_tokens,
                          settings.model.family.longest_token_bytes)
    with pytest.raises(failure) as raised:
        for _ in answer:
            pass
    assert type(raised.value) is failure
    assert answer.relayed and answer.text is None


def test_the_fake_paces_tokens(model):
    fake, _, _ = model
    fake.tokens_per_second = 50
    started = time.perf_counter()
    deltas, _ = stream_answer(model, "one two three four five")
    assert time.perf_counter() - started >= (len(deltas) - 1) / 50


def test_a_read_timeout_mid_stream_is_a_timeout(model):
    _, chat, _ = model
    failure = chat.content_handler.failure(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"))
    assert isinstance(failure, ModelTimeout)


@pytest.mark.parametrize("fault, failure", [(None, None), (StreamFault.cut(3), ModelFailed)], ids=["whole", "cut"])
def test_the_fake_streams_over_http(model, fault, failure):
    fake, _, settings = model
    with serving(fake) as server:
        client = botocore.session.get_session().create_client(
            "sagemaker-runtime", endpoint_url=server.url, config=Config(retries={"total_max_attempts": 1}))
        if fault:
            fake.fail_next(fault)
        answer = AnswerStream(chat_model(settings, client).stream([HumanMessage("over http")]),
                              settings.stop_sequences, settings.max_new_tokens,
                              settings.model.family.longest_token_bytes)
        if failure:
            with pytest.raises(failure, match="broke off"):
                list(answer)
            assert answer.relayed
        else:
            assert "".join(answer) == answer.text == "Answer 1 to: over http"
