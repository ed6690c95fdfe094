"""Each thread serving a request sees its own current_request."""

import threading

from chalicelib.threadsafe import ThreadSafeChalice


def test_current_request_belongs_to_the_thread_that_set_it():
    app = ThreadSafeChalice(app_name="t")
    first_set, second_set = threading.Event(), threading.Event()
    seen = {}

    def first():
        app.current_request = "request 1"
        first_set.set()
        second_set.wait(5)  # the other thread sets its request meanwhile
        seen["first"] = app.current_request

    def second():
        first_set.wait(5)
        app.current_request = "request 2"
        seen["second"] = app.current_request
        second_set.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == {"first": "request 1", "second": "request 2"}
    assert app.current_request is None  # nothing set on this thread
