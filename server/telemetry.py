"""Per-request observation shared by HTTP and gRPC: one `RequestRecord` per request, filled on the way
(`observed` wraps every backend stream), then `Telemetry.finish` writes the metrics, the access log line
and the trace spans, the same way for both protocols."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from backends.base import Backend
from backends.embeddings import EmbeddingRequest, EmbeddingResult
from backends.errors import InvalidRequest
from backends.types import GenerateRequest, OutputDelta
from server.access_log import log_access
from server.keys import ApiKey
from server.metrics import Metrics
from server.tracing import Tracer


def mint_request_id(prefix: str = "req") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


MAX_REQUEST_ID_CHARS = 256
_QUOTED_ID_CHARS = 64  # of a bad request id in the error: gRPC's status travels in trailers, which clients cap


def check_request_id(request_id: str, param: str) -> None:
    """A client's request id goes back as a header (gRPC: metadata, which must be printable ASCII: any other
    character failed the call inside gRPC) and into every log line of its request: printable ASCII, at most
    MAX_REQUEST_ID_CHARS long (a 10 KB id overflowed the 8 KB of metadata gRPC clients accept)."""
    if len(request_id) <= MAX_REQUEST_ID_CHARS and all(" " <= char <= "~" for char in request_id):
        return
    shown = request_id if len(request_id) <= _QUOTED_ID_CHARS else request_id[:_QUOTED_ID_CHARS] + "..."
    raise InvalidRequest(f"{param}: must be printable ASCII and at most {MAX_REQUEST_ID_CHARS} characters, as it "
                         f"is sent back with the response (got {shown!r}, {len(request_id)} characters)", param=param)


@dataclass
class RequestRecord:
    protocol: str
    """"http" or "grpc"."""
    endpoint: str
    """The HTTP route or "grpc:<Method>"."""
    request_id: str | None = None
    """The client's X-Request-Id, or the id the endpoint minted; set before the response starts."""
    model: str = ""
    """Set once the router found the model (so clients cannot invent label values)."""
    api_key: ApiKey | None = None
    """The request's API key (None when the server takes requests without keys); logs show its name."""
    rate_ticket: Any = None
    """Its key's rate-limit ticket (server/rate_limits.py), settled with the real usage at the end."""
    status: str = ""
    started: float = field(default_factory=time.monotonic)
    first_output_at: float | None = None
    last_output_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    span: object = None
    """The route span, parent of the backend and stream spans."""


# The record of the request the current task serves (each HTTP request and gRPC call runs in a task of
# its own, which `Telemetry.begin` sets this in), for logs written far from it, such as an unhandled error's.
_current_record: ContextVar[RequestRecord | None] = ContextVar("turnout_current_record", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, None outside one. An HTTP request without X-Request-Id gets its
    id minted at its response's start; asked before, it is minted now, and the response carries it."""
    record = _current_record.get()
    if record is None:
        return None
    record.request_id = record.request_id or mint_request_id()
    return record.request_id


class Telemetry:
    """Metrics, access log and tracing of one server; shared by its HTTP app and gRPC server."""

    def __init__(self, metrics: Metrics | None = None, tracer: Tracer | None = None, access_log: bool = True):
        self.metrics = metrics or Metrics()
        self.tracer = tracer or Tracer()
        self.access_log = access_log

    def begin(self, protocol: str, endpoint: str, request_id: str | None = None) -> RequestRecord:
        record = RequestRecord(protocol, endpoint, request_id)
        record.span = self.tracer.start(endpoint, attributes={"turnout.protocol": protocol})
        _current_record.set(record)
        return record

    async def observed(self, record: RequestRecord, backend: Backend,
                       request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        """`backend.generate(request)`, timing its deltas and counting its tokens into `record`. Closing
        this iterator closes the backend's (which aborts the request)."""
        record.model = request.model
        metrics = self.metrics
        backend_span = self.tracer.start("backend", record.span, {"turnout.request_id": request.request_id})
        stream_span = None
        itl = metrics.itl.labels(record.model)  # labelled once: this loop runs per token
        last_by_choice: dict[int, float] = {}
        streamed_tokens, usage = 0, None
        error = None
        try:
            async with aclosing(backend.generate(request)) as stream:
                async for delta in stream:
                    now = time.monotonic()
                    if record.first_output_at is None:
                        record.first_output_at = now
                        metrics.ttft.labels(record.model).observe(now - record.started)
                    if stream_span is None:
                        self.tracer.end(backend_span)
                        stream_span = self.tracer.start("stream", record.span)
                    previous = last_by_choice.get(delta.index)
                    if previous is not None:
                        itl.observe(now - previous)
                    last_by_choice[delta.index] = record.last_output_at = now
                    streamed_tokens += len(delta.token_ids)
                    if delta.usage is not None:
                        usage = delta.usage
                    yield delta
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            # Usage counts what the engine computed (best_of's discarded choices too); an aborted stream
            # has none, so count what was streamed.
            record.prompt_tokens += usage.prompt_tokens if usage else 0
            record.completion_tokens += usage.completion_tokens if usage else streamed_tokens
            attributes = {"turnout.completion_tokens": streamed_tokens}
            if stream_span is None:
                self.tracer.end(backend_span, error=error)
            else:
                self.tracer.end(stream_span, attributes, error=error)

    async def embedded(self, record: RequestRecord, backend: Backend, request: EmbeddingRequest) -> EmbeddingResult:
        """`backend.embed(request)`, with its prompt tokens counted into `record` and a backend span. The
        answer is the request's only output: its time ends the request's e2e latency; it has no first token
        (no TTFT) and no completion tokens."""
        record.model = request.model
        span = self.tracer.start("backend", record.span, {"turnout.request_id": request.request_id})
        error = None
        try:
            result = await backend.embed(request)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.tracer.end(span, error=error)
        record.prompt_tokens += result.prompt_tokens
        record.last_output_at = time.monotonic()
        return result

    def finish(self, record: RequestRecord, status: str) -> None:
        """The request is over (response sent, or failed): count it, log it, end its span."""
        record.status = status
        now = time.monotonic()
        if record.rate_ticket is not None:
            record.rate_ticket.settle(record.prompt_tokens, record.completion_tokens)
        m, model = self.metrics, record.model
        m.requests.labels(model, record.endpoint, status).inc()
        if record.prompt_tokens:
            m.prompt_tokens.labels(model).inc(record.prompt_tokens)
        if record.completion_tokens:
            m.generation_tokens.labels(model).inc(record.completion_tokens)
        if record.last_output_at is not None:
            m.e2e.labels(model).observe(record.last_output_at - record.started)
        ttft = None if record.first_output_at is None else record.first_output_at - record.started
        if self.access_log:
            log_access({
                "request_id": record.request_id,
                "protocol": record.protocol,
                "endpoint": record.endpoint,
                "model": model,
                "key": record.api_key.name if record.api_key else "",
                "status": status,
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "latency_s": round(now - record.started, 6),
                "ttft_s": None if ttft is None else round(ttft, 6),
            })
        self.tracer.end(record.span, {"turnout.request_id": record.request_id or "", "turnout.model": model,
                                      "turnout.status": status})
