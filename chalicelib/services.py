"""The container's long-lived objects, each built on first use and then reused.

Lambda keeps a container warm across requests, so clients and the model wrapper
are made once. These functions are also the seam tests use: call `cache_clear()`
on one, or `forget_all()`, after changing the environment.
"""

import functools
import threading

from chalicelib import clients
from chalicelib.settings import get_settings
from chalicelib.store import ChatStore

# `chalice local` answers on several threads, and boto3's default session must not
# create clients on two threads at once: the first build of each object is serialised.
_BUILD_LOCK = threading.RLock()
_BUILT = []


def _once_per_container(build):
    cached = functools.cache(build)
    _BUILT.append(cached)

    @functools.wraps(build)
    def get(*args):
        with _BUILD_LOCK:
            return cached(*args)

    get.cache_clear = cached.cache_clear
    return get


def forget_all() -> None:
    """Build every object again on its next use (a new container, as far as they can tell)."""
    for cached in _BUILT:
        cached.cache_clear()


@_once_per_container
def store() -> ChatStore:
    settings = get_settings()
    return ChatStore.open(clients.dynamodb(), settings.chat_table_name, settings.history_ttl_days)


@_once_per_container
def chat():
    """The chat service. Its modules import langchain_aws (about a second), so they are
    imported here, on the first chat request, not when the handler module loads."""
    from chalicelib.chat import ChatService

    return ChatService(get_settings(), store(), chat_model)


@_once_per_container
def chat_model(read_timeout: int):
    """The chat model whose calls wait `read_timeout` seconds: one per whole second a
    request's deadline leaves, so at most MODEL_TIMEOUT_SECONDS of them."""
    from chalicelib import llm

    settings = get_settings()
    return llm.chat_model(settings, clients.sagemaker_runtime(read_timeout))


@_once_per_container
def handover():
    from chalicelib.handover import TurnHandover

    settings = get_settings()
    return TurnHandover(clients.sns(), settings.turns_topic_arn, store(), settings, clients.sqs())


@_once_per_container
def token_verifier():
    from chalicelib.auth import token_verifier_for

    return token_verifier_for(get_settings())


@_once_per_container
def connections():
    from chalicelib.connections import Connections

    return Connections(clients.dynamodb(), get_settings().chat_table_name)
