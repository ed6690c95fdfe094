"""`make table` against a real local DynamoDB (dynalite on 127.0.0.1)."""

import os
import subprocess
import sys

import boto3

from chalicelib.table import PARTITION_KEY, SORT_KEY
from local.net import free_port
from tests.servers import ROOT, dynalite, running


def make_table(endpoint: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local.table"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": endpoint, **env})


def test_make_table_creates_the_schema_the_code_uses_once(tmp_path):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with running(dynalite(port, tmp_path / "db"), endpoint):
        first = make_table(endpoint)
        second = make_table(endpoint)
        table = boto3.client("dynamodb", endpoint_url=endpoint).describe_table(
            TableName="llama2-chatbot-local-chat")["Table"]

    assert first.returncode == 0 and "created" in first.stdout
    assert second.returncode == 0 and "already exists" in second.stdout
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {PARTITION_KEY: "HASH", SORT_KEY: "RANGE"}


def test_make_table_refuses_without_a_local_endpoint():
    result = subprocess.run([sys.executable, "-m", "local.table"], cwd=ROOT, capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL_DYNAMODB"})

    assert result.returncode == 2 and "AWS_ENDPOINT_URL_DYNAMODB is not set" in result.stderr
