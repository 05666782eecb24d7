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
| turnout_prefix_cache_queries_total{model}    | counter   | vllm:prefix_cache_queries (prompt tokens looked up) | (none)                     |
| turnout_prefix_cache_hits_total{model}       | counter   | vllm:prefix_cache_hits (of those, found cached) | (none)                          |
| turnout_num_preemptions_total{model}         | counter   | vllm:num_preemptions                         | (none)                            |
| turnout_backend_healthy{model,replica}       | gauge     | (none: one engine per server)                | (none)                            |

The Gateway API Inference Extension's model-server protocol (its docs/proposals/003-model-server-protocol):
its endpoint picker (EPP) scrapes these from every pod of an InferencePool, under vLLM's names, to choose
the pod for each request. They describe the whole server, not one model, so they carry no model label:

| name                          | type  | what turnout reports                                                  |
|-------------------------------|-------|-----------------------------------------------------------------------|
| vllm:num_requests_waiting     | gauge | requests waiting: in the router's admission queues plus in the engines' own queues |
| vllm:num_requests_running     | gauge | requests running: in the engines' batches; for backends that report no engine numbers (openai, tgi, vllm, trtllm), the requests the router has sent them and not yet seen end |
| vllm:kv_cache_usage_perc      | gauge | KV-cache use, 0..1, averaged over the models whose engines report it; 0 when none does |
| vllm:prefix_cache_queries_total, vllm:prefix_cache_hits_total | counter | prompt tokens looked up in the engines' prefix caches, and found there (all models) |
| vllm:num_preemptions_total    | counter | sequences the engines preempted for want of KV-cache blocks (all models) |
| vllm:lora_requests_info{max_lora,running_lora_adapters,waiting_lora_adapters} | gauge | the last update's Unix time; labels below |

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
- One series per name, never per model: the EPP reads a single series of each (the latest), so a
  series per model would have it score a pod on one model picked at random. The per-model numbers are
  the `turnout_*` gauges above.
- LoRA: every adapter is loaded when the server starts and stays loaded, so `running_lora_adapters` (the
  protocol: adapters "loaded in GPU memory and ready to serve") lists all of them, comma-separated and
  sorted; `max_lora` is their number (no more can be loaded: an unknown adapter is a 404 here), and
  `waiting_lora_adapters` is empty (no adapter ever waits to be loaded). With no adapters both lists are
  empty, and the EPP skips the series.
- The counters live in this process: several uvicorn workers are not supported (the engine runs in the
  server process), so there is no multiprocess mode.
"""

from __future__ import annotations

import time

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
        self.prefix_cache_queries = Counter("turnout_prefix_cache_queries", "Prompt tokens looked up in the "
                                            "engine's prefix cache.", ["model"], registry=r)
        self.prefix_cache_hits = Counter("turnout_prefix_cache_hits", "Prompt tokens found in the engine's "
                                         "prefix cache.", ["model"], registry=r)
        self.preemptions = Counter("turnout_num_preemptions", "Sequences preempted for want of KV-cache "
                                   "blocks (to be recomputed).", ["model"], registry=r)
        self.epp_prefix_cache_queries = Counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the "
                                                "prefix caches (all models).", registry=r)
        self.epp_prefix_cache_hits = Counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix "
                                             "caches (all models).", registry=r)
        self.epp_preemptions = Counter("vllm:num_preemptions", "Sequences preempted (all models).", registry=r)
        # The engines' cumulative counts as last read, per model: counters advance by what is new.
        self._engine_counts: dict[str, tuple[int, int, int]] = {}
        self.healthy = Gauge("turnout_backend_healthy", "1 while the replica accepts requests, else 0.",
                             ["model", "replica"], registry=r)
        # The inference extension's names (table above): whole-server numbers, no model label.
        self.epp_waiting = Gauge("vllm:num_requests_waiting", "Requests waiting, in the router's queues and "
                                 "the engines' (all models).", registry=r)
        self.epp_running = Gauge("vllm:num_requests_running", "Requests running (all models).", registry=r)
        self.epp_kv_cache_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache use, 0..1, averaged over the "
                                        "engines that report it.", registry=r)
        self.epp_lora_info = Gauge("vllm:lora_requests_info", "LoRA adapters loaded (running) and waiting to "
                                   "load; the value is when this was last updated (Unix time).",
                                   ["max_lora", "running_lora_adapters", "waiting_lora_adapters"], registry=r)

    async def refresh(self, router) -> None:
        """Pull the engine-side numbers (stats and health) into the gauges; called at each scrape."""
        load = _ServerLoad()
        for model, pool in router.pools.items():
            stats = pool.stats()  # once a scrape: each call hands over the queue times measured since the last
            load.add(pool, stats)
            if stats is not None:
                self.running.labels(model).set(stats.num_running)
                self.waiting.labels(model).set(stats.num_waiting)
                self.kv_cache_usage.labels(model).set(stats.kv_cache_usage)
                self.token_budget_usage.labels(model).set(stats.token_budget_usage)
                for seconds in stats.queue_times:
                    self.queue_time.labels(model).observe(seconds)
                self._advance_engine_counters(model, stats)
        self.epp_waiting.set(load.waiting)
        self.epp_running.set(load.running)
        self.epp_kv_cache_usage.set(load.kv_cache_usage)
        self.epp_lora_info.clear()  # one series: the labels change only when the adapters do
        self.epp_lora_info.labels(str(len(load.adapters)), ",".join(sorted(load.adapters)), "").set(time.time())
        self.healthy.clear()  # replicas come and go (DNS): a replica that left must not linger as a series
        for model, replicas in router.replica_health().items():
            for replica, healthy in replicas.items():
                self.healthy.labels(model, replica).set(1.0 if healthy else 0.0)

    def _advance_engine_counters(self, model: str, stats) -> None:
        """Counters from the engines' cumulative counts: each advances by what is new since the last scrape
        (never back: a replica that left takes its counts with it)."""
        counts = (stats.prefix_cache_queries, stats.prefix_cache_hits, stats.num_preemptions)
        before = self._engine_counts.get(model, (0, 0, 0))
        self._engine_counts[model] = counts
        pairs = ((self.prefix_cache_queries, self.epp_prefix_cache_queries),
                 (self.prefix_cache_hits, self.epp_prefix_cache_hits), (self.preemptions, self.epp_preemptions))
        for (per_model, server_wide), now, then in zip(pairs, counts, before, strict=True):
            if now > then:
                per_model.labels(model).inc(now - then)
                server_wide.inc(now - then)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ServerLoad:
    """The whole server's load as the inference extension reads it, summed over the models' pools."""

    def __init__(self) -> None:
        self.waiting = self.running = 0
        self._kv_usages: list[float] = []
        self.adapters: set[str] = set()

    @property
    def kv_cache_usage(self) -> float:
        return sum(self._kv_usages) / len(self._kv_usages) if self._kv_usages else 0.0

    def add(self, pool, stats) -> None:
        """`stats`: the pool's `stats()`, None when its backends report no engine numbers (remote servers,
        and in-process engines that do not say): then what the router itself sees of the pool stands in,
        its requests in flight (one deadline each, from admission to their end) less those still queued."""
        queued = pool.queue.waiting  # held by the router before any backend sees them
        if stats is None:
            self.waiting += queued
            self.running += max(0, len(pool.deadlines) - queued)
        else:
            self.waiting += queued + stats.num_waiting
            self.running += stats.num_running
            self._kv_usages.append(stats.kv_cache_usage)
        self.adapters.update(adapter.name for adapter in pool.adapters)
