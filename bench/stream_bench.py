"""`make bench`, streaming: how soon a user sees an answer, through `make run`'s launcher.

The same question, in a new session each time, is asked through the two paths, with a fake
TGI endpoint (served over HTTP from this process) that emits tokens at a fixed pace:
- the WebSocket path: the local gateway, the app's message handler, moto's SNS and SQS, the
  SQS poller running the worker, which streams to the connection through the gateway's
  @connections API: time to `accepted`, to the worker's call of the model, to the first `delta`
  and to `done`;
- the synchronous path: `POST /chat` through `chalice local`: time to the whole answer.
Times run from the client's send; medians and p90 over the measured turns, after warm-up
turns (the first imports and connections of every process).

Aim (issue 9): the median first delta within one token interval plus 100 ms.

    python -m bench.stream_bench
"""

import statistics
import tempfile
import time
from pathlib import Path

from websockets.sync.client import connect

from client.websocket import receive, send_chat
from local.fake_model import FakeEndpoint, serving
from local.launcher import Launcher
from local.net import free_port
from local.settings import stage_environment

TOKENS_PER_SECOND = 30
AIM_SECONDS = 1 / TOKENS_PER_SECOND + 0.100
WARM_UP_TURNS = 2
MEASURED_TURNS = 15
TIMEOUT = 60
# What is timed on the WebSocket: the first message of each type.
STREAMED = {"accepted": "accepted", "first_delta": "delta", "done": "done"}
QUESTION = "What should I see in Paris in one day if I like old churches, small museums and long walks?"


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def measure(turns: int = MEASURED_TURNS) -> dict:
    """Seconds per measured turn: `accepted`, `model_called`, `first_delta`, `done` (WebSocket) and
    `whole_answer` (POST /chat); and the answer's length in tokens (the fake's, one a word)."""
    limits = stage_environment()
    fake = FakeEndpoint(int(limits["MAX_INPUT_TOKENS"]), int(limits["MAX_TOTAL_TOKENS"]),
                        tokens_per_second=TOKENS_PER_SECOND)
    # When each call reached the model; turns run one at a time, so the n-th call is the n-th turn's.
    model_called_at = []
    answer = fake.invoke

    def timed_invoke(body, stream=False):
        model_called_at.append(time.perf_counter())
        return answer(body, stream)

    fake.invoke = timed_invoke
    times = {"accepted": [], "model_called": [], "first_delta": [], "done": [], "whole_answer": []}
    answers = set()
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as folder, serving(fake) as model_server:
        launcher = Launcher(free_port(), Path(folder) / "data", Path(folder) / "run.log",
                            AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=model_server.url)
        try:
            with connect(launcher.signed_in_websocket_url(), open_timeout=TIMEOUT) as client:
                for number in range(WARM_UP_TURNS + turns):
                    transcript = receive(client, send_chat(client, f"bench-ws-{number}", QUESTION), timeout=TIMEOUT)
                    if transcript.last["type"] != "done":
                        raise RuntimeError(f"a streamed turn failed: {transcript.last} (log: {launcher.log_path})")
                    if number >= WARM_UP_TURNS:
                        for kind, message_type in STREAMED.items():
                            times[kind].append(transcript.seconds_to(message_type))
                        times["model_called"].append(model_called_at[number] - transcript.sent_at)
                        answers.add(transcript.last["answer"])
            for number in range(WARM_UP_TURNS + turns):
                started = time.perf_counter()
                status, body = launcher.call("POST", "/chat", {"sessionid": f"bench-sync-{number}", "query": QUESTION},
                                             timeout=TIMEOUT)
                elapsed = time.perf_counter() - started
                if status != 200:
                    raise RuntimeError(f"a synchronous turn failed: {status} {body} (log: {launcher.log_path})")
                if number >= WARM_UP_TURNS:
                    times["whole_answer"].append(elapsed)
                    answers.add(body["answer"])
        finally:
            launcher.stop()
    return {"times": times, "answer_tokens": max(len(answer.split()) for answer in answers)}


def report(measured: dict) -> None:
    times, tokens = measured["times"], measured["answer_tokens"]
    turns = len(times["done"])

    def ms(kind: str) -> str:
        return f"p50 {statistics.median(times[kind]) * 1000:5.0f} ms  p90 {p90(times[kind]) * 1000:5.0f} ms"

    print(f"Time to the answer through make run's launcher, fake model at {TOKENS_PER_SECOND} tokens/s, answers of "
          f"{tokens} tokens ({tokens / TOKENS_PER_SECOND * 1000:.0f} ms of generation), {turns} turns a path:")
    print(f"  WebSocket  to accepted      {ms('accepted')}")
    print(f"             to model call    {ms('model_called')}")
    print(f"             to first delta   {ms('first_delta')}")
    print(f"             to done          {ms('done')}")
    print(f"  POST /chat to whole answer  {ms('whole_answer')}")
    first_delta = statistics.median(times["first_delta"])
    verdict = "met" if first_delta <= AIM_SECONDS else "MISSED"
    print(f"  aim: median first delta within one token interval + 100 ms = {AIM_SECONDS * 1000:.0f} ms: "
          f"{verdict} ({first_delta * 1000:.0f} ms)")


def main() -> None:
    report(measure())


if __name__ == "__main__":
    main()
