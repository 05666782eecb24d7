"""/metrics speaks the Gateway API Inference Extension's model-server protocol: the gauges its endpoint
picker reads, under vLLM's names, one series each for the whole server, under a known load.

The server routes two models: `local`, the bundled model in our engine (4 KV slots, one LoRA adapter),
and `remote`, an openai backend in front of an upstream that holds every completion until the test lets
it go. The engine reports its own numbers; for the remote model the gauges say what the router sees."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.hf.backend import HFBackend
from backends.hf.config import HFEngineConfig
from backends.openai import OpenAIUpstreamBackend, OpenAIUpstreamConfig
from server.router import Router
from tests.integration.test_disconnect import wait_for
from tests.integration.test_lora_serving import make_adapter
from tests.server_thread import ServerThread

SLOTS = 4  # the engine's max_num_seqs: the running batch
ADAPTER = "alpha"
EPP_GAUGES = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc")
LORA_INFO = "vllm:lora_requests_info"
LORA_LABELS = {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}


class HoldingUpstream(ThreadingHTTPServer):
    """An OpenAI-compatible upstream that lists one model and holds each completion request, unanswered,
    until `release` is set: requests the router has sent and not seen end."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HoldingHandler)
        self.release = threading.Event()
        self.held = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def hold(self) -> None:
        with self._lock:
            self.held += 1
        self.release.wait(timeout=60)
        with self._lock:
            self.held -= 1


class _HoldingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def do_GET(self) -> None:
        body = json.dumps({"data": [{"id": "upstream-model", "max_model_len": 1024}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.server.hold()
        self.send_response(503)
        self.send_header("content-length", "0")
        self.send_header("connection", "close")
        self.end_headers()


@pytest.fixture(scope="module")
def upstream():
    server = HoldingUpstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()


@pytest.fixture(scope="module")
def gateway(bundled_model_dir, upstream, tmp_path_factory):
    adapter_dir = make_adapter(bundled_model_dir, tmp_path_factory.mktemp("adapter") / ADAPTER, seed=1)
    local = HFBackend(HFEngineConfig(model=str(bundled_model_dir), served_model_name="local", max_num_seqs=SLOTS,
                                     num_threads=1, adapters=((ADAPTER, str(adapter_dir)),)))
    remote = OpenAIUpstreamBackend(OpenAIUpstreamConfig(url=upstream.url, model="upstream-model"))
    server = ServerThread({"local": local}, router=Router({"local": local, "remote": remote})).start()
    yield server
    server.stop()


def scrape(server) -> dict[str, list[tuple[dict, float]]]:
    """{name: [(labels, value), ...]} of the protocol's gauges."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (*EPP_GAUGES, LORA_INFO):
                found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def single(samples, name: str) -> float:
    """The value of a gauge the protocol reads as one series with no labels."""
    assert [labels for labels, _ in samples[name]] == [{}], (name, samples[name])
    return samples[name][0][1]


def check_lora_info(samples, scraped_after: float) -> None:
    """One series: every adapter loaded and ready, none waiting; its value the time of the last update."""
    [(labels, value)] = samples[LORA_INFO]
    assert labels == {"max_lora": "1", "running_lora_adapters": ADAPTER, "waiting_lora_adapters": ""}
    assert set(labels) == LORA_LABELS
    assert scraped_after - 1 <= value <= time.time() + 1


def test_an_idle_server_reports_no_load(gateway):
    before = time.time()
    samples = scrape(gateway)
    assert single(samples, "vllm:num_requests_waiting") == 0
    assert single(samples, "vllm:num_requests_running") == 0
    assert single(samples, "vllm:kv_cache_usage_perc") == 0
    check_lora_info(samples, before)


async def test_the_gauges_under_a_known_load(gateway, upstream):
    """7 streams to the local model (3 of them for its adapter): the engine runs 4, one waits in the engine
    (the router lets in a quarter more than the batch, rounded up to one) and 2 in the router's queue.
    3 requests to the remote model, held upstream: running, as far as the router can tell."""
    pool = gateway.router.pools["local"]
    engine = gateway.engine("local")
    release = asyncio.Event()

    async def stream(client: httpx.AsyncClient, model: str) -> None:
        body = {"model": model, "prompt": "x", "max_tokens": 1000, "ignore_eos": True, "stream": True}
        async with client.stream("POST", gateway.base_url + "/completions", json=body):
            await release.wait()  # leaving the block closes the stream: the engine aborts it

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as client:
        models = ["local"] * 4 + [ADAPTER] * 3 + ["remote"] * 3
        tasks = [asyncio.create_task(stream(client, model)) for model in models]
        try:
            deadline = time.monotonic() + 30
            while not (engine.num_running == SLOTS and engine.num_waiting == 1 and pool.queue.waiting == 2
                       and upstream.held == 3):
                assert time.monotonic() < deadline, (engine.num_running, engine.num_waiting, pool.queue.waiting,
                                                     upstream.held)
                await asyncio.sleep(0.01)
            before = time.time()
            blocks = engine.core.scheduler.blocks
            usage_before = blocks.usage  # the streams' blocks only grow while they run
            samples = await asyncio.to_thread(scrape, gateway)
            usage_after = blocks.usage
        finally:
            release.set()
            upstream.release.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert single(samples, "vllm:num_requests_running") == SLOTS + 3
    assert single(samples, "vllm:num_requests_waiting") == 1 + 2
    # The local engine's share of its KV-cache blocks; the remote model reports no KV cache and does not pull
    # the average down.
    assert 0 < usage_before <= single(samples, "vllm:kv_cache_usage_perc") <= usage_after
    check_lora_info(samples, before)
    wait_for(lambda: engine.num_running == 0 and upstream.held == 0)
    upstream.release.clear()
    after = scrape(gateway)
    assert single(after, "vllm:num_requests_running") == 0
    assert single(after, "vllm:num_requests_waiting") == 0
