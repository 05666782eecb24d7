"""prefix_affinity vs least_outstanding: three turnout replicas on loopback behind a gateway, under a
shared-prefix workload.

    python -m bench.prefix_affinity --out bench/results/prefix_affinity.json
    python -m bench.prefix_affinity --smoke          # seconds: checks that it runs, measures nothing

Three `turnout serve` replicas of the bundled model listen on 127.0.0.2, .3 and .4, on one port, as the
pods behind a headless Service do (Linux routes all of 127.0.0.0/8 to lo). For each policy in turn a fresh
gateway (`turnout serve --config`, in its own process) routes the model to the three as listed replicas:
the policy is what is compared, and listed replicas are placed exactly as DNS ones (the gateway ranks them
by name either way; tests/integration/test_dns_prefix_affinity.py covers the DNS side).

The workload: --prefixes documents (consecutive, distinct cuts of --prefix-chars characters of the
stdlib's pydoc text) x --suffixes questions each, every prompt a document followed by one question, in one
shuffled order (--seed) that both policies get, sent --concurrency at a time (a closed loop), streamed,
greedy, ignore_eos, --output-tokens each, through turnout bench's request timer (bench/serving/request.py).
Its own small loop rather than turnout bench's shared-prefix workload: every request must carry its own
x-request-id, by which the replicas' access logs say who served it.

Reported per policy:
- the routing spread: for each prefix, how many of its requests each replica served, and how many distinct
  replicas saw it (mean and max over the prefixes). Who served what comes from each replica's access log,
  by the x-request-id the gateway passes on to its upstream.
- TTFT (client side, through the gateway) median and p99, and end-to-end latency.
- the bounded-load maximum: the most requests any one replica had in flight at once (from its access log's
  start and end times, to the millisecond), against prefix_affinity's bound for this run,
  ceil(load_factor x concurrency / 3): the gateway never has more than --concurrency requests in flight.

What it can show: the HF engine has no prefix cache, so prefix_affinity cannot win TTFT here through cache
hits; this measures the routing (affinity, and the bound holding under load) and what the placement costs
in TTFT when the cache buys nothing. Replicas with a prefix cache (vLLM with --enable-prefix-caching, behind
the same gateway) are where the comparison of hit rate and TTFT means something.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp
import yaml

from bench.machine import machine_info
from bench.prompts import corpus_text
from bench.server_process import ChildServer, free_port
from bench.serving.request import RequestResult, build_payload, send
from bench.stats import summarize_ms

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MODEL = "turnout-tiny"
POLICIES = ("prefix_affinity", "least_outstanding")
TURNOUT = [sys.executable, "-m", "server"]
"""This checkout's server, not an installed `turnout` (which may be another checkout's code)."""


def workload(prefixes: int, suffixes: int, prefix_chars: int, seed: int) -> list[tuple[int, int, str]]:
    """(prefix index, suffix index, prompt) for every pair, shuffled."""
    text = corpus_text()
    if prefixes * prefix_chars > len(text):
        raise ValueError(f"{prefixes} prefixes of {prefix_chars} characters need more than the corpus's {len(text)}")
    documents = [text[i * prefix_chars:(i + 1) * prefix_chars] for i in range(prefixes)]
    items = [(p, s, f"{documents[p]}\n\nQuestion {s}: what does the text above say about point {s}?\nAnswer:")
             for p in range(prefixes) for s in range(suffixes)]
    random.Random(seed).shuffle(items)
    return items


def free_port_on(hosts: tuple[str, ...]) -> int:
    import socket

    for _ in range(100):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


def replica(host: str, port: int, model_dir: str | None, threads: int) -> ChildServer:
    args = [*TURNOUT, "serve", "--served-model-name", MODEL, "--host", host, "--port", str(port),
            "--num-threads", str(threads), "--max-num-seqs", "64", "--log-format", "json", "--log-level", "info"]
    if model_dir:
        args += ["--model", model_dir]
    return ChildServer(f"replica-{host}", args, f"http://{host}:{port}/ready", own_session=True)


def gateway(config_path: Path, port: int) -> ChildServer:
    args = [*TURNOUT, "serve", "--config", str(config_path), "--port", str(port), "--log-level", "warning"]
    return ChildServer("gateway", args, f"http://127.0.0.1:{port}/ready", own_session=True)


def gateway_config(policy: str, replica_port: int, prefix_tokens: int, load_factor: float) -> dict:
    urls = [f"http://{host}:{replica_port}/v1" for host in HOSTS]
    return {
        "router": {"policy": policy, "affinity_prefix_tokens": prefix_tokens, "affinity_load_factor": load_factor},
        "models": [{"name": MODEL, "backend": "openai", "options": {"url": urls[0], "model": MODEL},
                    "replicas": [{"url": url} for url in urls]}],
    }


async def run_load(base_url: str, items: list[tuple[int, int, str]], tag: str, concurrency: int,
                   output_tokens: int) -> dict[str, tuple[int, RequestResult]]:
    """{request id: (prefix index, result)}; each request carries its id as x-request-id."""
    url = f"{base_url}/completions"
    pending = iter(items)
    results: dict[str, tuple[int, RequestResult]] = {}

    async def worker(session: aiohttp.ClientSession) -> None:
        for p, s, prompt in pending:  # one shared iterator: each item goes to exactly one worker
            rid = f"{tag}-p{p}-s{s}"
            body = build_payload("completions", MODEL, prompt, output_tokens, stream=True)
            results[rid] = (p, await send(session, url, "completions", body, {"x-request-id": rid}))

    connector = aiohttp.TCPConnector(limit=concurrency + 1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(worker(session) for _ in range(min(concurrency, len(items)))))
    return results


def served(log: Path, tag: str) -> list[dict]:
    """The access lines of requests whose id starts with `tag`, in one replica's JSON log."""
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and str(line.get("request_id", "")).startswith(f"{tag}-"):
            lines.append(line)
    return lines


def _end_time(ts: str) -> float:
    """The access line's `ts` (UTC, to the millisecond) as Unix seconds."""
    whole, millis = ts.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000


def most_in_flight(lines: list[dict]) -> int:
    """The most of these requests running at once: a sweep over their (start, end) intervals."""
    events = []
    for line in lines:
        end = _end_time(line["ts"])
        events += [(end - float(line["latency_s"]), 1), (end, -1)]
    peak = current = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        current += step
        peak = max(peak, current)
    return peak


def policy_report(policy: str, results: dict[str, tuple[int, RequestResult]], by_replica: dict[str, list[dict]],
                  concurrency: int, load_factor: float) -> dict:
    ok = [r for _, r in results.values() if r.ok]
    where = {line["request_id"]: host for host, lines in by_replica.items() for line in lines}
    spread: dict[int, Counter] = defaultdict(Counter)
    for rid, (p, _) in results.items():
        spread[p][where.get(rid, "unknown")] += 1
    distinct = [len([h for h in counts if h != "unknown"]) for counts in spread.values()]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    report = {
        "requests": len(results), "failed": len(results) - len(ok),
        "errors": sorted({r.error for _, r in results.values() if r.error})[:5],
        "ttft_ms": summarize_ms(ttfts), "e2e_ms": summarize_ms([r.latency for r in ok]),
        "requests_per_replica": {host: len(lines) for host, lines in by_replica.items()},
        "distinct_replicas_per_prefix": {"mean": round(sum(distinct) / len(distinct), 2), "max": max(distinct)},
        "spread": {f"prefix {p}": dict(sorted(spread[p].items())) for p in sorted(spread)},
        "most_in_flight_on_one_replica": max(most_in_flight(lines) for lines in by_replica.values()),
    }
    if policy == "prefix_affinity":
        report["load_bound"] = math.ceil(load_factor * concurrency / len(HOSTS))
    return report


def print_summary(reports: dict[str, dict]) -> None:
    print(f"{'policy':<18} {'ttft p50':>9} {'ttft p99':>9} {'e2e p50':>8} {'replicas/prefix':>16} {'peak (bound)':>13} "
          f"{'failed':>6}")
    for policy, r in reports.items():
        ttft = r["ttft_ms"] or {}
        e2e = r["e2e_ms"] or {}
        bound = f" ({r['load_bound']})" if "load_bound" in r else ""
        d = r["distinct_replicas_per_prefix"]
        print(f"{policy:<18} {ttft.get('p50', float('nan')):>9.1f} {ttft.get('p99', float('nan')):>9.1f} "
              f"{e2e.get('p50', float('nan')):>8.1f} {d['mean']:>10.2f} (max {d['max']}) "
              f"{str(r['most_in_flight_on_one_replica']) + bound:>13} {r['failed']:>6}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory for the replicas (default: the bundled one)")
    p.add_argument("--prefixes", type=int, default=8)
    p.add_argument("--suffixes", type=int, default=16)
    p.add_argument("--prefix-chars", type=int, default=1024,
                   help="each document's length; keep it above 4 x --prefix-tokens, or prompts differ in the key")
    p.add_argument("--prefix-tokens", type=int, default=128, help="router.affinity_prefix_tokens")
    p.add_argument("--load-factor", type=float, default=1.25, help="router.affinity_load_factor")
    p.add_argument("--concurrency", type=int, default=12)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--warmup", type=int, default=6, help="requests through each gateway before measuring")
    p.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a tiny run (seconds) that checks everything works")
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    if args.smoke:
        args.prefixes, args.suffixes, args.concurrency, args.output_tokens, args.warmup = 3, 2, 2, 2, 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    items = workload(args.prefixes, args.suffixes, args.prefix_chars, args.seed)
    port = free_port_on(HOSTS)
    replicas = [replica(host, port, args.model, args.threads) for host in HOSTS]
    reports: dict[str, dict] = {}
    try:
        for r in replicas:
            r.start()
        with tempfile.TemporaryDirectory(prefix="prefix-affinity-") as tmp:
            for policy in args.policies:
                config_path = Path(tmp) / f"{policy}.yaml"
                config_path.write_text(yaml.safe_dump(gateway_config(policy, port, args.prefix_tokens,
                                                                     args.load_factor)))
                gw_port = free_port()
                with gateway(config_path, gw_port) as gw:
                    base_url = f"http://127.0.0.1:{gw_port}/v1"
                    if args.warmup:
                        asyncio.run(run_load(base_url, items[:args.warmup], f"warmup-{policy}", args.concurrency,
                                             args.output_tokens))
                    results = asyncio.run(run_load(base_url, items, policy, args.concurrency, args.output_tokens))
                    if not results:
                        raise RuntimeError(f"no results through the gateway:\n{gw.log_tail()}")
                by_replica = {host: served(r.log_path, policy) for host, r in zip(HOSTS, replicas, strict=True)}
                reports[policy] = policy_report(policy, results, by_replica, args.concurrency, args.load_factor)
    finally:
        for r in replicas:
            r.stop()
    config = {k: v for k, v in vars(args).items() if k != "out"} | {"hosts": list(HOSTS), "replica_port": port}
    report = {"config": config, "machine": machine_info(args.threads), "policies": reports}
    print_summary(reports)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    failed = sum(r["failed"] for r in reports.values())
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
