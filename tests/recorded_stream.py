"""A recorded stream read as the app reads it: its bytes cut into PayloadParts anywhere and handed
to the app's chat model (`llm.ChatEndpoint`) through LangChain's `stream`, so whatever LangChain
or the endpoint filters out on the way is filtered here too."""

from langchain_core.messages import HumanMessage

from chalicelib.llm import AnswerStream, ChatEndpoint
from chalicelib.token_bounds import LLAMA_2

STOP = ["[INST]"]
MAX_NEW_TOKENS = 512
LONGEST = LLAMA_2.longest_token_bytes


def payload_parts(stream: str, size: int = 7) -> list[dict]:
    data = stream.encode()
    return [{"PayloadPart": {"Bytes": data[i:i + size]}} for i in range(0, len(data), size)]


class RecordedEndpoint:
    """The SageMaker runtime client's one call the streaming path makes, answering with the
    recorded stream (tests/test_endpoint_stream.py goes through botocore itself)."""

    def __init__(self, stream: str, size: int):
        self._parts = payload_parts(stream, size)

    def invoke_endpoint_with_response_stream(self, **request):
        return {"Body": iter(self._parts)}


def chunks(stream: str, handler, size: int = 7):
    """The chunks the app's model yields for a recorded stream."""
    model = ChatEndpoint(endpoint_name="recorded", client=RecordedEndpoint(stream, size),
                         content_handler=handler(STOP, MAX_NEW_TOKENS, LONGEST))
    return model.stream([HumanMessage("question")])


def read(stream: str, handler, size: int = 7) -> tuple[list[str], AnswerStream]:
    """What the app relays of a recorded stream, and the answer."""
    answer = AnswerStream(chunks(stream, handler, size), STOP, MAX_NEW_TOKENS, LONGEST)
    return list(answer), answer
