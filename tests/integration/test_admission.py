"""Admission through the real server: API keys (401/403 over HTTP and gRPC), per-key rate limits (429 with
Retry-After and x-ratelimit-* headers), the bounded per-model queue (a burst: some 429s, the rest 200, no
5xx, the engine empty after), fairness across keys, and deadlines that free the engine's slot.

The server holds the bundled model with a batch of 2 (so a burst queues) and, for the permission matrix, a
second model whose backend only answers (gateway logic: the keys decide, not the engine).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import httpx
import openai
import pytest

from backends.hf.backend import HFBackend
from backends.hf.config import HFEngineConfig
from backends.types import FinishReason, ModelInfo, OutputDelta, Usage
from server.config import RouterSettings
from server.grpc.gen import generate_pb2 as pb
from server.keys import ApiKey, KeyRing, hash_key
from server.router import Router
from tests.grpc_client import generate_request
from tests.inert_backend import InertBackend
from tests.integration.test_poison_requests import assert_still_serving
from tests.server_thread import ServerThread

MODEL, OTHER = "turnout-tiny", "other"
KEYS = {"alpha": "tk-alpha-secret-1", "beta": "tk-beta-secret-2", "rpm3": "tk-rpm-secret-3",
        "tpm": "tk-tpm-secret-4", "fair-a": "tk-fair-a-5", "fair-b": "tk-fair-b-6"}
MAX_QUEUED = 4


class Answers(InertBackend):
    info = ModelInfo(name=OTHER, max_model_len=64)

    async def generate(self, request):
        yield OutputDelta(token_ids=[1], text="ok", finish_reason=FinishReason.LENGTH, usage=Usage(1, 1))


def api_key(name: str, **limits) -> ApiKey:
    return ApiKey(name=name, hash=hash_key(KEYS[name]), **limits)


@pytest.fixture(scope="module")
def gated(bundled_model_dir):
    hf = HFBackend(HFEngineConfig(model=str(bundled_model_dir), served_model_name=MODEL, max_num_seqs=2,
                                  num_threads=2))
    keys = KeyRing([api_key("alpha"), api_key("beta", models=frozenset({OTHER})),
                    api_key("rpm3", requests_per_minute=3), api_key("tpm", tokens_per_minute=60),
                    api_key("fair-a"), api_key("fair-b")])
    router = Router({MODEL: hf, OTHER: Answers()}, settings=RouterSettings(max_queued_requests=MAX_QUEUED),
                    keys=keys)
    srv = ServerThread({MODEL: hf}, router=router, grpc=True).start()
    yield srv
    srv.stop()


def bearer(name: str) -> dict:
    return {"authorization": f"Bearer {KEYS[name]}"}


def completion(gated, key: str | None, model: str = MODEL, **body) -> httpx.Response:
    headers = bearer(key) if key else {}
    return httpx.post(gated.base_url + "/completions", headers=headers, timeout=60,
                      json={"model": model, "prompt": "x", "max_tokens": 2, **body})


def test_http_key_matrix(gated):
    missing = completion(gated, None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.post(gated.base_url + "/completions", headers={"authorization": "Bearer nope"},
                       json={"model": MODEL, "prompt": "x"})
    assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]["message"]
    assert completion(gated, "alpha").status_code == 200
    assert httpx.post(gated.base_url + "/completions", headers={"x-api-key": KEYS["alpha"]},
                      json={"model": MODEL, "prompt": "x", "max_tokens": 2}).status_code == 200
    denied = completion(gated, "beta")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    assert completion(gated, "beta", model=OTHER).status_code == 200
    listed = {m["id"] for m in httpx.get(gated.base_url + "/models", headers=bearer("beta")).json()["data"]}
    assert listed == {OTHER}
    listed = {m["id"] for m in httpx.get(gated.base_url + "/models", headers=bearer("alpha")).json()["data"]}
    assert listed == {MODEL, OTHER}
    tgi = httpx.post(gated.url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}})
    assert tgi.status_code == 401 and tgi.json()["error_type"] == "authentication"
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(gated.url + path).status_code == 200, path


def test_the_official_client_sends_its_key(gated):
    ok = openai.OpenAI(base_url=gated.base_url, api_key=KEYS["alpha"], max_retries=0)
    assert ok.completions.create(model=MODEL, prompt="x", max_tokens=2).usage.completion_tokens <= 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gated.base_url, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=gated.base_url, api_key=KEYS["beta"], max_retries=0).completions.create(
            model=MODEL, prompt="x", max_tokens=2)


def test_grpc_key_matrix(gated):
    channel = grpc.insecure_channel(gated.grpc_target)
    complete = channel.unary_unary("/turnout.v1.Generation/Complete",
                                   request_serializer=pb.GenerateRequest.SerializeToString,
                                   response_deserializer=pb.CompleteResponse.FromString)
    list_models = channel.unary_unary("/turnout.v1.Generation/ListModels",
                                      request_serializer=pb.ListModelsRequest.SerializeToString,
                                      response_deserializer=pb.ListModelsResponse.FromString)
    request = generate_request(MODEL, "hi", max_tokens=2)
    for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                           ((("authorization", "Bearer nope"),), grpc.StatusCode.UNAUTHENTICATED),
                           ((("authorization", f"Bearer {KEYS['beta']}"),), grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.RpcError) as failure:
            complete(request, metadata=metadata, timeout=30)
        assert failure.value.code() == code
    out = complete(request, metadata=(("authorization", f"Bearer {KEYS['alpha']}"),), timeout=30)
    assert out.choices[0].finish_reason == pb.FINISH_REASON_LENGTH
    models = list_models(pb.ListModelsRequest(), metadata=(("authorization", f"Bearer {KEYS['beta']}"),), timeout=10)
    assert [m.id for m in models.models] == [OTHER]
    channel.close()


def test_keys_never_reach_the_logs_but_their_names_do(gated, caplog):
    with caplog.at_level(logging.DEBUG):
        completion(gated, "alpha")
        completion(gated, None)
        httpx.post(gated.base_url + "/completions", headers={"authorization": "Bearer tk-guess-9"},
                   json={"model": MODEL, "prompt": "x"})
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'access', '')}" for r in caplog.records)
    assert all(secret not in text for secret in (*KEYS.values(), "tk-guess-9"))
    assert any(getattr(r, "access", {}).get("key") == "alpha" for r in caplog.records)


def test_requests_per_minute_limit_is_a_429_with_retry_after_and_openai_headers(gated):
    answers = [completion(gated, "rpm3") for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    first = answers[0].headers
    assert first["x-ratelimit-limit-requests"] == "3" and first["x-ratelimit-remaining-requests"] == "2"
    assert first["x-ratelimit-reset-requests"].endswith("s")
    refused = answers[-1]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert completion(gated, "alpha").status_code == 200  # another key is not limited by it


def test_tokens_per_minute_count_the_prompt_at_admission_and_the_output_after(gated):
    first = completion(gated, "tpm", max_tokens=60, ignore_eos=True)  # the minute's 60 tokens, and one more
    assert first.status_code == 200 and first.json()["usage"]["completion_tokens"] == 60
    assert first.headers["x-ratelimit-limit-tokens"] == "60" and "x-ratelimit-remaining-tokens" in first.headers
    second = completion(gated, "tpm", max_tokens=2)
    assert second.status_code == 429  # the 60 output tokens were charged when the first one ended
    assert second.json()["error"]["type"] == "rate_limit_error"


async def test_a_burst_over_the_queue_bound_gets_429s_and_no_5xx(gated):
    async with httpx.AsyncClient(timeout=120) as http:
        async def one(i: int) -> httpx.Response:
            return await http.post(gated.base_url + "/completions", headers=bearer("alpha"), json={
                "model": MODEL, "prompt": f"burst {i}", "max_tokens": 40, "ignore_eos": True})

        answers = await asyncio.gather(*(one(i) for i in range(20)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 3 and statuses.count(429) >= 1, statuses
    for refused in (r for r in answers if r.status_code == 429):
        assert refused.json()["error"]["code"] == "queue_full" and int(refused.headers["retry-after"]) >= 1
    for served in (r for r in answers if r.status_code == 200):
        assert served.json()["usage"]["completion_tokens"] == 40
    pool = gated.router.pools[MODEL]
    assert pool.queue.waiting == 0 and pool.queue.running == 0
    assert_still_serving(gated, bearer("alpha"))


async def test_the_queue_takes_keys_in_turn(gated):
    """Key A fills the batch and the queue; key B's request, sent after, leaves the queue first."""
    finished: list[str] = []
    async with httpx.AsyncClient(timeout=120) as http:
        async def one(key: str, i: int):
            r = await http.post(gated.base_url + "/completions", headers=bearer(key), json={
                "model": MODEL, "prompt": f"{key} {i}", "max_tokens": 30, "ignore_eos": True})
            assert r.status_code == 200, r.text
            finished.append(f"{key}{i}")

        queue = gated.router.pools[MODEL].queue
        burst = [asyncio.create_task(one("fair-a", i)) for i in range(3 + MAX_QUEUED - 1)]
        deadline = time.monotonic() + 30
        while queue.waiting < MAX_QUEUED - 1:
            assert time.monotonic() < deadline, "key A's burst never queued"
            await asyncio.sleep(0.005)
        late = asyncio.create_task(one("fair-b", 0))
        await asyncio.gather(*burst, late)
    # B's one request waited behind no more than one of A's queued requests.
    queued_a = [f"fair-a{i}" for i in range(3, 3 + MAX_QUEUED - 1)]
    assert finished.index("fair-b0") < finished.index(queued_a[-1]), finished


def test_the_clients_read_timeout_stops_the_work_and_frees_the_slot(gated):
    engine = gated.engine(MODEL)
    started = time.monotonic()
    r = httpx.post(gated.base_url + "/completions", headers={**bearer("alpha"), "x-stainless-read-timeout": "0.5"},
                   json={"model": MODEL, "prompt": "x", "max_tokens": 1000, "ignore_eos": True}, timeout=60)
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 5
    while engine.num_running or engine.num_waiting:
        assert time.monotonic() < deadline, "the engine kept the request's sequence"
        time.sleep(0.01)


def test_a_server_request_timeout_ends_a_stream_with_an_error_event(bundled_model_dir):
    server = ServerThread({MODEL: HFBackend(HFEngineConfig(model=str(bundled_model_dir), served_model_name=MODEL,
                                                           max_num_seqs=4, num_threads=2))})
    server.router.settings.request_timeout = 0.5
    server.start()
    try:
        with httpx.stream("POST", server.base_url + "/completions", timeout=60, json={
                "model": MODEL, "prompt": "x", "max_tokens": 1000, "ignore_eos": True, "stream": True}) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert r.status_code == 200 and lines[-1] == "data: [DONE]"
        assert '"deadline_exceeded"' in lines[-2] and len(lines) > 3
        engine = server.engine()
        deadline = time.monotonic() + 5
        while engine.num_running:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        server.stop()
