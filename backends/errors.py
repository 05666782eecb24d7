"""Errors a backend may raise: the classes and what each means. What each looks like on the wire (HTTP
status, OpenAI type and code, TGI status and type, gRPC code) is the front ends' business: one table in
server/errors.py, which has a row for every class here."""


class TurnoutError(Exception):
    """Base class: an error nobody planned for. `param` names the request field at fault, when there is
    one; `code` overrides the class's usual OpenAI error code (an upstream's own, say); `retry_after`, in
    seconds, tells a client of a retryable error when trying again makes sense."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after


class InvalidRequest(TurnoutError):
    """The request cannot be served as given; nothing was started."""


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus the completion asked for) does not fit the model's context."""


class ModelNotFound(TurnoutError):
    """No model, alias or adapter has the requested name."""


class Overloaded(TurnoutError):
    """Recoverable: the server (or an upstream) is at capacity; the client may retry later."""


class Unavailable(TurnoutError):
    """Recoverable: no replica of the model can take the request right now (all unhealthy or failing)."""


class EngineDead(TurnoutError):
    """Fatal: the backend cannot serve any more requests until restarted."""


class RequestFailed(TurnoutError):
    """This request failed inside the backend while everything else went on (a fault its own input
    triggered). It is the request's failure, not the replica's: it is not retried elsewhere, where it
    would fail the same way, and never counts toward ejecting the replica."""


class UpstreamError(TurnoutError):
    """A remote backend could not be reached, timed out or failed; another replica may still serve."""


class StreamInterrupted(TurnoutError):
    """The backend failed after output had started; the tokens already sent cannot be taken back."""
