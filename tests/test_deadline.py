"""Every request answers with the app's own JSON within its deadline (27 s), before API
Gateway's 29 s, however slow DynamoDB and the model are.

Time is simulated: each DynamoDB attempt and the model's answer advance a clock that the
request's deadline reads, and botocore's retry back-off sleeps on it, so the scenarios
of minutes run in milliseconds and exactly.
"""

from types import SimpleNamespace

import botocore.endpoint
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.retries import standard

from chalicelib import clients, deadline
from local.fake_model import aws_response, http_response
from tests.conftest import stored_items

API_GATEWAY_TIMEOUT = 29
# dynalite, not moto: moto's stub still applies a write whose attempt a test answered with a throttle.
on_dynalite = pytest.mark.parametrize("dynamodb", ["dynalite"], indirect=True)


class SimulatedTime:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def throttled():
    body = {"__type": "ProvisionedThroughputExceededException", "message": "slow down"}
    return aws_response(http_response(400, body))


@pytest.fixture
def slow_world(api, endpoint, monkeypatch):
    """Configure how long DynamoDB attempts and the model take, in simulated seconds."""
    time = SimulatedTime()
    world = SimpleNamespace(time=time, dynamodb_attempt=0.0, throttled={}, model_latency=0.0, attempts=[])
    monkeypatch.setattr(deadline, "clock", time)
    monkeypatch.setattr(botocore.endpoint.time, "sleep", time.sleep)

    def dynamodb_attempt(event_name, **_):
        operation = event_name.rsplit(".", 1)[1]
        world.attempts.append(operation)
        time.sleep(world.dynamodb_attempt)
        if world.throttled.get(operation, 0) > 0:
            world.throttled[operation] -= 1
            return throttled()
        return None

    def model_answer(read_timeout):
        def answer(**_):
            if world.model_latency > read_timeout:
                time.sleep(read_timeout)
                raise ReadTimeoutError(endpoint_url="https://runtime.sagemaker.fake")
            time.sleep(world.model_latency)

        return answer

    make_dynamodb, make_model = clients.dynamodb, clients.sagemaker_runtime

    def slow_dynamodb():
        client = make_dynamodb()
        # Last, as a real attempt follows the client's own check that it has time to finish
        # (first, a throttled attempt answered before that check, which then never ran).
        client.meta.events.register_last("before-send.dynamodb", dynamodb_attempt)
        return client

    def slow_model(read_timeout):
        client = make_model(read_timeout)
        client.meta.events.register_first("before-send.sagemaker-runtime", model_answer(read_timeout))
        return client

    monkeypatch.setattr(clients, "dynamodb", slow_dynamodb)
    monkeypatch.setattr(clients, "sagemaker_runtime", slow_model)

    def request(path):
        started = time.now
        response = api.http.get(path)
        return response, time.now - started

    world.request = request
    return world


@on_dynalite
def test_the_measured_worst_case_now_answers_in_time(slow_world, dynamodb):
    """Measured before: 1.9 s DynamoDB attempts throttled twice and a 19 s model answer gave
    a 200 after 33.5 s, when API Gateway had long answered its own 504."""
    slow_world.dynamodb_attempt = 1.9
    slow_world.throttled = {"Query": 2}
    slow_world.model_latency = 19

    response, elapsed = slow_world.request("/chat?sessionid=s&query=hello")

    assert elapsed <= 27 < API_GATEWAY_TIMEOUT
    assert response.status_code == 504 and response.json_body["error"] == "model_timeout"
    assert stored_items(dynamodb, "s") == []


@on_dynalite
@pytest.mark.parametrize("model_latency, status, stored", [(13.9, 200, 1), (19.9, 504, 0)])
def test_slow_but_successful_attempts_and_a_model_at_its_timeout(slow_world, dynamodb, model_latency, status, stored):
    """1.9 s DynamoDB attempts (the rate count, the session's listing, the history read) leave
    the model 14 of its 20 s (the write keeps its reserve): an answer just inside that is stored,
    one just inside 20 s is a 504, both in time."""
    slow_world.dynamodb_attempt = 1.9
    slow_world.model_latency = model_latency

    response, elapsed = slow_world.request("/chat?sessionid=s&query=hello")

    assert response.status_code == status and elapsed <= 27
    assert len(stored_items(dynamodb, "s")) == stored


@on_dynalite
def test_a_throttled_write_after_a_late_answer_stops_retrying_at_the_deadline(slow_world, dynamodb):
    slow_world.dynamodb_attempt = 1.9
    slow_world.throttled = {"PutItem": 10}
    slow_world.model_latency = 13.9

    response, elapsed = slow_world.request("/chat?sessionid=s&query=hello")

    assert elapsed <= 27
    assert (response.status_code, response.json_body["error"]) == (503, "history_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert stored_items(dynamodb, "s") == []


def test_no_retry_sleeps_past_the_deadline_even_at_botocores_longest_backoff(monkeypatch):
    """botocore sleeps before a retry; at its longest (2 ** (n - 1) s after a throttle) that sleep
    would carry a call past the deadline though each attempt started in time. With 6 s: a first
    attempt (1.9 s), the longest sleep (1 s), a second attempt; then the 2 s sleep and a third
    attempt no longer fit, so the call ends at once, 1.2 s before the deadline, not 0.8 s after."""
    time = SimulatedTime()
    monkeypatch.setattr(deadline, "clock", time)
    monkeypatch.setattr(botocore.endpoint.time, "sleep", time.sleep)
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount",
                        lambda backoff, context: clients.longest_backoff_seconds(context.attempt_number))
    client = clients.dynamodb()
    attempts = []

    def throttled_attempt(**_):
        attempts.append(time.now)
        time.sleep(1.9)
        return throttled()

    client.meta.events.register_last("before-send.dynamodb", throttled_attempt)
    started = time.now
    with deadline.applying(deadline.Deadline(6)), pytest.raises(deadline.DeadlineExceeded):
        client.get_item(TableName="t", Key={"pk": {"S": "k"}})

    assert len(attempts) == 2 and time.now - started == pytest.approx(4.8)


@on_dynalite
def test_the_model_is_not_asked_when_the_history_read_used_its_time(slow_world, endpoint, settings_env):
    settings_env.setenv("REQUEST_TIMEOUT_SECONDS", "12")
    slow_world.dynamodb_attempt = 1.9
    # The two updates before the read, and its throttled first attempt and back-off, leave less
    # than the write's reserve.
    slow_world.throttled = {"Query": 1}

    response, elapsed = slow_world.request("/chat?sessionid=s&query=hello")

    assert elapsed <= 12
    assert (response.status_code, response.json_body["error"]) == (504, "model_timeout")
    assert endpoint.requests == []


def test_inside_lambda_the_deadline_is_what_the_function_has_left():
    context = SimpleNamespace(get_remaining_time_in_millis=lambda: 9_000)

    assert deadline.for_request(27, context).remaining() == pytest.approx(9 - deadline.LAMBDA_MARGIN_SECONDS, abs=0.1)
    assert deadline.for_request(27, None).remaining() == pytest.approx(27, abs=0.1)
