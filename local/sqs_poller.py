"""A local stand-in for Lambda's SQS event source mapping: long-poll a queue, invoke the app.

    python -m local.sqs_poller [--wait-for NAME=URL ...]      (the queues at AWS_ENDPOINT_URL_SQS)

For each `@app.on_sqs_message` handler of the app, as many threads as its event source's
`maximum_concurrency` (one without it) each long-poll its queue and invoke the handler in this
process (local/lambda_runtime.py), as Lambda runs that many functions at once, with a batch of at
most `batch_size` messages, in the event Lambda gives: Records with messageId, receiptHandle, body,
attributes (ApproximateReceiveCount, ...), messageAttributes, md5OfBody, eventSource,
eventSourceARN and awsRegion. As Lambda does, it deletes the batch when the handler returns
and leaves it when the handler fails, so the queue delivers it again after its visibility
timeout and, after the redrive policy's maxReceiveCount, moves it to the dead-letter queue.
"""

import argparse
import base64
import itertools
import logging
import signal
import threading
import time

import botocore.session

from chalicelib import observability
from local.lambda_runtime import FunctionLimits, invoke, sqs_event_sources
from local.logs import plain_lines, quiet_stand_ins
from local.messaging import queue_arn
from local.readiness import Readiness
from local.readiness import add_arguments as add_wait_arguments
from local.settings import REGION, STAGE

log = logging.getLogger("sqs-poller")

SQS_MAX_BATCH = 10  # ReceiveMessage's own limit


def lambda_message_attributes(attributes: dict) -> dict:
    """SQS's MessageAttributes as Lambda spells them in an event."""
    return {name: {"stringValue": value.get("StringValue"),
                   "binaryValue": base64.b64encode(value["BinaryValue"]).decode() if "BinaryValue" in value else None,
                   "stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
            for name, value in attributes.items()}


def lambda_sqs_event(messages: list[dict], queue_arn: str, region: str) -> dict:
    return {"Records": [{
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": lambda_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    } for message in messages]}


class SqsPoller:
    def __init__(self, app, sqs, *, stage: str = STAGE, region: str = REGION, wait_seconds: int = 20,
                 limits=lambda handler_name: FunctionLimits()):
        self.app, self.sqs = app, sqs
        self.stage, self.region = stage, region
        self.wait_seconds = wait_seconds
        self._limits = limits

    def poll_once(self, source, queue_url: str, queue_arn: str) -> int:
        """One long poll and, if it brought messages, one invocation; how many messages it brought."""
        messages = self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=min(source.batch_size, SQS_MAX_BATCH),
            WaitTimeSeconds=self.wait_seconds, MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"]).get("Messages", [])
        if not messages:
            return 0
        started = time.monotonic()
        try:
            invoke(self.app, source.name, lambda_sqs_event(messages, queue_arn, self.region), self.stage,
                   self._limits(source.name))
        except Exception:
            log.exception("%s failed on %s after %.2f s; the queue will deliver it again after its visibility "
                          "timeout", source.name, [message["MessageId"] for message in messages],
                          time.monotonic() - started)
            return len(messages)
        self.sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(messages)])
        log.info("%s handled %d message(s) in %.2f s", source.name, len(messages), time.monotonic() - started)
        return len(messages)

    def queue_of(self, source, timeout: float) -> tuple[str, str]:
        """The URL and ARN of the handler's queue, once it exists (TimeoutError after `timeout` s)."""
        name = source.queue or source.queue_arn.rsplit(":", 1)[-1]
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            try:
                url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
                return url, queue_arn(self.sqs, url)
            except self.sqs.exceptions.QueueDoesNotExist:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"queue {name} does not exist after {timeout:.0f} s") from None
                if attempt == 0:
                    log.info("%s waits for its queue %s", source.name, name)
                time.sleep(0.2)

    def run(self, stop: threading.Event, queue_timeout: float = 120) -> list[threading.Thread]:
        """Start the polling threads of every SQS handler of the app, each handler's
        `maximum_concurrency` of them; they stop soon after `stop` is set."""
        threads = []
        for source in sqs_event_sources(self.app):
            queue_url, queue_arn = self.queue_of(source, queue_timeout)
            concurrency = source.maximum_concurrency or 1
            log.info("%s polls %s, %d at once", source.name, queue_url, concurrency)
            for number in range(concurrency):
                thread = threading.Thread(target=self._poll, args=(source, queue_url, queue_arn, stop),
                                          name=f"poll-{source.name}-{number}", daemon=True)
                thread.start()
                threads.append(thread)
        return threads

    def _poll(self, source, queue_url: str, queue_arn: str, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll_once(source, queue_url, queue_arn)
            except Exception:
                log.exception("polling %s failed; trying again in 1 s", queue_url)
                stop.wait(1)


def main() -> None:
    from local.settings import function_limits, load_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_wait_arguments(parser)
    args = parser.parse_args()
    readiness = Readiness("sqs-poller")
    app = load_app()
    # The app's JSON lines, as in Lambda; the poller's own are plain, as Lambda's platform lines are.
    observability.configure_logging()
    plain_lines(log)
    quiet_stand_ins()
    readiness.wait(args.wait_for)
    poller = SqsPoller(app, botocore.session.get_session().create_client("sqs"), limits=function_limits)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        threads = poller.run(stop, queue_timeout=readiness.remaining())
    except TimeoutError as error:
        raise SystemExit(f"sqs-poller: {error} (MAKE_RUN_WAIT_SECONDS={readiness.seconds:g} from its start)") from None
    if not threads:
        print("sqs-poller: the app has no on_sqs_message handler; nothing to poll", flush=True)
    stop.wait()


if __name__ == "__main__":
    main()
