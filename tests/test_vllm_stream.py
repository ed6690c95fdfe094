"""The app's reading of vLLM's stream and refusals (and of LMI's JSON lines), from frames as vLLM
0.27.1's OpenAI server writes them (vllm/entrypoints/openai/chat_completion/serving.py,
chat_completion_stream_generator; vllm/renderers/params.py for the refusals), cut into PayloadParts
anywhere and read by the app's chat model (tests/recorded_stream.py)."""

import json

import pytest
from botocore.exceptions import ClientError

from chalicelib.errors import ModelBusy, ModelFailed, ModelInputTooLong
from chalicelib.llm import AnswerStream, TgiMessagesHandler, VllmChatHandler
from tests import recorded_stream
from tests.recorded_stream import LONGEST, MAX_NEW_TOKENS, STOP

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def chunk(content: str | None, finish_reason=None, role: bool = False) -> dict:
    """One `chat.completion.chunk` (model_dump_json(exclude_unset=True): compact, no usage)."""
    delta = {"role": "assistant", "content": ""} if role else {"content": content}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    if finish_reason:
        choice["stop_reason"] = None
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": [choice]}


# The last chunk asked for with stream_options.include_usage (exclude_none: no fingerprint).
USAGE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": [],
         "usage": {"prompt_tokens": 30, "total_tokens": 35, "completion_tokens": 5}}
ANSWER = [chunk(None, role=True), chunk("Paris"), chunk(" is"), chunk(" the"), chunk(" capital"), chunk(" 🇫🇷."),
          chunk("", "stop")]


def sse(*events) -> str:
    """vLLM's framing: `data: ` with a space, a blank line after each event, `data: [DONE]` last."""
    return "".join(f"data: {json.dumps(e, separators=(',', ':')) if isinstance(e, dict) else e}\n\n"
                   for e in events)


def json_lines(*events) -> str:
    """LMI's chat framing: one bare JSON object a line, no `data:`, no [DONE]."""
    return "".join(json.dumps(event) + "\n" for event in events)


NORMAL = sse(*ANSWER, USAGE, "[DONE]")


def read(stream: str, size: int = 7, handler=VllmChatHandler) -> tuple[list[str], AnswerStream]:
    return recorded_stream.read(stream, handler, size)


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000], ids=lambda size: f"parts-of-{size}")
def test_a_stream_cut_anywhere_even_inside_a_character_is_read_whole(size):
    # Parts of 1 and 3 bytes split the flag's and the dot's multi-byte UTF-8 sequences.
    deltas, answer = read(NORMAL, size)
    assert "".join(deltas) == answer.text == "Paris is the capital 🇫🇷."
    assert answer.usage == {"input_tokens": 30, "output_tokens": 5, "total_tokens": 35}
    assert len(deltas) > 1


def test_keep_alive_comments_blank_lines_and_crlf_change_nothing():
    """vLLM sends no keep-alives, but SSE allows `:` comments anywhere: they carry no text."""
    with_comments = ":\n\n" + NORMAL.replace("\n\n", "\n\n: keep-alive\n\n", 4).replace("\n", "\r\n")
    assert read(with_comments)[1].text == "Paris is the capital 🇫🇷."


def test_without_done_the_usage_chunk_still_ends_the_answer():
    """[DONE] only follows the usage chunk; the answer is whole once the usage came."""
    assert read(sse(*ANSWER, USAGE))[1].text == "Paris is the capital 🇫🇷."


def test_a_whole_answer_without_usage_ends_at_its_finish_reason_then_done():
    """The finish reason comes on a chunk with empty text: it alone says the answer is whole."""
    deltas, answer = read(sse(*ANSWER, "[DONE]"))
    assert "".join(deltas) == answer.text == "Paris is the capital 🇫🇷."
    assert answer.usage is None


def test_lmi_json_lines_without_usage_end_at_the_finish_reason():
    deltas, answer = read(json_lines(*ANSWER), size=5)
    assert "".join(deltas) == answer.text == "Paris is the capital 🇫🇷."


@pytest.mark.parametrize("stream", [
    sse(*ANSWER[:4]),                                     # ends between events
    sse(*ANSWER[:4]) + "data: " + json.dumps(ANSWER[4])[:30],  # ends inside an event
    sse(*ANSWER[:-1], "[DONE]"),                          # no finish reason: [DONE] alone is not the end
    json_lines(*ANSWER[:-1]),                             # LMI's lines, cut before the finish reason
], ids=["between-events", "inside-an-event", "done-without-finish", "json-lines"])
def test_a_stream_without_its_usage_or_done_was_cut_off(stream):
    with pytest.raises(ModelFailed, match="cut off|not a chat completion chunk"):
        read(stream)


@pytest.mark.parametrize("error, failure", [
    # A generation that failed in the engine (GenerationError: finish_reason "error").
    ({"error": {"message": "Internal server error", "type": "InternalServerError", "param": None, "code": 500}},
     ModelFailed),
    ({"error": {"message": "Service Unavailable", "type": "ServiceUnavailableError", "param": None, "code": 503}},
     ModelBusy),
], ids=["generation-error", "unavailable"])
def test_an_error_event_inside_the_stream_after_some_text_is_a_service_error(error, failure):
    # create_streaming_error_response writes json.dumps' default separators, then [DONE].
    stream = sse(*ANSWER[:3]) + f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n"
    answer = AnswerStream(recorded_stream.chunks(stream, VllmChatHandler, 5), STOP, MAX_NEW_TOKENS, LONGEST)
    relayed = []
    with pytest.raises(failure) as raised:
        for delta in answer:
            relayed.append(delta)
    assert type(raised.value) is failure
    assert relayed == ["Paris", " is"] and answer.text is None


def test_lmi_json_lines_without_data_or_done_are_read_as_the_same_chunks():
    deltas, answer = read(json_lines(*ANSWER, USAGE), size=5)
    assert "".join(deltas) == answer.text == "Paris is the capital 🇫🇷."
    assert answer.usage["input_tokens"] == 30


def test_tgi_framing_without_the_space_is_read_alike():
    tgi = NORMAL.replace("data: ", "data:")
    for handler in (VllmChatHandler, TgiMessagesHandler):
        assert read(tgi, handler=handler)[1].text == "Paris is the capital 🇫🇷."


@pytest.mark.parametrize("line", ["event: message", "id: 7", "retry: 100", "Paris is", "dat: {}", "data"])
def test_a_line_that_is_neither_an_event_nor_a_json_line_is_a_model_failure(line):
    with pytest.raises(ModelFailed, match="not server-sent events or JSON lines"):
        read(sse(ANSWER[1]) + line + "\n\n" + sse(USAGE))


def test_a_stop_sequence_is_held_back_and_never_relayed():
    deltas, answer = read(sse(chunk("Hello"), chunk(" there ["), chunk("INST"), chunk("]", "stop"), USAGE))
    assert "".join(deltas) == answer.text == "Hello there"


# --- Refusals: HTTP errors before the stream, passed on by SageMaker as ModelError ----------------

def model_error(status: int, message: str, param: str | None = None) -> ClientError:
    """SageMaker's 424 ModelError around vLLM's OpenAI error body (JSONResponse: compact)."""
    body = {"error": {"message": message, "type": "BadRequestError", "param": param, "code": status}}
    original = json.dumps(body, separators=(",", ":"))
    return ClientError({"Error": {"Code": "ModelError", "Message": f"Received client error ({status}) from primary"},
                        "OriginalStatusCode": status, "OriginalMessage": original}, "InvokeEndpoint")


# vllm/renderers/params.py (0.27.1), _token_len_check: the prompt is tokenized up to one token past
# max_model_len - max_tokens, so its count is "at least" that; _text_len_check counts characters.
OVER_CONTEXT = ("This model's maximum context length is 4096 tokens. However, you requested 512 output tokens and "
                "your prompt contains at least 3585 input tokens, for a total of at least 4097 tokens. Please reduce "
                "the length of the input prompt or the number of requested output tokens.")
OVER_CONTEXT_EXACT = OVER_CONTEXT.replace("at least 3585", "3600").replace("at least 4097", "4112")
OVER_CONTEXT_CHARACTERS = (
    "This model's maximum context length is 4096 tokens. However, you requested 512 output tokens and your prompt "
    "contains 700000 characters (more than 584064 characters, which is the upper bound for 3584 input tokens). "
    "Please reduce the length of the input prompt or the number of requested output tokens.")


# Later vLLM's wording of the same refusals (vllm/renderers/params.py at 017638d).
OVER_INPUT_LENGTH = ("You passed 3585 input tokens and requested 512 output tokens. However, the model's context "
                     "length is only 4096 tokens, resulting in a maximum input length of 3584 tokens. Please reduce "
                     "the length of the input prompt.")
OVER_INPUT_LENGTH_CHARACTERS = (
    "You passed 700000 input characters and requested 512 output tokens. However, the model's context length is "
    "only 4096 tokens, resulting in a maximum input length of 3584 tokens (at most 584064 characters). Please "
    "reduce the length of the input prompt.")


@pytest.mark.parametrize("message, given", [(OVER_CONTEXT, 3585), (OVER_CONTEXT_EXACT, 3600),
                                            (OVER_CONTEXT_CHARACTERS, 3585), (OVER_INPUT_LENGTH, 3585),
                                            (OVER_INPUT_LENGTH_CHARACTERS, 3585)],
                         ids=["at-least", "exact", "characters", "later-tokens", "later-characters"])
def test_vllms_too_long_refusal_carries_its_own_counts(message, given):
    failure = VllmChatHandler(STOP, MAX_NEW_TOKENS, LONGEST).failure(model_error(400, message, "input_tokens"))
    assert isinstance(failure, ModelInputTooLong)
    assert (failure.given, failure.allowed) == (given, 4096 - 512)
    assert "4096" not in str(failure)  # the container's words are logged, not shown


@pytest.mark.parametrize("message", [
    # max_tokens over the whole context: the request, not the prompt, is wrong.
    "max_tokens=5000cannot be greater than max_model_len=max_total_tokens=4096. Please request fewer output tokens.",
    "top_p must be in (0, 1], got 1.5.",
    "Cannot find suitable handler for request. Expected one of: ['ChatCompletionRequest', 'CompletionRequest']",
])
def test_other_refusals_are_model_errors(message):
    failure = VllmChatHandler(STOP, MAX_NEW_TOKENS, LONGEST).failure(model_error(400, message))
    assert type(failure) is ModelFailed and str(failure) == "the model failed (status 400)"


def test_each_container_reads_only_its_own_wording():
    tgi_too_long = "Input validation error: `inputs` must have less than 3584 tokens. Given: 4000"
    assert VllmChatHandler.refusal(422, tgi_too_long) is None
    assert TgiMessagesHandler.refusal(400, OVER_CONTEXT) is None
    assert TgiMessagesHandler.refusal(400, OVER_INPUT_LENGTH) is None
    assert isinstance(TgiMessagesHandler.refusal(422, tgi_too_long), ModelInputTooLong)
