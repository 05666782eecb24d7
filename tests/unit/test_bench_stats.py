"""The benchmark's statistics and workload construction: pure functions, no server, no model."""

import pytest

from bench.prompts import token_windows
from bench.serving.request import RequestResult
from bench.stats import median_run, percentile, summarize_ms


def test_percentile_interpolates_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="101"):
        percentile([1.0], 101)


def test_summary_is_in_milliseconds_and_none_when_empty():
    summary = summarize_ms([0.010, 0.020, 0.030])
    assert summary["mean"] == 20.0
    assert summary["p50"] == 20.0
    assert summary["min"] == 10.0 and summary["max"] == 30.0 and summary["count"] == 3
    assert summarize_ms([]) is None


def test_token_windows_are_distinct_and_exact():
    windows = token_windows(list(range(100)), num_prompts=4, prompt_tokens=16)
    assert all(len(w) == 16 for w in windows)
    assert len({tuple(w) for w in windows}) == 4
    with pytest.raises(ValueError, match="needed"):
        token_windows(list(range(10)), num_prompts=2, prompt_tokens=8)


def test_request_timings():
    result = RequestResult(start=0.0, end=1.0, first_token=0.2, chunk_times=[0.2, 0.5, 1.0], output_tokens=5)
    assert result.ttft == 0.2
    assert result.inter_token_gaps == pytest.approx([0.3, 0.5])
    assert result.time_per_output_token == pytest.approx(0.2)
    assert RequestResult(start=0.0, end=1.0, output_tokens=5).time_per_output_token is None


def test_median_run_is_a_real_run_with_the_spread():
    runs = [{"rate": 3.0, "tag": "c"}, {"rate": 1.0, "tag": "a"}, {"rate": 2.0, "tag": "b"}]
    assert median_run(runs, "rate") == {"rate": 2.0, "tag": "b", "runs_rate": [1.0, 2.0, 3.0]}
    assert median_run(runs[:2], "rate")["tag"] == "a"  # even count: the lower middle run
    with pytest.raises(ValueError):
        median_run([], "rate")
