"""`make table` against a real local DynamoDB (dynalite on 127.0.0.1)."""

import os
import subprocess
import sys

import boto3

from chalicelib.table import PARTITION_KEY, SESSIONS_INDEX, SORT_KEY, create_table_request
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
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == [SESSIONS_INDEX]


def test_make_table_recreates_a_local_table_made_before_sign_in(tmp_path):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with running(dynalite(port, tmp_path / "db"), endpoint):
        client = boto3.client("dynamodb", endpoint_url=endpoint)
        earlier = create_table_request("llama2-chatbot-local-chat")
        del earlier["GlobalSecondaryIndexes"]
        earlier["AttributeDefinitions"] = [d for d in earlier["AttributeDefinitions"]
                                           if d["AttributeName"] in (PARTITION_KEY, SORT_KEY)]
        client.create_table(**earlier)
        client.get_waiter("table_exists").wait(TableName="llama2-chatbot-local-chat", WaiterConfig={"Delay": 0.2})

        result = make_table(endpoint)
        (index,) = client.describe_table(TableName="llama2-chatbot-local-chat")["Table"]["GlobalSecondaryIndexes"]

    assert result.returncode == 0 and "predates sign-in" in result.stdout and "created" in result.stdout, result.stderr
    assert index["IndexName"] == SESSIONS_INDEX and index["IndexStatus"] == "ACTIVE"


def test_make_table_refuses_without_a_local_endpoint():
    result = subprocess.run([sys.executable, "-m", "local.table"], cwd=ROOT, capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL_DYNAMODB"})

    assert result.returncode == 2 and "AWS_ENDPOINT_URL_DYNAMODB is not set" in result.stderr
