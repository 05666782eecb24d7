"""Gateway-side observation with a fake backend (no engine): spans route -> backend -> stream, metrics from
one record, and a clear error when tracing is asked for without OpenTelemetry."""

import sys

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from backends.types import FinishReason, GenerateRequest, ModelInfo, OutputDelta, SamplingParams, Usage
from server.telemetry import Telemetry
from server.tracing import Tracer, TracingUnavailable


class ThreeTokens:
    """A fake backend: three one-token deltas, the last with finish reason and usage."""

    info = ModelInfo("fake", 64)

    async def generate(self, request):
        for i in range(3):
            last = i == 2
            yield OutputDelta(token_ids=[i], text=str(i), finish_reason=FinishReason.LENGTH if last else None,
                              usage=Usage(4, 3) if last else None)


def request() -> GenerateRequest:
    return GenerateRequest("r1", "fake", SamplingParams(max_tokens=3))


async def test_spans_nest_route_backend_stream_and_metrics_come_from_the_record():
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(tracer=Tracer.create(span_processor=SimpleSpanProcessor(exporter)), access_log=False)
    record = telemetry.begin("grpc", "grpc:Generate", "r1")
    texts = [d.text async for d in telemetry.observed(record, ThreeTokens(), request())]
    telemetry.finish(record, "OK")
    assert texts == ["0", "1", "2"]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"grpc:Generate", "backend", "stream"}
    route = spans["grpc:Generate"]
    assert spans["backend"].parent.span_id == route.context.span_id
    assert spans["stream"].parent.span_id == route.context.span_id
    assert spans["backend"].end_time <= spans["stream"].start_time
    assert route.attributes["turnout.status"] == "OK" and route.attributes["turnout.request_id"] == "r1"
    sample = telemetry.metrics.registry.get_sample_value
    assert sample("turnout_requests_total", {"model": "fake", "endpoint": "grpc:Generate", "status": "OK"}) == 1
    assert sample("turnout_prompt_tokens_total", {"model": "fake"}) == 4
    assert sample("turnout_generation_tokens_total", {"model": "fake"}) == 3
    assert sample("turnout_inter_token_latency_seconds_count", {"model": "fake"}) == 2
    assert sample("turnout_e2e_request_latency_seconds_count", {"model": "fake"}) == 1
    assert (record.prompt_tokens, record.completion_tokens) == (4, 3)
    assert 0 <= record.first_output_at - record.started <= record.last_output_at - record.started


async def test_an_abandoned_stream_counts_the_tokens_it_streamed():
    telemetry = Telemetry(access_log=False)
    record = telemetry.begin("http", "/v1/completions")
    stream = telemetry.observed(record, ThreeTokens(), request())
    await anext(stream)
    await stream.aclose()
    assert (record.prompt_tokens, record.completion_tokens) == (0, 1)


def test_tracing_without_opentelemetry_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(TracingUnavailable, match=r"pip install 'turnout\[otel\]'"):
        Tracer.create("console")


def test_disabled_tracer_is_a_no_op():
    tracer = Tracer()
    assert not tracer.enabled and tracer.start("x") is None
    tracer.end(None)
