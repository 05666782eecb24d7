"""What one huge prompt does to everyone else: the event-loop stall it causes and the memory it leaves.

Starts `turnout serve` on the bundled model (this checkout's code: `python -m server`), then sends
`--bodies` completion requests whose prompt is `--mb` megabytes of text, one after another, while a second
client asks GET /health every 20 ms. Prints, per body: its status and time, the slowest /health answer
while it was in flight; and the server's RSS before, after the bodies, and after a short rest.

    python -m bench.prompt_stall --mb 50 --bodies 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import httpx

from bench.server_process import ServerProcess
from server.cli import default_model_dir


def _poll_health(url: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(timeout=120) as http:
        while not stop.is_set():
            start = time.perf_counter()
            http.get(url)
            latencies.append(time.perf_counter() - start)
            time.sleep(0.02)


def run(mb: float, bodies: int) -> dict:
    prompt = ("All work and no play makes Jack a dull boy. " * (int(mb * 2**20) // 44 + 1))[: int(mb * 2**20)]
    body = json.dumps({"model": "turnout-tiny", "prompt": prompt, "max_tokens": 4}).encode()
    # The body limit (--max-body-bytes, 8 MiB by default) would refuse a big body before it is read: raised
    # here, the body is read and parsed, and what the server does with a prompt that size is measured.
    with ServerProcess(default_model_dir(), "turnout-tiny", num_threads=1, command=[sys.executable, "-m", "server"],
                       extra_args=["--max-body-bytes", str(len(body) + 1024)]) as server:
        health_url = server.base_url.removesuffix("/v1") + "/health"
        rss_start = server.rss_mb()
        rounds = []
        with httpx.Client(timeout=600) as http:
            for _ in range(bodies):
                latencies: list[float] = []
                stop = threading.Event()
                poller = threading.Thread(target=_poll_health, args=(health_url, stop, latencies))
                poller.start()
                time.sleep(0.2)
                start = time.perf_counter()
                response = http.post(server.base_url + "/completions", content=body,
                                     headers={"content-type": "application/json"})
                elapsed = time.perf_counter() - start
                stop.set()
                poller.join()
                rounds.append({"status": response.status_code, "seconds": round(elapsed, 3),
                               "worst_health_s": round(max(latencies), 3),
                               "median_health_s": round(statistics.median(latencies), 4),
                               "error": response.json().get("error", {}).get("message", "")[:120]
                               if response.status_code != 200 else ""})
        rss_after = server.rss_mb()
        time.sleep(3)
        rss_rest = server.rss_mb()
    return {"mb": mb, "rounds": rounds, "rss_mb": {"start": rss_start, "after": rss_after, "after_rest": rss_rest}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="prompt size in MiB")
    parser.add_argument("--bodies", type=int, default=5, help="how many such requests, one after another")
    args = parser.parse_args()
    print(json.dumps(run(args.mb, args.bodies), indent=2))


if __name__ == "__main__":
    main()
