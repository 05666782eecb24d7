"""Failed requests are counted as failures, by kind, never as successes: `turnout bench` and the locustfile
against an upstream that fails on purpose (tests/faulty_upstream.py: an error event mid-stream, a cut
stream, a stream without [DONE], a 429)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main as turnout
from tests.faulty_upstream import BEHAVIOURS, FaultyUpstream

ROOT = Path(__file__).resolve().parents[2]
KIND = {"ok": None, "error-event": "error_event", "truncate": "connection_lost", "no-done": "missing_done",
        "rate-limited": "rate_limited"}


@pytest.fixture(scope="module")
def upstream():
    with FaultyUpstream() as server:
        yield server


def bench(upstream, model: str, out: Path, *extra: str) -> tuple[int, dict]:
    code = turnout(["bench", "--base-url", upstream.url, "--model", model, "--tokenizer", str(_bundled()),
                    "--concurrency", "2", "--num-prompts", "6", "--input-len", "8", "--output-len", "4",
                    "--result-dir", str(out), "--label", "faulty", "--no-plots", "--no-progress", *extra])
    return code, json.loads((out / "faulty-c2.json").read_text())


def _bundled() -> Path:
    from server.cli import default_model_dir

    return Path(default_model_dir())


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_turnout_bench_counts_each_broken_stream_as_its_kind_of_failure(upstream, behaviour, tmp_path, capsys):
    code, result = bench(upstream, behaviour, tmp_path)
    if behaviour == "ok":
        assert code == 0 and result["completed"] == 6 and result["failed"] == 0
        assert result["total_output_tokens"] == 24 and result["turnout_bench"]["short_outputs"] == 0
        return
    assert code == 1, "a run with failed requests exits 1"
    assert result["completed"] == 0 and result["failed"] == 6
    assert result["turnout_bench"]["failures"] == {KIND[behaviour]: 6}
    assert result["total_output_tokens"] == 0 and result["output_throughput"] == 0
    assert result["median_ttft_ms"] is None, "failed requests' timings are not latencies"
    said = capsys.readouterr().out
    assert f"6 of 6 requests failed (6 {KIND[behaviour]})" in said


def test_turnout_bench_reports_429s_apart_and_a_mixed_run_adds_up(upstream, tmp_path, capsys):
    code, result = bench(upstream, "cycle", tmp_path, "--num-prompts", "10")
    failures = result["turnout_bench"]["failures"]
    assert code == 1
    assert result["completed"] == 2 and result["failed"] == 8
    assert failures == {"error_event": 2, "connection_lost": 2, "missing_done": 2, "rate_limited": 2}
    assert result["turnout_bench"]["rate_limited"] == 2
    assert any("HTTP 429 queue_full" in e for e in result["turnout_bench"]["error_examples"])


def test_locust_counts_broken_streams_and_429s_as_named_failures(upstream, tmp_path):
    """Every request locust reports matches one the upstream served, successes only for `ok`: --stop-timeout
    lets the requests in flight at the end finish, so the counts are exact. (They are read from the tables
    locust prints at exit: its --csv files are rewritten once a second, so they may miss the last second.)"""
    before = dict(upstream.served)
    finished = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--host", upstream.url,
         "--headless", "-u", "4", "-r", "4", "-t", "3s", "--stop-timeout", "10",
         "--model", "cycle", "--max-tokens", "4", "--think-time", "0.05", "StreamingCompletionUser", "StreamingChatUser"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert finished.returncode == 1, "locust exits 1 when requests failed"
    served = {b: upstream.served[b] - before.get(b, 0) for b in BEHAVIOURS}
    rows = {(kind, name): (int(count), int(failed)) for kind, name, count, failed in
            re.findall(r"^(\w+)\s+((?:completions|chat) stream)\s+(\d+)\s+(\d+)\(", finished.stdout, re.M)}
    requests = rows[("POST", "completions stream")][0] + rows[("POST", "chat stream")][0]
    failures = rows[("POST", "completions stream")][1] + rows[("POST", "chat stream")][1]
    assert requests == sum(served.values()) > 0, (served, finished.stdout[-2000:])
    assert requests - failures == served["ok"]
    failed: dict[str, int] = {}
    for count, error in re.findall(r"^\s*(\d+)\s+POST (?:completions|chat) stream: (.+?)\s*$", finished.stdout,
                                   re.M):
        failed[error] = failed.get(error, 0) + int(count)
    assert failed == {"error event in stream request_failed": served["error-event"],
                      "stream cut (connection lost)": served["truncate"],
                      "stream ended without [DONE]": served["no-done"],
                      "HTTP 429 queue_full": served["rate-limited"]}, finished.stdout[-3000:]
    assert rows[("TTFT", "completions stream")][0] > 0 and rows[("TOKENS", "chat stream")][0] > 0
