"""Invoke a Chalice app's event handlers in-process, the way Lambda invokes them.

Lambda calls the object the deployed function's handler string names: the wrapper
Chalice's decorators return (kept in `app.handler_map`), with the event and a context.
So middleware, Chalice's event classes and, for WebSocket handlers, its
`configure_from_api_id` all run as they do in AWS.
"""

from dataclasses import dataclass

from chalice.app import SQSEventConfig
from chalice.local import LambdaContext


@dataclass(frozen=True)
class FunctionLimits:
    """A function's configured timeout and memory, for its context (Chalice's defaults)."""
    timeout_seconds: int = 60
    memory_mb: int = 128


def invoke(app, handler_name: str, event: dict, stage: str, limits: FunctionLimits = FunctionLimits()):
    """Run the handler registered as `handler_name` on `event`; its exceptions propagate,
    as a function error does to the service that invoked it."""
    context = LambdaContext(f"{app.app_name}-{stage}-{handler_name}", limits.memory_mb,
                            max_runtime_ms=limits.timeout_seconds * 1000)
    return app.handler_map[handler_name](event, context)


def websocket_handler_name(app, route_key: str) -> str | None:
    """The handler of `$connect`, `$default` or `$disconnect`, None if the app has none."""
    handler = app.websocket_handlers.get(route_key)
    return handler.name if handler else None


def sqs_event_sources(app) -> list[SQSEventConfig]:
    return [source for source in app.event_sources if isinstance(source, SQSEventConfig)]
