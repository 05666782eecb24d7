"""`turnout bench` against the bundled model, as a user runs it: a 2-level concurrency sweep and a Poisson
run write their JSON and PNGs, and the JSON's numbers are the requests and tokens the server itself counted
(its /metrics)."""

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import httpx
import pytest

from bench.prompts import corpus_text
from bench.serving.tokenizers import LocalTokenizer, ServerTokenizer, TextTooLong
from tests.integration.conftest import BUNDLED

ROOT = Path(__file__).resolve().parents[2]
COUNTERS = re.compile(r'^turnout_(requests_total\{endpoint="/v1/completions",model="turnout-tiny",status="200"\}'
                      r'|prompt_tokens_total\{model="turnout-tiny"\}|generation_tokens_total\{model="turnout-tiny"\})'
                      r" ([0-9.e+]+)$", re.M)
# vLLM's saved-result keys (vllm bench serve --save-result) that mean the same in ours.
VLLM_KEYS = ("date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness",
             "max_concurrency", "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
             "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
             "max_output_tokens_per_s", "max_concurrent_requests",
             *(f"{stat}_{name}_ms" for name in ("ttft", "tpot", "itl", "e2el")
               for stat in ("mean", "median", "std", "p90", "p99")))


def counters(server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {name.split("{")[0]: float(value) for name, value in COUNTERS.findall(text)}  # requests_total, ...


def turnout_bench(server, result_dir: Path, *load: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own (this checkout's code), against the test server."""
    return subprocess.run(
        [sys.executable, "-m", "server", "bench", "--base-url", server.base_url, "--model", BUNDLED,
         "--num-prompts", "8", "--input-len", "24", "--output-len", "8", "--result-dir", str(result_dir),
         "--label", "ci", "--goodput", "ttft:5000", "tpot:1000", "--percentiles", "50,90,99", *load],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=180)


def test_sweep_and_poisson_run_write_json_and_plots_that_agree_with_the_servers_counters(server, tmp_path):
    before = counters(server)
    sweep = turnout_bench(server, tmp_path / "sweep", "--concurrency", "1", "4")
    poisson = turnout_bench(server, tmp_path / "poisson", "--request-rate", "8", "--burstiness", "1")
    after = counters(server)
    for finished in (sweep, poisson):
        assert finished.returncode == 0, finished.stderr[-3000:]
    assert "TTFT p50/p99" in sweep.stdout and re.search(r"^c4\s+8/8 ", sweep.stdout, re.M), sweep.stdout

    runs = [json.loads((tmp_path / "sweep" / f"ci-{level}.json").read_text()) for level in ("c1", "c4")]
    runs.append(json.loads((tmp_path / "poisson" / "ci-rate8.json").read_text()))
    for run in runs:
        assert set(VLLM_KEYS) <= run.keys()
        assert run["completed"] == 8 and run["failed"] == 0 and run["turnout_bench"]["short_outputs"] == 0
        assert run["total_output_tokens"] == 64
        assert run["total_input_tokens"] >= 8 * 24
        assert 0 < run["median_ttft_ms"] <= run["median_e2el_ms"]
        assert run["p50_ttft_ms"] == run["median_ttft_ms"]
        assert run["output_throughput"] == run["total_output_tokens"] / run["duration"]
    assert [r["max_concurrency"] for r in runs] == [1, 4, None]
    assert [r["request_rate"] for r in runs] == ["inf", "inf", 8.0] and runs[2]["burstiness"] == 1.0
    # What the server counted over both commands is what the result files say they sent and got back.
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    assert delta["requests_total"] == sum(r["completed"] for r in runs)
    assert delta["generation_tokens_total"] == sum(r["total_output_tokens"] for r in runs)
    assert delta["prompt_tokens_total"] == sum(r["total_input_tokens"] for r in runs)

    for directory in ("sweep", "poisson"):
        for plot in ("latency_cdf", "throughput", "ttft", "goodput"):
            png = tmp_path / directory / f"{plot}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_a_text_longer_than_the_context_is_tokenized_by_the_server_in_pieces(server, bundled_model_dir):
    """A long sweep tokenizes more corpus than one /tokenize call may carry (the server refuses a text longer
    than its context could hold): in pieces, the ids are the ones the model's tokenizer gives the whole text."""
    text = corpus_text()[:200_000]  # over the bundled model's limit (1024 tokens x its longest token's 94 chars)

    async def by_server():
        async with aiohttp.ClientSession() as session:
            tokenizer = ServerTokenizer(session, server.url, BUNDLED)
            with pytest.raises(TextTooLong):
                await tokenizer.encode(text)
            return await tokenizer.encode_long(text)

    assert asyncio.run(by_server()) == asyncio.run(LocalTokenizer(str(bundled_model_dir)).encode(text))
