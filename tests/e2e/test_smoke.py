"""`make smoke`'s checks against `make run` (local.launcher.Launcher), so that every change runs them,
not only a deploy: the same REST, WebSocket, queue and worker paths a deployed stage serves, with
a fake TGI endpoint in this process (so a test can put the model to sleep or make it fail)."""

import time

import boto3
import pytest

from deploy import smoke
from local.fake_model import FakeEndpoint, serving
from local.launcher import Launcher
from local.net import free_port
from local.sagemaker import service_error
from local.settings import USER_POOL_ID, stage_environment

WAKE_LIMIT = 120


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smoke")
    limits = stage_environment()
    fake = FakeEndpoint(int(limits["MAX_INPUT_TOKENS"]), int(limits["MAX_TOTAL_TOKENS"]), tokens_per_second=200)
    with serving(fake) as model_server:
        launcher = Launcher(free_port(), folder / "data", folder / "run.log",
                            AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=model_server.url)
        try:
            yield launcher, fake
        finally:
            launcher.stop()


@pytest.fixture
def password(monkeypatch):
    """The smoke user's password, known to the test so that it can look for it in the output."""
    known = smoke.smoke_password()
    monkeypatch.setattr(smoke, "smoke_password", lambda: known)
    return known


def users(launcher) -> list[dict]:
    sign_in = smoke.page_sign_in(launcher.url)
    cognito = boto3.client("cognito-idp", endpoint_url=sign_in["endpoint"], region_name=sign_in["region"])
    return cognito.list_users(UserPoolId=USER_POOL_ID)["Users"]


def test_every_check_passes_against_make_run_and_leaves_nothing(service, password):
    launcher, _ = service
    lines = []

    assert smoke.run(launcher.url, USER_POOL_ID, WAKE_LIMIT, out=lines.append), "\n".join(lines)

    report = "\n".join(lines)
    for name, _ in smoke.CHECKS:
        assert any(line.startswith(f"  ok   {name}") for line in lines), report
    assert lines[-1].startswith(f"smoke: passed, all {len(smoke.CHECKS)} checks"), report
    assert password not in report
    # The smoke user is gone; the local user is all the pool holds.
    assert [user["Username"] for user in users(launcher) if "smoke" in str(user)] == []


def test_a_model_scaled_to_zero_is_waited_for_with_a_countdown(service, password):
    launcher, fake = service
    fake.waking.sleep_for(3)
    lines = []

    passed = smoke.run(launcher.url, USER_POOL_ID, WAKE_LIMIT, out=lines.append,
                       sleep=lambda seconds: time.sleep(min(seconds, 0.5)))

    report = "\n".join(lines)
    assert passed, report
    assert "the model is scaled to zero and waking up: waiting up to 2m00s" in report
    assert "waiting for the model: " in report
    assert any(line.startswith("  ok   a turn over REST") and "waiting for the model" in line for line in lines)


def test_a_failed_check_fails_the_verdict_and_the_rest_still_run(service, password):
    launcher, fake = service
    fake.fail_next(service_error(400, "ValidationError", "the model refused"))
    lines = []

    assert not smoke.run(launcher.url, USER_POOL_ID, WAKE_LIMIT, out=lines.append)

    report = "\n".join(lines)
    assert any(line.startswith("  FAIL a turn over REST") for line in lines), report
    assert any(line.startswith("  ok   a turn over the WebSocket") for line in lines), report
    assert lines[-1].startswith("smoke: FAILED"), report
    assert [user["Username"] for user in users(launcher) if "smoke" in str(user)] == []
