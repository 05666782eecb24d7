"""Do big `response_format` schemas hold up everyone else? One command, a few numbers.

Starts `python -m server serve` on the bundled model (from the current directory's code), then, each round,
sends `--big` distinct schemas of `--fields` optional string properties at once (each one takes xgrammar
seconds to compile), waits `--delay`, and times a small `json_object` chat request and a plain completion,
sent together, while those compile. Each round waits for every big request to end (a grammar or a 400) before
the next, so one round's compiles do not spill into the next one's numbers. Also timed once on the idle
server: the same two small requests. Prints medians over the rounds.

    python -m bench.grammar_starvation                      # 6 big schemas x 600 fields, 3 rounds
    python -m bench.grammar_starvation --big 4 --fields 300 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import httpx

from bench.server_process import ChildServer, free_port

MODEL = "turnout-tiny"
MESSAGES = [{"role": "user", "content": "JSON please"}]


def big_schema(fields: int, tag: str) -> dict:
    """Optional properties make xgrammar's work grow ~quadratically (600: ~20 KB of schema)."""
    return {"type": "object", "properties": {f"{tag}_{i}": {"type": "string"} for i in range(fields)}}


async def timed(http: httpx.AsyncClient, path: str, body: dict) -> tuple[float, int]:
    started = time.perf_counter()
    response = await http.post(path, json=body)
    return time.perf_counter() - started, response.status_code


def json_object_body(max_tokens: int) -> dict:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens, "response_format": {"type": "json_object"}}


def plain_body(max_tokens: int) -> dict:
    return {"model": MODEL, "prompt": "Lists", "max_tokens": max_tokens, "ignore_eos": True}


async def one_round(http: httpx.AsyncClient, args, round_index: int) -> dict:
    big = [asyncio.ensure_future(timed(http, "/chat/completions", {
        "model": MODEL, "messages": MESSAGES, "max_tokens": 1,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "big", "schema": big_schema(args.fields, f"r{round_index}b{i}")}}}))
        for i in range(args.big)]
    await asyncio.sleep(args.delay)
    (json_object_s, json_object_status), (plain_s, plain_status) = await asyncio.gather(
        timed(http, "/chat/completions", json_object_body(args.max_tokens)),
        timed(http, "/completions", plain_body(args.max_tokens)))
    big_results = await asyncio.gather(*big)
    return {"json_object_s": json_object_s, "json_object_status": json_object_status,
            "plain_s": plain_s, "plain_status": plain_status,
            "big_s": statistics.median(s for s, _ in big_results),
            "big_statuses": sorted(status for _, status in big_results)}


async def run(args) -> None:
    port = free_port()
    command = [sys.executable, "-m", "server", "serve", "--port", str(port), "--num-threads", str(args.num_threads),
               "--log-level", "warning"]
    with ChildServer("grammar-starvation", command, f"http://127.0.0.1:{port}/ready") as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=args.request_timeout) as http:
            # Warm up: the first grammar use (which starts the compiler processes here) and a small schema (which
            # waits for one), then a pause for the rest to settle, so the idle numbers are idle.
            await timed(http, "/chat/completions", json_object_body(args.max_tokens))
            await timed(http, "/chat/completions", {**json_object_body(1), "response_format": {
                "type": "json_schema", "json_schema": {"name": "warm", "schema": big_schema(3, "warm")}}})
            await timed(http, "/completions", plain_body(args.max_tokens))
            await asyncio.sleep(3)
            idle_json_object = statistics.median([(await timed(http, "/chat/completions",
                                                               json_object_body(args.max_tokens)))[0]
                                                  for _ in range(3)])
            idle_plain = statistics.median([(await timed(http, "/completions", plain_body(args.max_tokens)))[0]
                                            for _ in range(3)])
            rounds = []
            for i in range(args.rounds):
                rounds.append(await one_round(http, args, i))
                r = rounds[-1]
                print(f"round {i}: json_object {r['json_object_s']:.2f} s ({r['json_object_status']}), plain "
                      f"{r['plain_s']:.2f} s ({r['plain_status']}), big median {r['big_s']:.2f} s "
                      f"{r['big_statuses']}", flush=True)
        print(f"server RSS at the end: {server.rss_mb()} MiB (with its children)")
    print(f"idle: json_object {idle_json_object:.3f} s, plain completion {idle_plain:.3f} s "
          f"(max_tokens={args.max_tokens})")
    print(f"with {args.big} big schemas x {args.fields} fields compiling, medians of {args.rounds} rounds:")
    print(f"  json_object request: {statistics.median(r['json_object_s'] for r in rounds):.3f} s")
    print(f"  plain completion:    {statistics.median(r['plain_s'] for r in rounds):.3f} s")
    print(f"  big requests:        {statistics.median(r['big_s'] for r in rounds):.3f} s to end, statuses "
          f"{sorted({s for r in rounds for s in r['big_statuses']})}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--big", type=int, default=6, help="big schemas compiling at once")
    p.add_argument("--fields", type=int, default=600, help="optional properties per big schema")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--delay", type=float, default=0.5, help="seconds between the big requests and the small ones")
    p.add_argument("--max-tokens", type=int, default=16, help="of the json_object and plain requests")
    p.add_argument("--num-threads", type=int, default=2, help="the server's torch threads")
    p.add_argument("--request-timeout", type=float, default=600.0)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
