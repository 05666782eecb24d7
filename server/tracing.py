"""Optional OpenTelemetry tracing: one span per request (route), a child while the backend prepares and
prefills (backend: until the first output), and a child for the token stream (stream).

Off unless `turnout serve --otel-traces console|otlp` turns it on; then the opentelemetry packages must
be installed (`pip install 'turnout[otel]'`, plus `opentelemetry-exporter-otlp` for otlp), and their
absence is a clear error at start, not at the first request. While off, every call is a no-op.
"""

from __future__ import annotations


class TracingUnavailable(RuntimeError):
    pass


class Tracer:
    """Starts and ends spans; `Tracer()` is the disabled one."""

    def __init__(self, otel_tracer=None):
        self._tracer = otel_tracer

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @classmethod
    def create(cls, exporter: str | None = None, span_processor=None) -> Tracer:
        """A tracer exporting to the console or OTLP, or through a ready span processor (tests)."""
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        except ImportError:
            raise TracingUnavailable("tracing needs the OpenTelemetry SDK: pip install 'turnout[otel]'") from None
        if span_processor is None:
            if exporter == "console":
                span_processor = BatchSpanProcessor(ConsoleSpanExporter())
            elif exporter == "otlp":
                try:
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
                except ImportError:
                    raise TracingUnavailable(
                        "--otel-traces otlp needs the OTLP exporter: pip install opentelemetry-exporter-otlp "
                        "(it reads OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4317)"
                    ) from None
                span_processor = BatchSpanProcessor(OTLPSpanExporter())
            else:
                raise ValueError(f"exporter must be 'console' or 'otlp', got {exporter!r}")
        # A provider of our own rather than the process-global one, which can be set only once.
        provider = TracerProvider(resource=Resource.create({"service.name": "turnout"}))
        provider.add_span_processor(span_processor)
        return cls(provider.get_tracer("turnout"))

    def start(self, name: str, parent=None, attributes: dict | None = None):
        """A started span, child of `parent` when given; None while tracing is off."""
        if self._tracer is None:
            return None
        from opentelemetry import trace

        context = trace.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_span(name, context=context, attributes=attributes)

    @staticmethod
    def end(span, attributes: dict | None = None, error: str | None = None) -> None:
        if span is None:
            return
        if attributes:
            span.set_attributes(attributes)
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
