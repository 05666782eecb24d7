"""TGI's native API, driven by huggingface_hub's InferenceClient / AsyncInferenceClient as TGI users do."""

import functools
import json

import httpx
import jsonschema
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import ValidationError

from tests.integration.conftest import BUNDLED
from tests.integration.test_decoding import SCHEMAS

PROMPT = "The for statement is used"
EOS_PROMPT = "Classes"


@pytest.fixture(scope="module")
def tgi(server):
    # provider="hf-inference": huggingface_hub's /info and /health helpers insist on it
    return InferenceClient(model=server.url, provider="hf-inference", timeout=120)


def prompt_tokens(server, text: str) -> int:
    return len(httpx.post(server.url + "/tokenize", json={"inputs": text}).json())


def visible_text(tokens) -> str:
    return "".join(t.text for t in tokens if not t.special)


@functools.cache
def eos_seed(url: str) -> int:
    """A seed whose sampled answer to EOS_PROMPT ends with the model's end-of-sequence token (the tiny
    model rarely ends by itself; the search is bounded, deterministic, and done once per run)."""
    client = InferenceClient(model=url, timeout=120)
    for seed in range(60):
        out = client.text_generation(EOS_PROMPT, max_new_tokens=60, do_sample=True, seed=seed, details=True)
        if out.details.finish_reason == "eos_token":
            return seed
    pytest.fail("no seed in range(60) ends with EOS; the bundled model changed")


def test_greedy_details_length_and_usage(server, tgi, client):
    out = tgi.text_generation(PROMPT, max_new_tokens=8, details=True)
    d = out.details
    assert d.finish_reason == "length" and d.generated_tokens == 8 and len(d.tokens) == 8
    assert d.seed is None and d.prefill == [] and d.best_of_sequences is None
    assert out.generated_text == visible_text(d.tokens)
    assert all(t.logprob <= 0 for t in d.tokens)
    direct = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=8, temperature=0)
    assert out.generated_text == direct.choices[0].text
    assert [t.id for t in d.tokens] == direct_ids(server, out.generated_text, PROMPT)


def direct_ids(server, text: str, prompt: str) -> list[int]:
    full = httpx.post(server.url + "/tokenize", json={"inputs": prompt + text}).json()
    return [t["id"] for t in full][prompt_tokens(server, prompt):]


def test_stream_equals_non_stream_and_ends_with_details(server, tgi):
    full = tgi.text_generation(PROMPT, max_new_tokens=12, details=True)
    events = list(tgi.text_generation(PROMPT, max_new_tokens=12, details=True, stream=True))
    assert len(events) == 12 and [e.index for e in events] == list(range(1, 13))
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == full.generated_text == visible_text([e.token for e in events])
    assert last.details.finish_reason == "length" and last.details.generated_tokens == 12
    assert last.details.input_length == prompt_tokens(server, PROMPT)
    texts = list(tgi.text_generation(PROMPT, max_new_tokens=12, stream=True))  # details=False: token texts
    assert "".join(texts) == full.generated_text


def test_eos_token_finish_and_seed_reproduces(server, tgi):
    seed = eos_seed(server.url)
    out = tgi.text_generation(EOS_PROMPT, max_new_tokens=60, do_sample=True, seed=seed, details=True)
    d = out.details
    assert d.finish_reason == "eos_token" and d.seed == seed and d.generated_tokens == len(d.tokens) < 60
    assert d.tokens[-1].special and not any(t.special for t in d.tokens[:-1])
    assert out.generated_text == visible_text(d.tokens)
    again = list(tgi.text_generation(EOS_PROMPT, max_new_tokens=60, do_sample=True, seed=seed, details=True,
                                     stream=True))
    assert again[-1].details.finish_reason == "eos_token" and again[-1].details.seed == seed
    assert again[-1].generated_text == out.generated_text


def test_unseeded_sampling_reports_a_seed_that_reproduces(tgi):
    out = tgi.text_generation(PROMPT, max_new_tokens=10, temperature=0.9, details=True)
    assert out.details.seed is not None
    again = tgi.text_generation(PROMPT, max_new_tokens=10, temperature=0.9, seed=out.details.seed)
    assert again == out.generated_text


def test_stop_sequence_is_kept_at_the_end_as_tgi_does(tgi):
    free = tgi.text_generation(PROMPT, max_new_tokens=30)
    stop = next(w for w in free.split()[1:] if w.isalpha())
    expected = free[: free.index(stop) + len(stop)]
    out = tgi.text_generation(PROMPT, max_new_tokens=30, stop=[stop], details=True)
    assert out.details.finish_reason == "stop_sequence"
    assert out.generated_text == expected == visible_text(out.details.tokens)
    events = list(tgi.text_generation(PROMPT, max_new_tokens=30, stop=[stop], details=True, stream=True))
    assert events[-1].details.finish_reason == "stop_sequence" and events[-1].generated_text == expected
    assert events[-1].details.generated_tokens == out.details.generated_tokens == len(events)


def test_top_n_tokens_decoder_input_details_and_truncate(server, tgi):
    out = tgi.text_generation(PROMPT, max_new_tokens=3, details=True, decoder_input_details=True, top_n_tokens=3)
    n_prompt = prompt_tokens(server, PROMPT)
    assert len(out.details.prefill) == n_prompt and out.details.prefill[0].logprob is None
    assert all(p.logprob <= 0 for p in out.details.prefill[1:])
    assert len(out.details.top_tokens) == 3 and all(len(top) == 3 for top in out.details.top_tokens)
    # huggingface_hub leaves lists of lists as dicts
    pairs = zip(out.details.top_tokens, out.details.tokens, strict=True)
    assert all(top[0]["logprob"] >= tok.logprob for top, tok in pairs)
    cut = tgi.text_generation(PROMPT, max_new_tokens=3, details=True, decoder_input_details=True, truncate=2)
    assert [p.id for p in cut.details.prefill] == [p.id for p in out.details.prefill][-2:]


def test_best_of_returns_the_most_likely_and_the_others(tgi):
    out = tgi.text_generation(PROMPT, max_new_tokens=6, best_of=3, do_sample=True, details=True)
    others = out.details.best_of_sequences
    assert len(others) == 2
    seeds = {out.details.seed, *(s.seed for s in others)}
    assert len(seeds) == 3
    best = sum(t.logprob for t in out.details.tokens)
    assert all(sum(t.logprob for t in s.tokens) <= best for s in others)


def test_return_full_text_prepends_the_prompt(tgi):
    plain = tgi.text_generation(PROMPT, max_new_tokens=4)
    assert tgi.text_generation(PROMPT, max_new_tokens=4, return_full_text=True) == PROMPT + plain


@pytest.mark.parametrize("stream", [False, True])
def test_validation_errors_are_tgi_validation_errors(tgi, stream):
    with pytest.raises(ValidationError, match="temperature"):
        result = tgi.text_generation(PROMPT, max_new_tokens=4, temperature=0.0, stream=stream)
        list(result) if stream else None
    with pytest.raises(ValidationError, match="watermark"):
        result = tgi.text_generation(PROMPT, max_new_tokens=4, watermark=True, stream=stream)
        list(result) if stream else None


def test_raw_routes_shapes_and_status_codes(server):
    url = server.url
    r = httpx.post(url + "/", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 3, "do_sample": False}})
    assert r.status_code == 200 and isinstance(r.json(), list) and set(r.json()[0]) == {"generated_text"}
    assert r.headers["x-generated-tokens"] == "3"
    with httpx.stream("POST", url + "/", json={"inputs": PROMPT, "stream": True,
                                               "parameters": {"max_new_tokens": 2}}) as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert r.headers["content-type"].startswith("text/event-stream") and len(events) == 2
    assert events[-1]["generated_text"] is not None and events[-1]["details"] is None
    r = httpx.post(url + "/generate", json={"inputs": PROMPT, "parameters": {"top_p": 1.0}})
    assert r.status_code == 422
    assert r.json() == {"error": "Input validation error: `top_p` must be > 0.0 and < 1.0", "error_type": "validation"}
    r = httpx.post(url + "/generate_stream", json={"inputs": PROMPT, "parameters": {"best_of": 2, "do_sample": True}})
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
    r = httpx.post(url + "/generate", json={"inputs": "", "parameters": {}})
    assert r.status_code == 422 and "`inputs` cannot be empty" in r.json()["error"]
    r = httpx.post(url + "/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5000}})
    assert r.status_code == 422 and "context length" in r.json()["error"]
    r = httpx.post(url + "/generate", json={"inputs": PROMPT, "parameters": {"grammar": {"type": "regex",
                                                                                          "value": "a+"}}})
    assert r.status_code == 422 and "regex" in r.json()["error"]


def test_info(server, tgi):
    info = tgi.get_endpoint_info()
    assert info["model_id"] == BUNDLED and info["max_total_tokens"] == server.backends[BUNDLED].info.max_model_len
    assert info["max_input_tokens"] == info["max_total_tokens"] - 1 and info["router"] == "turnout"
    assert tgi.health_check()


async def test_async_client_stream_and_chat_completion(server):
    client = AsyncInferenceClient(model=server.url, timeout=120)
    events = [e async for e in await client.text_generation(PROMPT, max_new_tokens=5, details=True, stream=True)]
    assert events[-1].details.generated_tokens == 5
    messages = [{"role": "user", "content": "What does the with statement do?"}]
    chat = AsyncInferenceClient(base_url=server.url, timeout=120)
    full = await chat.chat_completion(messages, model=BUNDLED, max_tokens=12, temperature=0)
    assert full.choices[0].message.role == "assistant" and full.choices[0].message.content
    chunks = [c async for c in await chat.chat_completion(messages, model=BUNDLED, max_tokens=12, temperature=0,
                                                            stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
    assert full.usage.completion_tokens <= 12
    await client.close()
    await chat.close()


def test_json_grammar_output_validates(tgi):
    schema = SCHEMAS[1]
    for grammar in ({"type": "json", "value": schema},
                    {"type": "json_schema", "value": {"name": "x", "schema": schema}}):
        out = tgi.text_generation("Describe a Python object as JSON.", max_new_tokens=60, details=True,
                                  grammar=grammar)
        assert out.details.finish_reason == "eos_token"  # the grammar completed
        jsonschema.validate(json.loads(out.generated_text), schema)


def test_tgi_clients_chat_completion_reaches_the_one_served_model(server):
    """huggingface_hub's InferenceClient(base_url=...) sends a placeholder model ("dummy"; "tgi" in older
    releases) to /v1/chat/completions, which TGI takes for whatever it serves; with one model served, turnout
    does the same (it got a 404 before). Its json_schema response_format arrives in TGI's shape and holds."""
    client = InferenceClient(base_url=server.url, timeout=120)
    messages = [{"role": "user", "content": "What does the with statement do?"}]
    out = client.chat_completion(messages, max_tokens=5)
    assert out.choices[0].message.content and out.usage.completion_tokens <= 5
    pieces = [chunk.choices[0].delta.content or "" for chunk in
              client.chat_completion(messages, max_tokens=5, stream=True) if chunk.choices]
    assert "".join(pieces)
    assert client.text_generation("The with statement", max_new_tokens=3)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    out = client.chat_completion(messages, max_tokens=20, response_format={
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    if out.choices[0].finish_reason == "stop":
        assert json.loads(out.choices[0].message.content)["ok"] in (True, False)
    else:
        assert out.choices[0].message.content.startswith('{"ok"')
