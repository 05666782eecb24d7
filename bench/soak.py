"""Soak: many users for minutes, mixing every kind of client, against `turnout serve` on the bundled model.

Users, in proportion: streamed completions, non-streamed chats, clients that disconnect a few tokens into a
stream, and clients of a rate-limited key that send faster than it allows. Reports, per kind, the statuses
seen and the latency percentiles of the successful requests; every 5xx; whether every over-limit refusal
was a 429; the server's RSS after warm-up and at the end; and the engine's running and waiting counts
after the load stops.

    python -m bench.soak --users 100 --minutes 5          # what the hardening issue asks for
    python -m bench.soak --users 20 --minutes 0.5         # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.server_process import ServerProcess
from bench.stats import percentile
from server.cli import default_model_dir
from server.keys import hash_key

MODEL = "turnout-tiny"
KEYS = {"soak": "tk-soak-user", "limited": "tk-soak-limited"}
KINDS = [("stream", 0.4), ("chat", 0.3), ("disconnect", 0.15), ("over_limit", 0.15)]


def keys_file(directory: Path, limited_rpm: int) -> Path:
    path = directory / "keys.yaml"
    path.write_text(f"""keys:
  - name: soak
    hash: {hash_key(KEYS['soak'])}
  - name: limited
    hash: {hash_key(KEYS['limited'])}
    requests_per_minute: {limited_rpm}
""")
    return path


class Tally:
    def __init__(self):
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.server_errors: list[str] = []

    def add(self, kind: str, status: int, seconds: float, detail: str = "") -> None:
        self.statuses[kind][status] += 1
        if status == 200:
            self.latencies[kind].append(seconds)
        if status >= 500:
            self.server_errors.append(f"{kind} {status} {detail[:200]}")


async def one_request(http: httpx.AsyncClient, url: str, kind: str, tally: Tally) -> None:
    key = KEYS["limited" if kind == "over_limit" else "soak"]
    headers = {"authorization": f"Bearer {key}"}
    started = time.monotonic()
    if kind == "chat":
        r = await http.post(url + "/v1/chat/completions", headers=headers, json={
            "model": MODEL, "messages": [{"role": "user", "content": "What does the with statement do?"}],
            "max_tokens": 16})
        tally.add(kind, r.status_code, time.monotonic() - started, r.text)
        return
    body = {"model": MODEL, "prompt": "The for statement", "max_tokens": 32, "stream": True}
    async with http.stream("POST", url + "/v1/completions", headers=headers, json=body) as r:
        if r.status_code != 200:
            tally.add(kind, r.status_code, time.monotonic() - started, (await r.aread()).decode(errors="replace"))
            return
        events = 0
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            events += 1
            if line != "data: [DONE]" and "error" in json.loads(line[6:]):
                tally.add(kind, 599, time.monotonic() - started, line)  # an error event: counted as a failure
                return
            if kind == "disconnect" and events == 3:
                break  # leave: the server must free the work
    tally.add(kind, r.status_code, time.monotonic() - started)


async def user(url: str, stop_at: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*KINDS, strict=True)
    async with httpx.AsyncClient(timeout=120) as http:
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            try:
                await one_request(http, url, kind, tally)
            except httpx.HTTPError as exc:
                tally.add(kind, 598, 0.0, repr(exc))  # a transport failure: counted as a failure
            await asyncio.sleep(rng.uniform(0.0, 0.2))


async def engine_counts(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(url + "/metrics")).text
    counts = {}
    for line in text.splitlines():
        for name in ("turnout_num_requests_running", "turnout_num_requests_waiting"):
            if line.startswith(name + "{"):
                counts[name] = counts.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


async def soak(url: str, users: int, seconds: float, server: ServerProcess, warmup_s: float) -> dict:
    tally = Tally()
    stop_at = time.monotonic() + seconds
    tasks = [asyncio.create_task(user(url, stop_at, tally, seed)) for seed in range(users)]
    await asyncio.sleep(min(warmup_s, seconds))
    rss_warm = server.rss_mb()
    await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)
    counts = await engine_counts(url)
    over = tally.statuses["over_limit"]
    return {
        "users": users, "seconds": seconds,
        "statuses": {kind: dict(counter) for kind, counter in tally.statuses.items()},
        "latency_s": {kind: {"p50": round(percentile(v, 50), 3), "p99": round(percentile(v, 99), 3), "n": len(v)}
                      for kind, v in tally.latencies.items() if v},
        "server_errors": tally.server_errors[:20], "num_server_errors": len(tally.server_errors),
        "over_limit_refusals_all_429": set(over) <= {200, 429},
        "rss_mb": {"after_warmup": rss_warm, "end": server.rss_mb()},
        "engine_after": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the RSS baseline is read")
    parser.add_argument("--limited-rpm", type=int, default=60, help="requests per minute of the limited key")
    parser.add_argument("--out", default=None, help="also write the result here as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        keys = keys_file(Path(directory), args.limited_rpm)
        with ServerProcess(default_model_dir(), MODEL, num_threads=2, command=[sys.executable, "-m", "server"],
                           extra_args=["--api-keys", str(keys), "--no-access-log"]) as server:
            url = server.base_url.removesuffix("/v1")
            result = asyncio.run(soak(url, args.users, args.minutes * 60, server, args.warmup))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
