"""What `make run` gives the processes it starts (local/run.py), without starting them: honcho's
Manager is replaced by one that records each process."""

import pytest

from local import run
from local.net import free_port
from local.settings import BUNDLED_MODEL_NAME, PROCESS_NAMES

APP_PROCESSES = ("websocket", "worker", "api")  # those that run the app, which names the model


class RecordingManager:
    """honcho's Manager as make run uses it; `loop` returns at once."""

    started: dict[str, dict] = {}

    def __init__(self):
        self.returncode = 0
        RecordingManager.started = {}

    def add_process(self, name, command, env, cwd):
        RecordingManager.started[name] = env

    def loop(self):
        pass


@pytest.fixture
def make_run(monkeypatch, tmp_path):
    """Run make run's main(); the environment of each process it would start."""
    monkeypatch.setattr(run, "Manager", RecordingManager)
    monkeypatch.setenv("PORT", str(free_port()))
    monkeypatch.setenv("LOCAL_DATA_DIR", str(tmp_path))
    for name in ("MODEL_NAME", "LOCAL_MODEL_PATH", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_ENDPOINT_URL_DYNAMODB",
                 "MAKE_RUN_START_DELAYS"):
        monkeypatch.delenv(name, raising=False)

    def started() -> dict[str, dict]:
        assert run.main() == 0
        return RecordingManager.started

    return started


def test_the_app_is_told_the_name_of_the_model_make_run_serves(make_run):
    started = make_run()

    assert set(started) == set(PROCESS_NAMES)
    assert {started[name]["MODEL_NAME"] for name in APP_PROCESSES} == {BUNDLED_MODEL_NAME}


def test_the_operators_model_name_is_kept(make_run, monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "Llama 2 7B Chat (my GGUF)")

    started = make_run()

    assert {started[name]["MODEL_NAME"] for name in APP_PROCESSES} == {"Llama 2 7B Chat (my GGUF)"}


def test_with_an_endpoint_of_its_own_make_run_names_no_model(make_run, monkeypatch):
    """The endpoint given by the URL serves MODEL_ID's model: the app names it (chalicelib.settings)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{free_port()}")

    started = make_run()

    assert "model" not in started and all("MODEL_NAME" not in env for env in started.values())
