"""The benchmarks drive the app in process; its output is not the report."""

import contextlib
import io
import warnings


@contextlib.contextmanager
def app_output_discarded():
    """The app's JSON log and metric lines (in Lambda, the function's log) go nowhere, and so does
    the warning Chalice's local gateway gives at every request (it does not check Cognito tokens)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "CognitoUserPoolAuthorizer", UserWarning)
        yield
