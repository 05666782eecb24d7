"""Prometheus metrics, served at GET /metrics. HTTP and gRPC record through the same calls (server/telemetry.py).

| turnout                                      | type      | vLLM                                         | TGI                               |
|----------------------------------------------|-----------|----------------------------------------------|-----------------------------------|
| turnout_requests_total{model,endpoint,status}| counter   | vllm:request_success_total{finished_reason}  | tgi_request_count, tgi_request_success, tgi_request_failure |
| turnout_prompt_tokens_total{model}           | counter   | vllm:prompt_tokens_total                     | tgi_request_input_length (histogram) |
| turnout_generation_tokens_total{model}       | counter   | vllm:generation_tokens_total                 | tgi_request_generated_tokens (histogram) |
| turnout_time_to_first_token_seconds{model}   | histogram | vllm:time_to_first_token_seconds             | (tgi_request_queue_duration + first tgi_batch_forward_duration) |
| turnout_inter_token_latency_seconds{model}   | histogram | vllm:inter_token_latency_seconds (formerly time_per_output_token_seconds) | tgi_request_mean_time_per_token_duration |
| turnout_e2e_request_latency_seconds{model}   | histogram | vllm:e2e_request_latency_seconds             | tgi_request_duration              |
| turnout_request_queue_time_seconds{model}    | histogram | vllm:request_queue_time_seconds              | tgi_request_queue_duration        |
| turnout_num_requests_running{model}          | gauge     | vllm:num_requests_running                    | tgi_batch_current_size            |
| turnout_num_requests_waiting{model}          | gauge     | vllm:num_requests_waiting                    | tgi_queue_size                    |
| turnout_kv_cache_usage_ratio{model}          | gauge     | vllm:kv_cache_usage_perc (0..1 despite the name) | (none)                         |
| turnout_token_budget_usage_ratio{model}      | gauge     | (none; vllm:iteration_tokens_total is close) | tgi_batch_current_max_tokens      |
| turnout_backend_healthy{model,replica}       | gauge     | (none: one engine per server)                | (none)                            |

Semantics:
- `endpoint` is the HTTP route (`/v1/completions`, ...; `unmatched` for unknown paths) or the gRPC method
  (`grpc:Generate`, ...). `status` is the HTTP status code (`200`, `400`, ...) or the gRPC code name (`OK`,
  `INVALID_ARGUMENT`, `CANCELLED`, ...). `model` is empty until the request named a model the router knows,
  so unknown names sent by clients cannot grow the label set.
- Latency histograms count requests that reached the engine and produced output: TTFT and end-to-end once
  per request, inter-token latency once per gap between two consecutive deltas of one choice (the HF
  engine sends one token per delta: `completion_tokens - 1` observations per single-choice request).
- Queue time is measured by the engine per sequence (a request with n > 1 has n) and gathered at scrape.
- Gauges are read from each backend's `stats()` and `health()` when /metrics is scraped.
- The counters live in this process: several uvicorn workers are not supported (the engine runs in the
  server process), so there is no multiprocess mode.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# vLLM's buckets, so dashboards built for it read ours the same way.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
               20.0, 40.0, 80.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                   120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """One registry per server (not prometheus_client's global one), so several servers in one process,
    as in tests, count separately."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("turnout_requests", "Requests by model, endpoint and status.",
                                ["model", "endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("turnout_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.generation_tokens = Counter("turnout_generation_tokens", "Tokens generated.", ["model"], registry=r)
        self.ttft = Histogram("turnout_time_to_first_token_seconds", "Time from request arrival to its first "
                              "output delta.", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("turnout_inter_token_latency_seconds", "Time between consecutive output deltas "
                             "of one choice.", ["model"], buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("turnout_e2e_request_latency_seconds", "Time from request arrival to its last "
                             "output delta.", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("turnout_request_queue_time_seconds", "Time a sequence waited in the "
                                    "engine before its first step.", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.running = Gauge("turnout_num_requests_running", "Sequences in the engine's running batch.",
                             ["model"], registry=r)
        self.waiting = Gauge("turnout_num_requests_waiting", "Sequences waiting for admission.",
                             ["model"], registry=r)
        self.kv_cache_usage = Gauge("turnout_kv_cache_usage_ratio", "Fraction of the KV cache in use (0..1).",
                                    ["model"], registry=r)
        self.token_budget_usage = Gauge("turnout_token_budget_usage_ratio", "Fraction of the per-step token "
                                        "budget the last engine step used (0..1).", ["model"], registry=r)
        self.healthy = Gauge("turnout_backend_healthy", "1 while the replica accepts requests, else 0.",
                             ["model", "replica"], registry=r)

    async def refresh(self, router) -> None:
        """Pull the engine-side numbers (stats and health) into the gauges; called at each scrape."""
        for model, pool in router.pools.items():
            stats = pool.stats()
            if stats is not None:
                self.running.labels(model).set(stats.num_running)
                self.waiting.labels(model).set(stats.num_waiting)
                self.kv_cache_usage.labels(model).set(stats.kv_cache_usage)
                self.token_budget_usage.labels(model).set(stats.token_budget_usage)
                for seconds in stats.queue_times:
                    self.queue_time.labels(model).observe(seconds)
        for model, replicas in router.replica_health().items():
            for replica, healthy in replicas.items():
                self.healthy.labels(model, replica).set(1.0 if healthy else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
