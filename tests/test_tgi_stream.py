"""The app's reading of TGI's stream: recorded streams through the app's chat model
(tests/recorded_stream.py), and the answer as relayed (tests/test_endpoint_stream.py: through botocore)."""

import json

import pytest

from chalicelib.errors import ModelBusy, ModelFailed, ModelInputTooLong
from chalicelib.llm import TgiMessagesHandler
from tests import recorded_stream
from tests.recorded_stream import LONGEST


def chunk(content: str, finish_reason=None) -> str:
    choice = {"index": 0, "delta": {"role": "assistant", "content": content}, "logprobs": None,
              "finish_reason": finish_reason}
    return "data:" + json.dumps({"object": "chat.completion.chunk", "id": "", "created": 1, "model": "m",
                                 "system_fingerprint": "3.3.7-sha", "choices": [choice], "usage": None})


USAGE = 'data:{"object":"chat.completion.chunk","id":"","created":1,"model":"m","system_fingerprint":"3.3.7",' \
        '"choices":[],"usage":{"prompt_tokens":30,"completion_tokens":5,"total_tokens":35}}'
TOO_LONG = 'data:{"error":{"message":"Input validation error: `inputs` must have less than 3584 tokens. ' \
           'Given: 4000","http_status_code":422}}'
# TGI's stream as the bytes arrive in PayloadParts: cut anywhere, not at line ends.
NORMAL = "\n\n".join([chunk(" Paris"), chunk(" is"), chunk(" the"), chunk(" capital."), chunk("", "stop"),
                      USAGE, "data:[DONE]"]) + "\n\n"


def read(stream: str):
    return recorded_stream.read(stream, TgiMessagesHandler)


def test_a_normal_stream_relays_the_answer_and_its_usage():
    deltas, answer = read(NORMAL)
    assert "".join(deltas) == answer.text == "Paris is the capital."
    assert deltas[0] == "Paris"  # relayed as it came, leading space dropped
    assert answer.usage == {"input_tokens": 30, "output_tokens": 5, "total_tokens": 35}
    assert answer.relayed


def test_keep_alives_and_crlf_lines_change_nothing():
    with_keep_alives = ":\n\n" + NORMAL.replace("\n\n", "\n\n:\n\n", 3).replace("\n", "\r\n")
    assert read(with_keep_alives)[1].text == "Paris is the capital."


def test_a_trailing_stop_sequence_is_never_relayed():
    stream = "\n\n".join([chunk(" Hello"), chunk(" there"), chunk(" ["), chunk("INST"), chunk("]", "stop_sequence"),
                          "data:[DONE]"]) + "\n\n"
    deltas, answer = read(stream)
    assert "".join(deltas) == answer.text == "Hello there"
    assert not any("[" in delta for delta in deltas)


def test_a_bracket_that_is_not_a_stop_sequence_is_relayed_once_it_is_clear():
    stream = "\n\n".join([chunk("a ["), chunk("x]"), chunk(" b  "), chunk("", "stop"), USAGE]) + "\n\n"
    deltas, answer = read(stream)
    assert deltas == ["a", " [x]", " b"] and answer.text == "a [x] b"


def test_the_usage_only_last_chunk_alone_marks_the_end():
    deltas, answer = read("\n\n".join([chunk("Hi"), USAGE, "data:[DONE]"]) + "\n\n")
    assert answer.text == "Hi" and answer.usage["output_tokens"] == 5


def test_a_whole_answer_without_usage_ends_at_its_finish_reason():
    stream = "\n\n".join([chunk(" Paris"), chunk(" is"), chunk(" the"), chunk(" capital."), chunk("", "stop"),
                          "data:[DONE]"]) + "\n\n"
    deltas, answer = read(stream)
    assert "".join(deltas) == answer.text == "Paris is the capital."
    assert answer.usage is None


def test_an_error_after_http_200_is_the_same_too_long_error_as_without_a_stream():
    stream = TOO_LONG + "\n\ndata:[DONE]\n\n"
    with pytest.raises(ModelInputTooLong) as raised:
        read(stream)
    assert (raised.value.given, raised.value.allowed) == (4000, 3583)


@pytest.mark.parametrize("error, failure", [
    ('{"error":{"message":"Model is overloaded","http_status_code":422}}', ModelBusy),
    ('{"error":{"message":"Request failed during generation: CUDA OOM","http_status_code":422}}', ModelFailed),
    ('{"error":"Input validation error: `inputs` must have less than 10 tokens. Given: 0","error_type":"validation"}',
     ModelFailed),
])
def test_errors_in_a_stream_map_like_errors_of_a_whole_answer(error, failure):
    with pytest.raises(failure) as raised:
        read(chunk("Hi") + "\n\ndata:" + error + "\n\ndata:[DONE]\n\n")
    assert type(raised.value) is failure


@pytest.mark.parametrize("stream", [
    chunk(" Paris") + "\n\n" + chunk(" is"),                 # ends between events
    chunk(" Paris") + "\n\n" + chunk(" is")[:40],            # ends inside an event
], ids=["between-events", "inside-an-event"])
def test_a_stream_cut_off_is_a_model_failure(stream):
    with pytest.raises(ModelFailed, match="cut off|not a chat completion chunk"):
        read(stream)


def test_a_lone_surrogate_in_a_delta_is_a_model_failure():
    with pytest.raises(ModelFailed, match="not valid Unicode"):
        read('data:{"choices":[{"index":0,"delta":{"content":"\\ud800"},"finish_reason":null}]}\n\n' + USAGE + "\n\n")


def test_an_empty_answer_is_a_model_failure_and_nothing_was_relayed():
    deltas = []
    answer_stream = None
    with pytest.raises(ModelFailed, match="empty answer"):
        deltas, answer_stream = read("\n\n".join([chunk("  "), chunk("[INST]", "stop_sequence"), USAGE]) + "\n\n")
    assert deltas == [] and answer_stream is None


def test_an_answer_longer_than_its_tokens_can_be_is_refused():
    with pytest.raises(ModelFailed, match="longer than 512 tokens can be"):
        read(chunk("x" * (512 * LONGEST + 1)) + "\n\n" + USAGE + "\n\n")
