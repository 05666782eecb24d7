"""Streaming throughput over gRPC (turnout.v1.Generation/Generate) versus SSE (/v1/completions, stream=true)
on one server process, same prompts, same engine.

    python -m bench.grpc_vs_sse                    # bundled model, 32 streams x 64 tokens, 3 runs each
    python -m bench.grpc_vs_sse --model DIR --runs 5 --out grpc_vs_sse.json

Each run sends `--concurrency` streams at once (64-token prompts as token ids, `--output-tokens` greedy tokens
each, ignore_eos), gRPC and SSE runs alternating so drift in machine load hits both alike. Throughput is
output tokens / wall time from the first send to the last stream's end; the report gives each protocol's
median run, every run's throughput, and the 1-minute load average before and after (2-core machine:
the load generator competes with the server, so check it is quiet), and the server's CPU time per output
token for each protocol (median run), which depends less on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import grpc
import httpx

from bench import prompts as prompt_source
from bench.serve_bench import report, run_load
from bench.server_process import ServerProcess, free_port
from bench.serving.request import RequestResult
from bench.stats import median_run
from server.grpc.gen import generate_pb2 as pb
from server.grpc.gen import generate_pb2_grpc as pb_grpc


async def grpc_load(target: str, model: str, prompts, concurrency: int, output_tokens: int) -> dict:
    """All `concurrency` streams at once over one channel (HTTP/2 multiplexes them)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationStub(channel)

        async def one(prompt) -> RequestResult:
            request = pb.GenerateRequest(model=model, token_ids=pb.TokenIds(ids=prompt.token_ids),
                                         sampling=pb.SamplingParameters(max_tokens=output_tokens, temperature=0.0,
                                                                        ignore_eos=True))
            result = RequestResult(start=time.perf_counter())
            try:
                async for message in stub.Generate(request, timeout=600):
                    now = time.perf_counter()
                    if message.WhichOneof("event") == "delta" and message.delta.token_ids:
                        result.first_token = result.first_token or now
                        result.chunk_times.append(now)
                    elif message.WhichOneof("event") == "finished":
                        result.prompt_tokens = message.finished.usage.prompt_tokens
                        result.output_tokens = message.finished.usage.completion_tokens
            except grpc.RpcError as exc:
                result.error = f"{exc.code().name}: {exc.details()}"
            result.end = time.perf_counter()
            return result

        cpu_start, start = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one(prompts[i % len(prompts)]) for i in range(concurrency)))
        duration, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    config = {"protocol": "grpc", "target": target, "model": model, "concurrency": concurrency,
              "num_requests": concurrency, "output_tokens": output_tokens}
    return report(config, list(results), duration, cpu)


async def compare(args) -> dict:
    model_dir = args.model or _bundled_model_dir()
    grpc_port = free_port()
    load_before = os.getloadavg()[0]
    with ServerProcess(model_dir, "bench", num_threads=args.threads, max_num_seqs=max(64, args.concurrency),
                       extra_args=["--grpc-port", str(grpc_port)],
                       command=[sys.executable, "-m", "server"]) as server:
        async with httpx.AsyncClient(timeout=60) as http:
            prompts = await prompt_source.from_server(http, server.base_url, "bench", 2 * args.concurrency,
                                                      args.prompt_tokens)
        timed, warm = prompts[: args.concurrency], prompts[args.concurrency:]
        target = f"127.0.0.1:{grpc_port}"

        async def sse(prompt_list):
            return await run_load(server.base_url, "bench", concurrency=args.concurrency,
                                  num_requests=args.concurrency, output_tokens=args.output_tokens,
                                  prompt_tokens=args.prompt_tokens, prompts=prompt_list)

        await sse(warm)  # untimed: first requests pay one-off costs (allocations, caches)
        await grpc_load(target, "bench", warm, args.concurrency, args.output_tokens)
        runs: dict[str, list[dict]] = {"grpc": [], "sse": []}
        for i in range(args.runs):
            order = ("grpc", "sse") if i % 2 == 0 else ("sse", "grpc")
            for protocol in order:
                cpu_before = server.cpu_seconds()
                if protocol == "grpc":
                    run = await grpc_load(target, "bench", timed, args.concurrency, args.output_tokens)
                else:
                    run = await sse(timed)
                # CPU time is the steadier number on a shared machine: wall time depends on the neighbours.
                run["server_cpu_s"] = round(server.cpu_seconds() - cpu_before, 3)
                run["server_cpu_ms_per_token"] = round(1000 * run["server_cpu_s"] / run["total_output_tokens"], 4)
                runs[protocol].append(run)
    result = {name: median_run(r, "output_tokens_per_s") for name, r in runs.items()}
    result["grpc_over_sse"] = round(result["grpc"]["output_tokens_per_s"] / result["sse"]["output_tokens_per_s"], 3)
    result["server_cpu_ms_per_token"] = {name: sorted(r["server_cpu_ms_per_token"] for r in rs)[(len(rs) - 1) // 2]
                                         for name, rs in runs.items()}
    result["load_average_1m"] = {"before": load_before, "after": os.getloadavg()[0]}
    result["cpu_count"] = os.cpu_count()
    return result


def _bundled_model_dir() -> str:
    from server.cli import default_model_dir

    return default_model_dir()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grpc_vs_sse", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="model directory; default: the bundled model")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=3, help="timed runs per protocol; the median is reported")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the server (1: the client shares a 2-core machine; with 2, OpenMP "
                        "spin-waits of a contended engine dominate and the protocols cannot be told apart)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    result = asyncio.run(compare(args))
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    print(f"grpc {result['grpc']['output_tokens_per_s']} tok/s, sse {result['sse']['output_tokens_per_s']} tok/s, "
          f"ratio {result['grpc_over_sse']}; server CPU ms/token {result['server_cpu_ms_per_token']} "
          f"(load {result['load_average_1m']})", file=sys.stderr)
    return 0 if result["grpc"]["failed"] == result["sse"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
