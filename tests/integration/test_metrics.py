"""/metrics after a known burst of HTTP and gRPC traffic: counters and histogram counts equal what was sent."""

import time

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.grpc_client import generate_request, stub
from tests.integration.conftest import BUNDLED
from tests.integration.test_disconnect import wait_for

MAX_TOKENS = 5


def scrape(server) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of every sample /metrics exposes."""
    response = httpx.get(server.url + "/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def burst(server) -> dict:
    """Send a fixed mix; return the token counts the responses reported."""
    prompt_tokens = completion_tokens = 0
    body = {"model": BUNDLED, "prompt": "The for statement", "max_tokens": MAX_TOKENS, "ignore_eos": True}
    for _ in range(2):
        usage = httpx.post(server.base_url + "/completions", json=body, timeout=60).json()["usage"]
        prompt_tokens += usage["prompt_tokens"]
        completion_tokens += usage["completion_tokens"]
    chat = {"model": BUNDLED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=chat, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    usage = httpx.Response(200, content=lines[-1].removeprefix("data: ")).json()["usage"]
    prompt_tokens += usage["prompt_tokens"]
    completion_tokens += usage["completion_tokens"]
    generation = stub(server.grpc_target)
    request = generate_request(BUNDLED, "Classes", max_tokens=MAX_TOKENS, ignore_eos=True)
    for _ in range(2):
        finished = list(generation.Generate(request, timeout=60))[-1].finished
        prompt_tokens += finished.usage.prompt_tokens
        completion_tokens += finished.usage.completion_tokens
    usage = generation.Complete(request, timeout=60).usage
    prompt_tokens += usage.prompt_tokens
    completion_tokens += usage.completion_tokens
    # Failures: counted by status, no tokens, no latency observations.
    assert httpx.post(server.base_url + "/completions", json={**body, "temperature": 9}, timeout=30).status_code == 400
    with pytest.raises(grpc.RpcError):
        generation.Complete(generate_request(BUNDLED, "x", temperature=9.0), timeout=30)
    return {"prompt": prompt_tokens, "completion": completion_tokens, "generations": 6}


def test_metrics_count_exactly_the_traffic_sent(server):
    before = scrape(server)
    sent = burst(server)
    expected_requests = {
        ("/v1/completions", "200"): 2, ("/v1/completions", "400"): 1, ("/v1/chat/completions", "200"): 1,
        ("grpc:Generate", "OK"): 2, ("grpc:Complete", "OK"): 1, ("grpc:Complete", "INVALID_ARGUMENT"): 1,
    }

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # An HTTP response reaches the client a moment before the server's middleware records it: poll briefly.
    deadline = time.monotonic() + 10
    while True:
        after = scrape(server)
        if delta("turnout_e2e_request_latency_seconds_count", model=BUNDLED) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for (endpoint, status), count in expected_requests.items():
        model = BUNDLED if status in ("200", "OK") else ""
        got = delta("turnout_requests_total", model=model, endpoint=endpoint, status=status)
        assert got == count, (endpoint, status)
    assert delta("turnout_prompt_tokens_total", model=BUNDLED) == sent["prompt"]
    assert delta("turnout_generation_tokens_total", model=BUNDLED) == sent["completion"] == 6 * MAX_TOKENS
    n = sent["generations"]
    assert delta("turnout_time_to_first_token_seconds_count", model=BUNDLED) == n
    assert delta("turnout_e2e_request_latency_seconds_count", model=BUNDLED) == n
    assert delta("turnout_request_queue_time_seconds_count", model=BUNDLED) == n
    # One delta per token, so MAX_TOKENS - 1 gaps per request.
    assert delta("turnout_inter_token_latency_seconds_count", model=BUNDLED) == n * (MAX_TOKENS - 1)
    assert delta("turnout_e2e_request_latency_seconds_sum", model=BUNDLED) > 0


def test_engine_gauges_and_replica_health(server):
    samples = scrape(server)
    assert value(samples, "turnout_backend_healthy", model=BUNDLED, replica=f"{BUNDLED}/0") == 1.0
    assert value(samples, "turnout_num_requests_running", model=BUNDLED) == 0.0
    assert value(samples, "turnout_num_requests_waiting", model=BUNDLED) == 0.0
    assert value(samples, "turnout_kv_cache_usage_ratio", model=BUNDLED) == 0.0
    assert ("turnout_token_budget_usage_ratio", (("model", BUNDLED),)) in samples


def test_gauges_see_a_running_request(server):
    engine = server.engine()
    body = {"model": BUNDLED, "prompt": "x", "max_tokens": 300, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.base_url + "/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)
        blocks = engine.core.scheduler.blocks
        usage_before = blocks.usage  # the stream's blocks only grow while it runs
        samples = scrape(server)
        usage_after = blocks.usage
    assert value(samples, "turnout_num_requests_running", model=BUNDLED) == 1.0
    assert 0 < usage_before <= value(samples, "turnout_kv_cache_usage_ratio", model=BUNDLED) <= usage_after
    assert 0 < value(samples, "turnout_token_budget_usage_ratio", model=BUNDLED) <= 1
    wait_for(lambda: engine.num_running == 0)
