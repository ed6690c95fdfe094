"""Puts the project root on sys.path (the stack imports `chalicelib` and `infrastructure` as
packages) and synthesizes the default stage's stack once for all the template tests."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aws_cdk.assertions import Template  # noqa: E402
from templates import build  # noqa: E402

from infrastructure.chatbot_stack import ChatbotConfig  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the CDK CLI end to end (about 20 s); -m \"not slow\" skips it")


@pytest.fixture(scope="session")
def stack():
    return build(ChatbotConfig())


@pytest.fixture(scope="session")
def template(stack):
    return Template.from_stack(stack)
