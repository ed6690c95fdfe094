"""The `api` process of `make run`: wait for the local servers, create the table, serve.

It replaces itself with `chalice local`, so honcho stops the server itself on Ctrl-C.
"""

import argparse
import os
import shutil
import sys
import time
import urllib.error
import urllib.request

import boto3

from local.table import ensure_table, local_table_name


def wait_until_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers, if only to refuse
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"api: {url} did not answer within {timeout:.0f} s")
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wait-for", action="append", default=[], metavar="URL")
    args = parser.parse_args()

    for url in args.wait_for:
        wait_until_up(url)
    table_name = local_table_name()
    created = ensure_table(boto3.client("dynamodb"), table_name)
    print(f"table {table_name} {'created' if created else 'found'} at {os.environ['AWS_ENDPOINT_URL_DYNAMODB']}")
    print(f"chat: curl --get http://127.0.0.1:{args.port}/chat --data-urlencode sessionid=session_1 "
          "--data-urlencode \"query='What is the capital of China?'\"", flush=True)
    chalice = shutil.which("chalice", path=os.path.dirname(sys.executable))
    os.execv(chalice, [chalice, "local", "--stage", "local", "--no-autoreload",
                       "--host", "127.0.0.1", "--port", str(args.port)])


if __name__ == "__main__":
    main()
