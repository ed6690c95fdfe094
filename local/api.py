"""The `api` process of `make run`: wait for the local servers, create the table and the
turns topic and queues, serve.

It replaces itself with `chalice local`, so honcho stops the server itself on Ctrl-C.
"""

import argparse
import os
import shutil
import sys

import boto3

from local.messaging import create_turns_queue
from local.net import wait_until_up
from local.settings import function_limits, stage_environment
from local.table import ensure_table, local_table_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wait-for", action="append", default=[], metavar="URL")
    args = parser.parse_args()

    for url in args.wait_for:
        try:
            wait_until_up(url, timeout=120)
        except TimeoutError as error:
            raise SystemExit(f"api: {error}") from None
    table_name = local_table_name()
    created = ensure_table(boto3.client("dynamodb"), table_name)
    print(f"table {table_name} {'created' if created else 'found'} at {os.environ['AWS_ENDPOINT_URL_DYNAMODB']}")
    settings = stage_environment()
    # Redelivery after a failure waits the visibility timeout: the function's timeout, the least Lambda accepts.
    turns = create_turns_queue(boto3.client("sns"), boto3.client("sqs"), settings["TURNS_TOPIC_ARN"],
                               settings["TURNS_QUEUE_NAME"], visibility_timeout=function_limits().timeout_seconds)
    print(f"topic {turns.topic_arn} -> queue {turns.queue_url} (dead letters: {turns.dead_letter_queue_url})")
    print(f"WebSocket API: {os.environ['WEBSOCKET_URL']}")
    print(f"chat page: http://127.0.0.1:{args.port}/")
    print(f"chat: curl --get http://127.0.0.1:{args.port}/chat --data-urlencode sessionid=session_1 "
          "--data-urlencode \"query='What is the capital of China?'\"", flush=True)
    chalice = shutil.which("chalice", path=os.path.dirname(sys.executable))
    os.execv(chalice, [chalice, "local", "--stage", "local", "--no-autoreload",
                       "--host", "127.0.0.1", "--port", str(args.port)])


if __name__ == "__main__":
    main()
