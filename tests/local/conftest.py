"""Real local servers shared by the tests of make run's parts."""

import pytest

from local.messaging import moto_server_command
from local.net import free_port
from tests.servers import running


@pytest.fixture(scope="session")
def moto_url():
    """moto's server (as make run's SNS and SQS) on 127.0.0.1; tests reset it or use names of their own."""
    port = free_port()
    with running(moto_server_command(port), f"http://127.0.0.1:{port}/moto-api/"):
        yield f"http://127.0.0.1:{port}"
