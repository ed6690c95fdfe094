"""The failures a request can end in, each with the HTTP status the API answers."""


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"
    # Seconds after which the same request may succeed (the Retry-After header); None: don't retry as is.
    retry_after: int | None = None

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class InternalError(ServiceError):
    """A fault of ours that no other error names (a bug): the client learns only that it happened."""


class InvalidRequest(ServiceError):
    status_code = 400
    code = "invalid_request"


class Unauthorized(ServiceError):
    """No signed-in user: the request carries no valid token."""

    status_code = 401
    code = "unauthorized"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class TurnsUnavailable(ServiceError):
    """The topic that hands turns to the worker could not take one."""

    status_code = 503
    code = "turns_unavailable"
    retry_after = 5


class SignInUnavailable(ServiceError):
    """The user pool's signing keys could not be fetched: no token can be checked, good or bad."""

    status_code = 503
    code = "sign_in_unavailable"
    retry_after = 5


class SettingsError(ServiceError):
    """A required setting is missing or a value is invalid."""

    code = "configuration_error"


class HistoryUnavailable(ServiceError):
    """DynamoDB throttled, failed internally or could not be reached, even after botocore's retries."""

    status_code = 503
    code = "history_unavailable"
    retry_after = 5


class HistoryFailed(ServiceError):
    code = "history_error"


class ModelFailed(ServiceError):
    """The endpoint answered with an error or with something that is not an answer."""

    status_code = 502
    code = "model_error"


class ModelBusy(ServiceError):
    """Throttled or not ready: the same request may succeed shortly."""

    status_code = 503
    code = "model_unavailable"
    retry_after = 5


class ModelWaking(ServiceError):
    """The model is scaled to zero and starting (instance start and model download take minutes):
    the same request succeeds once it has a copy again."""

    status_code = 503
    code = "model_waking"

    def __init__(self, retry_after: int):
        minutes = max(1, round(retry_after / 60))
        super().__init__(f"the model is starting; try again in about {minutes} minute{'s' if minutes > 1 else ''}")
        self.retry_after = retry_after


class ModelTimeout(ServiceError):
    status_code = 504
    code = "model_timeout"


class ModelInputTooLong(ModelFailed):
    """The endpoint counted `given` prompt tokens where its limits allow `allowed`."""

    def __init__(self, message: str, given: int, allowed: int):
        super().__init__(message)
        self.given = given
        self.allowed = allowed
        # Refused in a stream after some of the answer was relayed: too late to ask again.
        self.after_text = False


class TurnInProgress(ServiceError):
    """Another request is still answering the same turn of the session."""

    status_code = 409
    code = "turn_in_progress"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class NotLastTurn(ServiceError):
    """A turn may replace only the conversation's last turn (regenerate, edit and send again)."""

    status_code = 409
    code = "not_last_turn"


class ExportTooLarge(ServiceError):
    """The conversation is too large to export in one answer (Lambda answers at most 6 MB)."""

    status_code = 413
    code = "export_too_large"


class RateLimited(ServiceError):
    """The user asked more turns this minute than TURNS_PER_MINUTE allows."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def error_body(error: ServiceError) -> dict:
    """The JSON of a failure, the one shape every API that reports one uses."""
    body = {"error": error.code, "message": str(error)}
    if error.field:
        body["field"] = error.field
    if error.retry_after is not None:  # also sent as Retry-After where HTTP carries it
        body["retry_after"] = error.retry_after
    return body
