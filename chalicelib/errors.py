"""The failures a request can end in, each with the HTTP status the API answers."""


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class InvalidRequest(ServiceError):
    status_code = 400
    code = "invalid_request"


class ModelFailed(ServiceError):
    """The endpoint answered with an error or with something that is not an answer."""

    status_code = 502
    code = "model_error"


class ModelBusy(ServiceError):
    """Throttled or not ready: the same request may succeed shortly."""

    status_code = 503
    code = "model_unavailable"


class ModelTimeout(ServiceError):
    status_code = 504
    code = "model_timeout"


class ModelInputTooLong(ModelFailed):
    """The endpoint counted more prompt tokens than its limits allow.

    `given` and `allowed` are the endpoint's own token counts when its message has them.
    """

    def __init__(self, message: str, given: int | None = None, allowed: int | None = None):
        super().__init__(message)
        self.given = given
        self.allowed = allowed
