"""Issue 12, the app's side: the inference component named on every call, a model scaled to zero
(503 `model_waking` at once, or the worker waiting with `status` frames), per-turn timing, JSON
logs that never hold a user's text, and the EMF metric lines, all in local mode (Chalice's test
client and the worker in-process, the fake endpoint inside botocore)."""

import json

import pytest

from chalicelib import deadline, waking
from local import sagemaker
from local.tgi import TgiError
from tests.conftest import stored_items
from tests.test_async_turns import chat, turns  # noqa: F401 (the `turns` fixture)

QUERY = "my secret question about zebras"


def lines(capsys) -> list[dict]:
    """Everything the process wrote to stdout, each line parsed: a line that is not JSON fails."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def metrics(records: list[dict]) -> list[dict]:
    """The EMF documents: {"names": {name: unit}, "dimensions", and the document itself}."""
    found = []
    for record in records:
        if "_aws" in record:
            (directive,) = record["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == "Llama2Chatbot"
            found.append({"units": {m["Name"]: m["Unit"] for m in directive["Metrics"]},
                          "dimensions": directive["Dimensions"], **record})
    return found


@pytest.fixture
def component(settings_env):
    settings_env.setenv("SAGEMAKER_INFERENCE_COMPONENT_NAME", "llama2-chatbot-test-model")
    return "llama2-chatbot-test-model"


def test_every_call_names_the_inference_component_when_one_is_set(component, turns, api, endpoint):  # noqa: F811
    assert api.http.get(f"/chat?sessionid=s&query={QUERY}").status_code == 200
    turns.send("conn-1", chat(turn="t-2"))
    turns.work()

    assert turns.connections.types("conn-1")[-1] == "done"
    assert endpoint.inference_components == [component, component]  # InvokeEndpoint, then the stream


def test_without_one_no_call_names_a_component(api, endpoint):
    assert api.http.get("/chat?sessionid=s&query=hello").status_code == 200
    assert endpoint.inference_components == [None]


def test_a_synchronous_turn_answers_model_waking_at_once_and_a_retry_starts_at_once(api, endpoint, dynamodb):
    endpoint.waking.sleep_for(600)

    response = api.http.get("/chat?sessionid=s&query=hello&turn=t-1")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(waking.WAKE_SECONDS)
    assert response.json_body == {"error": "model_waking", "retry_after": waking.WAKE_SECONDS,
                                  "message": "the model is starting; try again in about 6 minutes"}
    assert len(endpoint.inference_components) == 1 and endpoint.requests == []  # refused before the model
    assert [item for item in stored_items(dynamodb, "s") if "answer" in item] == []
    assert api.http.get("/sessions/s/turns/t-1").json_body["error"] == "model_waking"

    endpoint.waking.sleep_for(0)
    retried = api.http.get("/chat?sessionid=s&query=hello&turn=t-1")
    assert retried.status_code == 200 and retried.json_body["turn"] == "t-1"


@pytest.fixture
def simulated_waits(monkeypatch):
    """The worker's waits between attempts pass in simulated time, whose clock the model's
    waking reads too: however busy the machine, the model wakes after the same waits."""
    now = [0.0]
    monkeypatch.setattr(waking, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    return lambda: now[0]


def test_the_worker_waits_for_the_model_with_status_frames_then_answers(simulated_waits, turns, endpoint,  # noqa: F811
                                                                        dynamodb):
    turns.send("conn-1", chat())
    endpoint.waking = sagemaker.Waking(3 * waking.POLL_SECONDS, clock=simulated_waits)

    turns.work()

    messages = turns.connections.received["conn-1"]
    kinds = [m["type"] for m in messages]
    statuses = [m for m in messages if m["type"] == "status"]
    assert kinds[0] == "accepted" and kinds[-1] == "done" and statuses
    assert kinds.index("delta") > kinds.index("status")
    assert all(s == {"type": "status", "status": "model_waking", "turn": "t-1", "retry_after": s["retry_after"]}
               and isinstance(s["retry_after"], int) and s["retry_after"] > 0 for s in statuses)
    assert len(statuses) == 3 and len(endpoint.inference_components) == 4 and len(endpoint.requests) == 1


def test_the_worker_fails_clearly_when_its_deadline_leaves_no_time_to_wait(turns, endpoint, api, monkeypatch):  # noqa: F811
    """In simulated time: the worker waits out its deadline (its Lambda's WORKER_TIMEOUT_SECONDS,
    300 s, less the margin) less what an answer needs, a status frame every POLL_SECONDS, then
    fails the turn."""
    now = [1000.0]
    monkeypatch.setattr(deadline, "clock", lambda: now[0])
    monkeypatch.setattr(waking, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    endpoint.waking.sleep_for(3600)
    turns.send("conn-1", chat())
    started = now[0]

    turns.work()

    messages = turns.connections.received["conn-1"]
    statuses = [m for m in messages if m["type"] == "status"]
    waited = now[0] - started
    assert 300 - waking.ANSWER_RESERVE_SECONDS - waking.POLL_SECONDS <= waited <= 300 - waking.ANSWER_RESERVE_SECONDS
    assert len(statuses) == waited / waking.POLL_SECONDS
    assert [s["retry_after"] for s in statuses][:2] == [waking.WAKE_SECONDS, waking.WAKE_SECONDS - 15]
    assert messages[-1]["type"] == "error" and messages[-1]["error"] == "model_waking"
    assert messages[-1]["turn"] == "t-1" and "minutes" in messages[-1]["message"] and messages[-1]["retry_after"] > 0
    assert endpoint.requests == []
    assert api.http.get("/sessions/s/turns/t-1").json_body["status"] == "failed"


def test_a_turn_stores_its_timing_and_emits_its_metrics_and_no_line_holds_the_text(api, endpoint, dynamodb,
                                                                                    capsys, settings_env):
    settings_env.setenv("STAGE", "test")
    endpoint.tokens_per_second = 100  # a whole answer comes once its last token would

    answer = api.http.get(f"/chat?sessionid=s&query={QUERY}&turn=t-1").json_body["answer"]
    assert api.http.get("/chat?sessionid=s&query=").status_code == 400

    records = lines(capsys)
    (item,) = [item for item in stored_items(dynamodb, "s") if "answer" in item]
    model_ms, first_token_ms = int(item["model_ms"]["N"]), int(item["first_token_ms"]["N"])
    words = len(answer.split())
    assert model_ms >= words * 10 and first_token_ms == model_ms  # a whole answer: its first text is its end

    (turn_metrics, error_metrics) = metrics(records)
    assert turn_metrics["dimensions"] == [["Stage"]] and turn_metrics["Stage"] == "test"
    assert turn_metrics["units"] == {"Turns": "Count", "TimeToFirstToken": "Milliseconds", "ModelTime": "Milliseconds",
                                     "PromptTokens": "Count", "CompletionTokens": "Count"}
    assert turn_metrics["Turns"] == [1.0] and turn_metrics["ModelTime"] == [float(model_ms)]
    assert turn_metrics["PromptTokens"] == [float(item["prompt_tokens"]["N"])]
    assert turn_metrics["CompletionTokens"] == [float(int(item["answer_tokens"]["N"]) - 1)]  # less the template's
    assert turn_metrics["sessionid"] == "s" and turn_metrics["turn"] == "t-1" and turn_metrics["request_id"]
    assert error_metrics["dimensions"] == [["Stage", "Code"]]
    assert (error_metrics["Code"], error_metrics["Errors"]) == ("invalid_request", [1.0])

    assert not [line for line in records if "secret question" in json.dumps(line) or "zebras" in json.dumps(line)]


def test_every_log_line_names_the_request_session_and_turn(api, endpoint, capsys):
    endpoint.fail_next(TgiError(500, "CUDA out of memory", "generation"))

    assert api.http.get(f"/chat?sessionid=s&query={QUERY}&turn=t-9").status_code == 502

    records = lines(capsys)
    logged = [r for r in records if "level" in r]
    assert logged and all(r["service"] == "llama2-chatbot" and r["request_id"] for r in logged)
    assert any(r["level"] == "ERROR" and r["sessionid"] == "s" and r["turn"] == "t-9" for r in logged)
    assert not [r for r in records if "zebras" in json.dumps(r)]


def test_the_worker_counts_redeliveries(turns, api, endpoint, capsys):  # noqa: F811
    turns.send("conn-1", chat())
    turns.work(redeliver=True)  # a first delivery
    event = api.events.generate_sqs_event(message_bodies=[turns.delivered[0]["Body"]], queue_name="turns")
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "2"
    api.lambda_.invoke("turn_worker", event)  # SQS's second: the turn is stored, nothing is sent

    retries = [m["WorkerRetries"] for m in metrics(lines(capsys)) if "WorkerRetries" in m]
    assert retries == [[0.0], [1.0]]
