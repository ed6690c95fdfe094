"""`make bench`: what a chat turn costs the service itself, and what the Lambda package costs.

- Per-turn overhead with a zero-latency fake model, through the real route handler
  (Chalice's LocalGateway), with moto's in-process DynamoDB: p50 and p99 of the whole
  turn, and of the turn without the time spent inside DynamoDB calls.
- DynamoDB calls and bytes sent and received, and prompt tokens, at turns 1, 100, 1000.
- The `chalice package` zip: its size, and the cold start of the handler module
  (`python -B -c "import app"` from the unzipped package in a fresh interpreter).
- Time to the first delta and to `done` over the local WebSocket path, next to the synchronous
  path, with a fake model at a fixed pace (bench/stream_bench.py).

The machine is shared and noisy: read medians and ratios, not single numbers.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench import memory_bench, stream_bench
from bench.quiet import app_output_discarded
from deploy.package import ZIP_LIMIT_BYTES, build_package
from local.identity import signed_in

ROOT = Path(__file__).resolve().parent.parent
MEASURED_TURNS = (1, 100, 1000)

os.environ.update(
    AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true", SAGEMAKER_ENDPOINT_NAME="bench", CHAT_TABLE_NAME="bench-chat",
    # One user asks every measured turn within a minute or two: no rate limit in the way.
    TURNS_PER_MINUTE=str(MEASURED_TURNS[-1]),
)
for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
    os.environ.pop(variable, None)


class DynamoDBMeter:
    """Counts calls, request and response bytes, and time inside calls, of one client."""

    def __init__(self, client):
        self.reset()
        events = client.meta.events
        events.register("before-call.dynamodb", self._call_starts)
        events.register("before-send.dynamodb", self._sending)
        events.register("before-parse.dynamodb", self._received)
        events.register("after-call.dynamodb", self._call_ends)

    def reset(self):
        self.calls, self.sent, self.received, self.seconds = [], 0, 0, 0.0

    def _call_starts(self, model, **_):
        self.calls.append(model.name)
        self._started = time.perf_counter()

    def _sending(self, request, **_):
        self.sent += len(request.body or b"")

    def _received(self, response_dict, **_):
        self.received += len(response_dict["body"] or b"")

    def _call_ends(self, **_):
        self.seconds += time.perf_counter() - self._started


def measure_turns(turns: int) -> tuple[list[float], list[float], dict]:
    """`turns` turns through the real route handler; their times, and the DynamoDB traffic of some."""
    from chalicelib import clients, services
    from chalicelib.settings import get_settings
    from local.fake_model import FakeEndpoint

    settings = get_settings()
    endpoint = FakeEndpoint(settings.max_input_tokens, settings.max_total_tokens)
    make_model_client, make_dynamodb_client, meters = clients.sagemaker_runtime, clients.dynamodb, []

    def model_client(timeout):
        client = make_model_client(timeout)
        endpoint.attach(client)
        return client

    def metered_dynamodb():
        client = make_dynamodb_client()
        meters.append(DynamoDBMeter(client))
        return client

    clients.sagemaker_runtime, clients.dynamodb = model_client, metered_dynamodb
    try:
        return _measured(turns, settings, endpoint, meters)
    finally:  # the benchmarks after this one make their own clients
        clients.sagemaker_runtime, clients.dynamodb = make_model_client, make_dynamodb_client
        services.forget_all()


def _measured(turns: int, settings, endpoint, meters) -> tuple[list[float], list[float], dict]:
    from chalice.config import Config
    from chalice.local import LocalGateway
    from moto import mock_aws

    from chalicelib.table import create_table_request

    with mock_aws():
        import boto3

        boto3.client("dynamodb").create_table(**create_table_request(settings.chat_table_name))
        from app import app

        gateway = LocalGateway(app, Config.create())
        totals, without_dynamodb, at = [], [], {}
        with app_output_discarded():
            run_turns(gateway, turns, endpoint, meters, totals, without_dynamodb, at)
    return totals, without_dynamodb, at


def run_turns(gateway, turns: int, endpoint, meters, totals, without_dynamodb, at) -> None:
    """`turns` turns of one session through the gateway, each timed and metered into the lists."""
    for turn in range(1, turns + 1):
        query = f"Question number {turn}: what happened in the year {1000 + turn}, in two sentences?"
        body = json.dumps({"sessionid": "bench", "query": query}).encode()
        if meters:
            meters[0].reset()
        started = time.perf_counter()
        headers = {"content-type": "application/json", **signed_in()}
        response = gateway.handle_request("POST", "/chat", headers, body)
        elapsed = time.perf_counter() - started
        assert response["statusCode"] == 200, response["body"]
        meter = meters[0]
        totals.append(elapsed)
        without_dynamodb.append(elapsed - meter.seconds)
        if turn in MEASURED_TURNS:
            at[turn] = {
                "calls": list(meter.calls), "sent": meter.sent, "received": meter.received,
                "prompt_tokens": endpoint.prompt_tokens[-1],
                "history_turns": json.loads(response["body"])["history_turns"],
            }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def package_and_cold_start(runs: int = 7) -> dict:
    """The zip's size, and the first chat's imports with its bytecode and with none.

    Each run is a fresh `python -B -S` on the unpacked zip alone: -B only stops writing
    bytecode, so the shipped .pyc files are read; the second measure deletes them first.
    Wall time is what a request waits; CPU time moves less on a busy machine.
    """
    with tempfile.TemporaryDirectory() as out:
        archive = build_package(Path(out))
        unpacked = Path(out) / "unpacked"
        zipfile.ZipFile(archive).extractall(unpacked)

        def import_seconds(statement: str) -> tuple[float, float]:
            wall, cpu = [], []
            for _ in range(runs):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                subprocess.run([sys.executable, "-B", "-S", "-c", statement], cwd=unpacked, check=True,
                               env={**os.environ, "PYTHONPATH": str(unpacked)})
                wall.append(time.perf_counter() - started)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            return statistics.median(wall), statistics.median(cpu)

        def first_chat_import() -> tuple[float, float]:
            (wall, cpu), (base_wall, base_cpu) = import_seconds("import app, chalicelib.chat"), import_seconds("pass")
            return wall - base_wall, cpu - base_cpu

        with_bytecode = first_chat_import()
        for cached in unpacked.rglob("*.pyc"):
            cached.unlink()
        return {"zip_bytes": archive.stat().st_size, "with_bytecode": with_bytecode,
                "without_bytecode": first_chat_import()}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    totals, without_dynamodb, at = measure_turns(max(MEASURED_TURNS))
    ms = 1000
    print(f"Per-turn service time, zero-latency model, {len(totals)} turns of one session (moto DynamoDB in-process):")
    print(f"  whole turn        p50 {percentile(totals, .5) * ms:6.2f} ms   p99 {percentile(totals, .99) * ms:6.2f} ms")
    print(f"  outside DynamoDB  p50 {percentile(without_dynamodb, .5) * ms:6.2f} ms   "
          f"p99 {percentile(without_dynamodb, .99) * ms:6.2f} ms")
    print("DynamoDB and prompt per turn:")
    print(f"  turn  {'calls':<36}  bytes sent  bytes received  prompt tokens  history turns")
    for turn, row in at.items():
        print(f"  {turn:>4}  {'+'.join(row['calls']):<36}  {row['sent']:>10}  {row['received']:>14}  "
              f"{row['prompt_tokens']:>13}  {row['history_turns']:>13}")
    package = package_and_cold_start()
    size, limit = package["zip_bytes"] / 2**20, ZIP_LIMIT_BYTES / 2**20
    print("Lambda package (chalice package --stage dev, after make vendor):")
    print(f"  deployment.zip    {size:6.1f} MiB of {limit:.0f} MiB ({limit - size:.1f} MiB headroom)")
    print("  import app, chalicelib.chat (the first chat; median, python -B, fresh interpreter):")
    for label in ("with_bytecode", "without_bytecode"):
        wall, cpu = package[label]
        print(f"    {label.replace('_', ' '):<17} {wall * ms:6.0f} ms   ({cpu * ms:4.0f} ms CPU)")
    memory_bench.report()
    stream_bench.main()


if __name__ == "__main__":
    main()
