"""The prefix_affinity policy in the pool: affinity, its load bound under a hot prefix, retries, sessions, and
the other policies untouched; with backends that hold their requests until told to finish."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from backends.errors import EngineDead
from backends.types import FinishReason, GenerateRequest, ModelInfo, OutputDelta, SamplingParams, Usage
from server.config import ConfigError, RouterSettings, parse_config
from server.router import Router
from tests.inert_backend import InertBackend

AFFINITY = RouterSettings(policy="prefix_affinity", affinity_prefix_tokens=8)  # 32 characters of text


class Held(InertBackend):
    """Answers one token, once `release` is set; records the prompts it got."""

    def __init__(self, name: str, fail: bool = False):
        self.name, self.fail = name, fail
        self.prompts: list[str] = []
        self.release = asyncio.Event()
        self.release.set()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("m", 128)

    async def generate(self, request):
        if self.fail:
            raise EngineDead("down")
        self.prompts.append(request.prompt)
        await self.release.wait()
        yield OutputDelta(token_ids=[1], text=self.name, finish_reason=FinishReason.LENGTH, usage=Usage(1, 1))


def request(prompt: str, session: str | None = None) -> GenerateRequest:
    return GenerateRequest("r", "m", SamplingParams(), prompt=prompt, session=session, buffered=True)


async def served_by(router: Router, prompt: str, session: str | None = None) -> str:
    return "".join([d.text async for d in router.resolve("m").generate(request(prompt, session))])


def prefix(i: int) -> str:
    return f"system prompt number {i:03d} ".ljust(32, ".")


async def test_requests_sharing_a_prefix_go_to_one_replica():
    backends = [Held(n) for n in "abc"]
    router = Router({"m": backends}, settings=AFFINITY)
    homes = {}
    for i in range(12):
        for suffix in ("first question", "second", "a third, longer question"):
            homes.setdefault(i, set()).add(await served_by(router, prefix(i) + suffix))
    assert all(len(replicas) == 1 for replicas in homes.values()), homes
    assert len({next(iter(r)) for r in homes.values()}) == 3  # and the prefixes use every replica


async def test_a_hot_prefix_spreads_within_the_bound():
    backends = [Held(n) for n in "abc"]
    for b in backends:
        b.release.clear()
    router = Router({"m": backends}, settings=AFFINITY)
    pool = router.pools["m"]
    tasks = []
    peak: Counter = Counter()
    for i in range(24):
        tasks.append(asyncio.create_task(served_by(router, prefix(0) + f"question {i}")))
        while sum(r.outstanding for r in pool.replicas) < i + 1:  # it reached its replica: place the next
            await asyncio.sleep(0)
        for r in pool.replicas:
            peak[r.name] = max(peak[r.name], r.outstanding)
        assert max(r.outstanding for r in pool.replicas) <= math.ceil(1.25 * (i + 1) / 3)
    for b in backends:
        b.release.set()
    served = Counter(await asyncio.gather(*tasks))
    assert sum(served.values()) == 24 and max(peak.values()) <= math.ceil(1.25 * 24 / 3)
    assert len(served) == 3  # the one prefix used every replica once its own was full


async def test_a_session_keeps_its_replica_whatever_the_prompt():
    router = Router({"m": [Held(n) for n in "abcd"]}, settings=AFFINITY)
    for session in ("alice", "bob", "carol"):
        assert len({await served_by(router, prefix(i), session) for i in range(8)}) == 1


async def test_a_failing_home_replica_moves_the_request_to_the_next_one():
    a, b, c = Held("a"), Held("b"), Held("c")
    router = Router({"m": [a, b, c]}, settings=AFFINITY)
    home = await served_by(router, prefix(5))
    {"a": a, "b": b, "c": c}[home].fail = True
    moved = await served_by(router, prefix(5))
    assert moved != home and await served_by(router, prefix(5) + "more") == moved


async def test_the_front_ends_pass_the_session_header(monkeypatch):
    from starlette.testclient import TestClient

    from server.app import build_app

    seen = []

    class Recording(Held):
        async def generate(self, request):
            seen.append(request.session)
            async for delta in super().generate(request):
                yield delta

    router = Router({"m": Recording("a")}, settings=RouterSettings(policy="prefix_affinity",
                                                                    affinity_session_header="x-conversation"))
    with TestClient(build_app(router)) as http:
        for path, body in [("/v1/completions", {"model": "m", "prompt": "hi", "max_tokens": 1}),
                           ("/v1/chat/completions", {"model": "m", "max_tokens": 1,
                                                     "messages": [{"role": "user", "content": "hi"}]}),
                           ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 1}})]:
            assert http.post(path, json=body, headers={"x-conversation": "c-42"}).status_code == 200, path
            assert http.post(path, json=body).status_code == 200, path
    assert seen == ["c-42", None] * 3


@pytest.mark.parametrize("policy", ["least_outstanding", "round_robin"])
async def test_the_other_policies_ignore_prefixes(policy):
    router = Router({"m": [Held(n) for n in "abc"]}, settings=RouterSettings(policy=policy))
    assert {await served_by(router, prefix(0)) for _ in range(6)} == {"a", "b", "c"}


def test_the_affinity_settings_are_checked():
    def router(**fields):
        return parse_config({"router": fields, "models": [{"name": "a", "backend": "hf"}]}).router

    settings = router(policy="prefix_affinity", affinity_prefix_tokens=64, affinity_load_factor=2,
                      affinity_session_header="")
    assert (settings.policy, settings.affinity_prefix_tokens, settings.affinity_load_factor) == ("prefix_affinity", 64, 2)
    for fields, message in [({"affinity_prefix_tokens": 0}, "affinity_prefix_tokens"),
                            ({"affinity_prefix_tokens": 1.5}, "affinity_prefix_tokens"),
                            ({"affinity_load_factor": 0.9}, "affinity_load_factor"),
                            ({"affinity_load_factor": True}, "affinity_load_factor"),
                            ({"affinity_session_header": 7}, "affinity_session_header"),
                            ({"policy": "prefix"}, "prefix_affinity")]:
        with pytest.raises(ConfigError, match=message):
            router(**fields)
