"""The `api` process of `make run`: wait for the local servers, create the table, serve.

It replaces itself with `chalice local`, so honcho stops the server itself on Ctrl-C.
"""

import argparse
import os
import shutil
import sys

import boto3

from local.net import wait_until_up
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
    print(f"chat page: http://127.0.0.1:{args.port}/")
    print(f"chat: curl --get http://127.0.0.1:{args.port}/chat --data-urlencode sessionid=session_1 "
          "--data-urlencode \"query='What is the capital of China?'\"", flush=True)
    chalice = shutil.which("chalice", path=os.path.dirname(sys.executable))
    os.execv(chalice, [chalice, "local", "--stage", "local", "--no-autoreload",
                       "--host", "127.0.0.1", "--port", str(args.port)])


if __name__ == "__main__":
    main()
