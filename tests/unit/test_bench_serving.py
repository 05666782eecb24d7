"""`turnout bench`'s pure parts, no server: arrival schedules, load shapes, the metrics as vLLM defines them,
the workloads (with a character-level stand-in tokenizer) and the request bodies."""

import argparse
import asyncio
import json
import math
import statistics

import pytest

from bench.serving.load_shapes import LoadShape, arrival_offsets
from bench.serving.metrics import compute, percentile_key
from bench.serving.request import RequestResult, build_payload
from bench.serving.tokenizers import ServerTokenizer, TextTooLong, TokenizerUnavailable
from bench.serving.workloads import conversations, random_lengths, shared_prefix


class CharTokenizer:
    """One token per character: lengths are easy to reason about."""
    name = "chars"

    async def encode(self, text):
        return [ord(c) for c in text]

    async def decode(self, ids):
        return "".join(map(chr, ids))

    encode_long = encode


def options(**overrides) -> argparse.Namespace:
    base = dict(seed=0, input_len=20, output_len=8, range_ratio=0.0, num_prefixes=3, prompts_per_prefix=4,
                prefix_len=30, suffix_len=5, dataset_path=None, shuffle=False, max_total_len=None)
    return argparse.Namespace(**{**base, **overrides})


def test_arrivals_are_seeded_ordered_and_end_at_n_over_rate():
    offsets = arrival_offsets(50, 10.0, 1.0, seed=3)
    assert offsets == arrival_offsets(50, 10.0, 1.0, seed=3) != arrival_offsets(50, 10.0, 1.0, seed=4)
    assert offsets == sorted(offsets) and offsets[0] > 0
    assert offsets[-1] == pytest.approx(50 / 10.0)
    assert arrival_offsets(5, math.inf, 1.0, seed=0) == [0.0] * 5


def test_burstiness_below_one_spreads_the_gaps_and_above_one_evens_them():
    def spread(burstiness):
        offsets = arrival_offsets(2000, 10.0, burstiness, seed=1)
        gaps = [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
        return statistics.pstdev(gaps) / statistics.mean(gaps)

    assert spread(0.25) > 1.5 > spread(1.0) > 0.8 > 0.5 > spread(8.0)  # Poisson: coefficient of variation 1


def test_load_shapes_are_one_kind_and_name_themselves():
    assert [s.label for s in (LoadShape(concurrency=8), LoadShape(request_rate=2.5),
                              LoadShape(request_rate=math.inf))] == ["c8", "rate2.5", "rate-inf"]
    assert LoadShape(request_rate=4, max_concurrency=2).in_flight_limit == 2
    for bad in (dict(), dict(concurrency=2, request_rate=1.0), dict(concurrency=0), dict(request_rate=0),
                dict(request_rate=1.0, burstiness=0)):
        with pytest.raises(ValueError):
            LoadShape(**bad)


def streamed(start, ttft, gaps, tokens, expected=None, prompt=10) -> RequestResult:
    times = [start + ttft]
    for gap in gaps:
        times.append(times[-1] + gap)
    return RequestResult(start=start, end=times[-1], first_token=times[0], chunk_times=times, prompt_tokens=prompt,
                         output_tokens=tokens, expected_output_tokens=expected or tokens)


def test_metrics_follow_vllm_definitions():
    a = streamed(0.0, 0.1, [0.02, 0.02, 0.02], 4)          # e2el 0.16, tpot 0.02
    b = streamed(0.5, 0.3, [0.05, 0.05, 0.05], 4, expected=6)  # e2el 0.45, tpot 0.05, short
    failed = RequestResult(start=0.2, end=0.3)
    failed.fail("rate_limited", "HTTP 429 queue_full")
    m = compute([a, b, failed], duration_s=2.0, percentiles=[99.9], slos_ms={"ttft": 200, "tpot": 30})
    assert (m["completed"], m["failed"], m["failures"], m["short_outputs"]) == (2, 1, {"rate_limited": 1}, 1)
    assert m["request_throughput"] == 1.0 and m["output_throughput"] == 4.0
    assert m["total_token_throughput"] == (20 + 8) / 2.0
    assert m["mean_ttft_ms"] == pytest.approx(200) and m["median_ttft_ms"] == pytest.approx(200)
    assert m["std_ttft_ms"] == pytest.approx(100)  # population standard deviation, as numpy's
    assert m["mean_tpot_ms"] == pytest.approx(35) and m["median_e2el_ms"] == pytest.approx(305)
    assert m["mean_itl_ms"] == pytest.approx(35)  # six gaps pooled
    assert m["p99.9_itl_ms"] == pytest.approx(50) and percentile_key(99.0) == "p99"
    assert m["good_requests"] == 1 and m["request_goodput"] == 0.5
    assert compute([a], 1.0, [99])["request_goodput"] is None


def test_unstreamed_requests_have_no_made_up_ttft():
    whole = RequestResult(start=0.0, end=1.0, output_tokens=8, expected_output_tokens=8)
    m = compute([whole], 1.0, [99])
    assert m["median_ttft_ms"] is None and m["median_itl_ms"] is None and m["median_e2el_ms"] == 1000


def test_random_workload_lengths_stay_in_range_and_sets_share_no_text():
    sets = asyncio.run(random_lengths.build_sets(options(range_ratio=0.5), CharTokenizer(), 3, 10))
    assert [len(s) for s in sets] == [10, 10, 10]
    for sample in (s for level in sets for s in level):
        assert 10 <= sample.prompt_len <= 30 and 4 <= sample.output_len <= 12
        assert len(sample.token_ids) == sample.prompt_len and sample.text == "".join(map(chr, sample.token_ids))
    texts = [s.text for level in sets for s in level]
    assert len(set(texts)) == len(texts)
    fixed = asyncio.run(random_lengths.build_sets(options(), CharTokenizer(), 1, 5))[0]
    assert {(s.prompt_len, s.output_len) for s in fixed} == {(20, 8)}


def test_shared_prefix_workload_is_n_prefixes_times_m_suffixes_per_level():
    sets = asyncio.run(shared_prefix.build_sets(options(prefix_len=60), CharTokenizer(), 2, 0))
    for level in sets:
        assert len(level) == 12 and all(s.prompt_len == 65 for s in level)
        prefixes = [s.text[:60] for s in level]
        assert sorted(prefixes.count(p) for p in set(prefixes)) == [4, 4, 4]
    assert not {s.text[:60] for s in sets[0]} & {s.text[:60] for s in sets[1]}, "each level its own prefixes"


def test_conversations_come_from_sharegpt_or_openai_records(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "hi!"}]},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why?"},
                      {"role": "assistant", "content": "because."}]},
        {"conversations": [{"from": "human", "value": "no answer"}]},
        {"conversations": [{"from": "human", "value": "x" * 50}, {"from": "gpt", "value": "y" * 50}]},
    ]) + "\n")
    level = asyncio.run(conversations.build_sets(options(dataset_path=str(path), output_len=None,
                                                         max_total_len=40), CharTokenizer(), 1, 2))[0]
    assert [(s.text, s.prompt_len, s.output_len) for s in level] == [("hello there", 11, 3), ("why?", 4, 8)]
    fixed = asyncio.run(conversations.build_sets(options(dataset_path=str(path), output_len=16), CharTokenizer(),
                                                 2, 3))
    assert [s.output_len for level in fixed for s in level] == [16] * 6  # three usable, repeated


def test_request_bodies():
    body = build_payload("completions", "m", [1, 2, 3], 16, stream=True, extra_body={"top_p": 0.5})
    assert body == {"model": "m", "max_tokens": 16, "stream": True, "temperature": 0.0, "ignore_eos": True,
                    "stream_options": {"include_usage": True}, "prompt": [1, 2, 3], "top_p": 0.5}
    chat = build_payload("chat", "m", "hi", 4, stream=False, ignore_eos=False, temperature=None)
    assert chat == {"model": "m", "max_tokens": 4, "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ValueError, match="text prompts"):
        build_payload("chat", "m", [1], 4, stream=True)


class _Refusing:
    """Stands in for an aiohttp session before a server whose /tokenize refuses texts over `limit` characters
    with turnout's 400 (and a model it does not serve with another 400)."""

    def __init__(self, limit=100):
        self.limit, self.sent = limit, []

    def post(self, url, json, headers):
        self.sent.append(json["prompt"])
        if json["model"] != "m":
            return _Answer(400, b'{"error": {"code": "model_not_found"}}')
        if len(json["prompt"]) > self.limit:
            return _Answer(400, b'{"error": {"code": "context_length_exceeded"}}')
        return _Answer(200, b"", {"tokens": [ord(c) for c in json["prompt"]]})


class _Answer:
    def __init__(self, status, raw, body=None):
        self.status, self._raw, self._body = status, raw, body

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def read(self):
        return self._raw

    async def json(self):
        return self._body


def test_a_long_text_goes_to_the_servers_tokenizer_in_pieces_it_accepts():
    session = _Refusing()
    text = " ".join(f"word{i}" for i in range(200))
    ids = asyncio.run(ServerTokenizer(session, "http://x", "m").encode_long(text, piece_chars=400))
    assert "".join(map(chr, ids)) == text  # every character once, in order
    # Refused at up to 400 and 200 characters, then pieces of up to 100 from there on: no retry per piece.
    assert [len(piece) > 100 for piece in session.sent] == [True, True] + [False] * (len(session.sent) - 2)
    assert len(session.sent[0]) <= 400 and len(session.sent[1]) <= 200
    accepted = [piece for piece in session.sent if len(piece) <= 100]
    assert "".join(accepted) == text and all(piece.startswith(" ") for piece in accepted[1:])  # cut at spaces


def test_long_texts_are_cut_between_words_never_inside_whitespace_runs():
    session = _Refusing()
    text = "".join(f"def f{i}(x):\n    return  x + {i}\n\n" for i in range(40))  # indents, double spaces
    ids = asyncio.run(ServerTokenizer(session, "http://x", "m").encode_long(text, piece_chars=100))
    assert "".join(map(chr, ids)) == text
    pieces = session.sent
    assert len(pieces) > 10
    for before, after in zip(pieces, pieces[1:], strict=False):
        assert not before[-1].isspace() and after[0] == " " and not after[1].isspace(), (before, after)


def test_a_text_no_piece_of_which_fits_and_other_refusals_are_errors():
    with pytest.raises(TextTooLong):
        asyncio.run(ServerTokenizer(_Refusing(limit=10), "http://x", "m").encode_long("y" * 500))
    unserved = _Refusing()
    with pytest.raises(TokenizerUnavailable, match="model_not_found"):
        asyncio.run(ServerTokenizer(unserved, "http://x", "other").encode_long("short text"))
    assert len(unserved.sent) == 1  # not retried in pieces: it is not about the length


def test_conversations_whose_prompt_the_server_refuses_are_skipped(tmp_path):
    class ContextOf(CharTokenizer):
        async def encode(self, text):
            if len(text) > 30:
                raise TextTooLong("longer than the context")
            return [ord(c) for c in text]

    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps({"conversations": [{"from": "human", "value": prompt},
                                                            {"from": "gpt", "value": "ok"}]})
                              for prompt in ("short", "z" * 40, "also short")) + "\n")
    level = asyncio.run(conversations.build_sets(options(dataset_path=str(path), output_len=None), ContextOf(),
                                                 1, 2))[0]
    assert [s.text for s in level] == ["short", "also short"]
