"""A Chalice app whose `current_request` belongs to the thread serving it.

Chalice keeps the request being served in a plain attribute of the app. Lambda
serves one request at a time per container, but `chalice local` (and
`chalice.test.Client` used from several threads) serve requests concurrently on
threads, where one request's view could read another's parameters. Chalice has
no option for this, hence this small subclass.
"""

import threading

from chalice import Chalice


class ThreadSafeChalice(Chalice):
    def __init__(self, *args, **kwargs):
        self._requests = threading.local()  # before Chalice's __init__, which sets current_request
        super().__init__(*args, **kwargs)

    @property
    def current_request(self):
        return getattr(self._requests, "request", None)

    @current_request.setter
    def current_request(self, request):
        self._requests.request = request
