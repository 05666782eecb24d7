"""The tgi backend against turnout's own TGI API: a second turnout whose only model is the first server
reached over TGI's wire format, answered through the openai client and compared with the direct answer."""

import asyncio
import json

import httpx
import jsonschema
import openai
import pytest

from backends.errors import UpstreamError
from backends.tgi import TGIBackend, TGIBackendConfig
from backends.types import GenerateRequest, SamplingParams
from tests.integration.conftest import BUNDLED
from tests.integration.test_decoding import SCHEMAS
from tests.integration.test_disconnect import wait_for
from tests.integration.test_tgi_api import EOS_PROMPT, eos_seed
from tests.server_thread import ServerThread, free_port

VIA = "via-tgi"
PROMPT = "The for statement is used"


@pytest.fixture(scope="module")
def gateway(server):
    srv = ServerThread({VIA: TGIBackend(TGIBackendConfig(url=server.url, served_model_name=VIA))}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def via(gateway):
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)


def same_answer(direct, via_tgi):
    assert [(c.index, c.text, c.finish_reason) for c in via_tgi.choices] == \
        [(c.index, c.text, c.finish_reason) for c in direct.choices]
    assert counts(via_tgi.usage) == counts(direct.usage)


def counts(usage) -> tuple[int, int, int]:
    """The token counts (TGI's API has no word for prefix-cache hits: prompt_tokens_details is ours alone)."""
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens


def test_model_info_comes_from_tgi_info(server, via):
    (model,) = via.models.list().data
    assert model.id == VIA
    info = httpx.get(server.url + "/info").json()
    assert model.model_extra.get("max_model_len", info["max_total_tokens"]) == info["max_total_tokens"]


@pytest.mark.parametrize("args", [
    dict(max_tokens=12, temperature=0),
    dict(max_tokens=20, temperature=0.8, top_p=0.9, seed=7, extra_body={"top_k": 40}),
    dict(max_tokens=10, temperature=1.0, seed=3, n=2),
    dict(max_tokens=8, temperature=0, logprobs=2),
    dict(max_tokens=16, temperature=0, frequency_penalty=0.5, extra_body={"repetition_penalty": 1.3}),
])
def test_same_answer_as_direct(client, via, args):
    direct = client.completions.create(model=BUNDLED, prompt=PROMPT, **args)
    through = via.completions.create(model=VIA, prompt=PROMPT, **args)
    same_answer(direct, through)
    if args.get("logprobs"):
        d, t = direct.choices[0].logprobs, through.choices[0].logprobs
        assert t.tokens == d.tokens and t.top_logprobs == d.top_logprobs
        assert t.token_logprobs == pytest.approx(d.token_logprobs)


def test_stop_string_is_cut_as_direct_and_streamed_alike(client, via):
    free = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    stop = next(w for w in free.split()[1:] if w.isalpha())
    args = dict(prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop, "never appears"])
    direct = client.completions.create(model=BUNDLED, **args)
    through = via.completions.create(model=VIA, **args)
    same_answer(direct, through)
    assert through.choices[0].finish_reason == "stop" and through.choices[0].text == free[: free.index(stop)]
    chunks = list(via.completions.create(model=VIA, **args, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == through.choices[0].text
    assert counts(chunks[-1].usage) == counts(through.usage)


def test_eos_ends_as_stop_like_direct(server, client, via):
    args = dict(prompt=EOS_PROMPT, max_tokens=60, temperature=1.0, seed=eos_seed(server.url))
    direct = client.completions.create(model=BUNDLED, **args)
    assert direct.choices[0].finish_reason == "stop"
    same_answer(direct, via.completions.create(model=VIA, **args))


@pytest.mark.parametrize("extra, param", [
    ({"min_p": 0.1}, "min_p"),
    ({"ignore_eos": True}, "ignore_eos"),
    ({"stop_token_ids": [5]}, "stop_token_ids"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
])
def test_what_tgi_cannot_do_is_a_clear_400(via, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        via.completions.create(model=VIA, prompt=PROMPT, max_tokens=4, extra_body=extra)
    assert err.value.body["param"] == param and "tgi backend" in err.value.body["message"]


def test_upstream_validation_errors_come_back_as_400(via):
    with pytest.raises(openai.BadRequestError) as err:
        via.completions.create(model=VIA, prompt=PROMPT, max_tokens=5000)
    assert err.value.body["code"] == "context_length_exceeded"


def test_client_disconnect_frees_the_upstream_sequence(server, gateway, client):
    engine = server.engine()
    long = dict(prompt="The for statement", max_tokens=120, temperature=0)
    assert client.completions.create(model=BUNDLED, **long).choices[0].finish_reason == "length"
    wait_for(lambda: engine.num_running == 0)
    with httpx.stream("POST", gateway.base_url + "/completions", json={"model": VIA, **long, "stream": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert engine.num_running == 1
        steps_at_close = engine.num_steps
    wait_for(lambda: engine.num_running == 0)
    steps = engine.num_steps - steps_at_close
    assert steps < 40, f"the upstream sequence ran on for {steps} steps after the client left"
    assert engine.core.scheduler.blocks.num_holders == 0


async def test_prompt_count_fallback_uses_tgi_tokenize(server):
    backend = TGIBackend(TGIBackendConfig(url=server.url))
    await backend.start()
    try:
        count = len(httpx.post(server.url + "/tokenize", json={"inputs": PROMPT}).json())
        assert await backend._count_tokens(PROMPT) == count
        assert backend.info.name == BUNDLED and await backend.health()
    finally:
        await backend.close()


async def test_unreachable_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    backend = TGIBackend(TGIBackendConfig(url=url, timeout=5))
    with pytest.raises(UpstreamError, match=url):
        await backend.start()
    assert not await backend.health()
    backend._pool = __import__("httpx2").AsyncClient()  # started, but the server is gone
    request = GenerateRequest("r", VIA, SamplingParams(max_tokens=3), prompt=PROMPT)
    with pytest.raises(UpstreamError, match="cannot reach"):
        await asyncio.wait_for(anext(backend.generate(request)), 30)
    assert not await backend.health()
    await backend.close()


async def test_json_schema_goes_upstream_as_a_tgi_grammar(server):
    backend = TGIBackend(TGIBackendConfig(url=server.url))
    await backend.start()
    try:
        params = SamplingParams(max_tokens=60, temperature=0, json_schema=SCHEMAS[1])
        deltas = [d async for d in backend.generate(GenerateRequest("j", VIA, params, prompt="JSON please"))]
        assert deltas[-1].finish_reason == "stop" and deltas[-1].stop_reason is None
        jsonschema.validate(json.loads("".join(d.text for d in deltas)), SCHEMAS[1])
    finally:
        await backend.close()
