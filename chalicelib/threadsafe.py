"""A Chalice app whose `current_request` belongs to the thread serving it.

Chalice keeps the request being served, and its Lambda context, in plain attributes
of the app. Lambda
serves one request at a time per container, but `chalice local` (and
`chalice.test.Client` used from several threads) serve requests concurrently on
threads, where one request's view could read another's parameters (or deadline).
Chalice has no option for this, hence this small subclass.
"""

import threading

from chalice import Chalice


def _per_thread(name: str) -> property:
    def get(app):
        return getattr(app._per_thread, name, None)

    def set_(app, value):
        setattr(app._per_thread, name, value)

    return property(get, set_)


class ThreadSafeChalice(Chalice):
    current_request = _per_thread("current_request")
    lambda_context = _per_thread("lambda_context")

    def __init__(self, *args, **kwargs):
        self._per_thread = threading.local()  # before Chalice's __init__, which sets both
        super().__init__(*args, **kwargs)
