"""Structured JSON logs and CloudWatch metrics in embedded metric format (EMF).

Powertools for AWS Lambda (Python) does both: its JSON log formatter, with keys kept per
context (so per thread under `chalice local`), and its EMF serializer. It earns its place in the
Lambda package (measured with `make vendor` and bench/chat_bench.py's package_and_cold_start):
about 2 MiB of the zip (the headroom under 50 MiB was 12.9 MiB) and about 40 ms of import on the
cold path, beside the second LangChain takes; its own dependencies (jmespath, typing-extensions)
were shipped already.

Logs: every line of every logger (ours, Chalice's `app.log`, the libraries') is one JSON object,
on the function's log in Lambda, on stdout elsewhere, with the request id and, once known, the
session and turn ids (`bind`). A user's text is never logged: our loggers never take it, and
libraries (botocore and LangChain log request bodies at DEBUG) log from INFO up whatever LOG_LEVEL.

Metrics: namespace `Llama2Chatbot`, dimension `Stage` (the setting STAGE), `Errors` also by `Code`,
`Feedback` also by `Rating`
(the stack's dashboard and alarms read these names). EMF lines are printed to stdout, which
Lambda's log turns into metrics; each metric set is its own provider, so threads never share one.
"""

import functools
import logging
import os
import sys

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from chalicelib.errors import SettingsError
from chalicelib.settings import get_settings

NAMESPACE = "Llama2Chatbot"
# Chalice's app.log is the logger of this name; chalicelib's modules log under `chalicelib`.
APP_NAME = "llama2-chatbot"
OWN_LOGGERS = (APP_NAME, "chalicelib")

_formatter = LambdaPowertoolsFormatter(service=APP_NAME, utc=True)
logger = logging.getLogger(__name__)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a line is logged (a test may capture it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _):
        """sys.stdout is always the stream."""


@functools.cache
def configure_logging() -> None:
    """Once per container, before its first event: JSON on every line, LOG_LEVEL for our loggers.

    In Lambda the runtime's own handler (on the root logger) writes the function's log: it gets
    the JSON formatter. Elsewhere (`chalice local`, make run's gateway and poller) a stdout handler."""
    try:
        level = get_settings().log_level
    except SettingsError:
        level = "INFO"  # the request that needs the settings reports them (configuration_error)
    root = logging.getLogger()
    if not (os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and root.handlers):
        root.addHandler(_StdoutHandler())
    for handler in root.handlers:
        handler.setFormatter(_formatter)
    root.setLevel(max(logging.INFO, logging.getLevelName(level)))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)


def start(request_id: str | None) -> None:
    """A new event: its request id on every line, until the next `start` in this context."""
    _formatter.thread_safe_clear_keys()
    _formatter.thread_safe_append_keys(request_id=request_id)


def bind(sessionid: str | None = None, turn: str | None = None) -> None:
    """Name the session and turn on every following line of this event."""
    _formatter.thread_safe_append_keys(**{k: v for k, v in (("sessionid", sessionid), ("turn", turn)) if v})


def turn_metrics(usage: dict | None, first_token_ms: int, model_ms: int) -> None:
    """One answered turn: Turns, TimeToFirstToken, ModelTime, and the endpoint's token counts
    (LangChain's usage metadata) when it gave them."""
    metrics = [("Turns", MetricUnit.Count, 1), ("TimeToFirstToken", MetricUnit.Milliseconds, first_token_ms),
               ("ModelTime", MetricUnit.Milliseconds, model_ms)]
    if usage:
        metrics += [("PromptTokens", MetricUnit.Count, usage["input_tokens"]),
                    ("CompletionTokens", MetricUnit.Count, usage["output_tokens"])]
    _emit(metrics)


def feedback_metric(rating: str) -> None:
    """A user rated an answer ("up" or "down"); the comment, the user's text, is never a metric."""
    _emit([("Feedback", MetricUnit.Count, 1)], Rating=rating)


def error_metric(code: str) -> None:
    """A request or turn that ended in the error `code` (the API's `error`)."""
    _emit([("Errors", MetricUnit.Count, 1)], Code=code)


def worker_retries(receive_count: int) -> None:
    """WorkerRetries: how many times SQS had delivered this turn's message before (its
    ApproximateReceiveCount less one): 0 for a first delivery, so the sum counts redeliveries."""
    _emit([("WorkerRetries", MetricUnit.Count, receive_count - 1)])


def _emit(metrics: list, **dimensions: str) -> None:
    """One EMF line, with the log keys (request, session, turn ids) as its properties. A metric
    that cannot be made is logged, never the request's failure: the turn itself went as it went."""
    try:
        provider = AmazonCloudWatchEMFProvider(namespace=NAMESPACE)
        provider.add_dimension("Stage", get_settings().stage)
        for name, value in dimensions.items():
            provider.add_dimension(name, value)
        for key, value in _formatter.thread_safe_get_current_keys().items():
            provider.add_metadata(key, value)
        for name, unit, value in metrics:
            provider.add_metric(name=name, unit=unit, value=value)
        provider.flush_metrics(raise_on_empty_metrics=True)
    except Exception:
        logger.exception("metrics %s not emitted", [name for name, _, _ in metrics])
