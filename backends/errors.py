"""Errors a backend may raise. The front ends map each class to one HTTP status and OpenAI error body."""


class TurnoutError(Exception):
    """Base class. `param` names the request field at fault, when there is one."""

    status_code = 500
    error_type = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(TurnoutError):
    """The request cannot be served as given; nothing was started."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ModelNotFound(TurnoutError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class Overloaded(TurnoutError):
    """Recoverable: the server is at capacity; the client may retry later."""

    status_code = 503
    error_type = "server_overloaded"


class EngineDead(TurnoutError):
    """Fatal: the backend cannot serve any more requests until restarted."""

    status_code = 500
    error_type = "internal_error"
    code = "engine_dead"


class RequestFailed(TurnoutError):
    """This request failed inside the backend while everything else went on (a fault its own input
    triggered). It is the request's failure, not the replica's: it is not retried elsewhere, where it
    would fail the same way, and never counts toward ejecting the replica."""

    status_code = 500
    error_type = "internal_error"
    code = "request_failed"


class Unavailable(TurnoutError):
    """Recoverable: no replica of the model can take the request right now (all unhealthy or failing)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "model_unavailable"


class StreamInterrupted(TurnoutError):
    """The backend failed after output had started; the tokens already sent cannot be taken back."""

    status_code = 502
    error_type = "upstream_error"
    code = "stream_interrupted"


class UpstreamError(TurnoutError):
    """A remote backend could not be reached, timed out or failed; another replica may still serve."""

    status_code = 502
    error_type = "upstream_error"
