"""The router's own logic (replica choice, retries, ejection, fallback, config), with scripted backends.

Scripted backends are fine here: these tests are about what the gateway does when a backend misbehaves in
a given way, not about whether a real engine works (the contract suite and the fault test do that).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.errors import (
    EngineDead,
    InvalidRequest,
    ModelNotFound,
    RequestFailed,
    StreamInterrupted,
    Unavailable,
)
from backends.types import FinishReason, GenerateRequest, ModelInfo, OutputDelta, SamplingParams, Usage
from server.config import ConfigError, RouterSettings, parse_config
from server.router import Router
from tests.inert_backend import InertBackend


class Scripted(InertBackend):
    """Yields `tokens` deltas, failing before the first (`fail_before`) or after `fail_after` of them."""

    def __init__(self, name="m", tokens=3, fail_before: Exception | None = None, fail_after: int | None = None,
                 delay: float = 0.0, healthy: bool = True):
        self.name, self.tokens, self.delay = name, tokens, delay
        self.fail_before, self.fail_after, self.healthy = fail_before, fail_after, healthy
        self.calls = 0
        self.closed_streams = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, 128)

    async def health(self) -> bool:
        return self.healthy

    async def generate(self, request):
        self.calls += 1
        try:
            if self.fail_before is not None:
                raise self.fail_before
            for i in range(self.tokens):
                if self.fail_after is not None and i == self.fail_after:
                    raise EngineDead("replica crashed")
                await asyncio.sleep(self.delay)
                last = i == self.tokens - 1
                yield OutputDelta(token_ids=[i], text=f"{self.name}{i} ",
                                  finish_reason=FinishReason.LENGTH if last else None,
                                  usage=Usage(1, self.tokens) if last else None)
        finally:
            self.closed_streams += 1


def req(buffered=False) -> GenerateRequest:
    return GenerateRequest("r", "m", SamplingParams(), prompt="x", buffered=buffered)


async def texts(router: Router, model="m", buffered=False) -> str:
    return "".join([d.text async for d in router.resolve(model).generate(req(buffered))])


async def test_a_replica_failing_before_the_first_token_is_retried_on_another():
    broken, good = Scripted("a", fail_before=EngineDead("down")), Scripted("b")
    router = Router({"m": [broken, good]}, settings=RouterSettings(policy="round_robin"))
    for _ in range(4):
        assert await texts(router) == "b0 b1 b2 "
    assert broken.calls >= 1


async def test_request_errors_are_not_retried():
    first, second = Scripted("a", fail_before=InvalidRequest("bad")), Scripted("b", fail_before=InvalidRequest("bad"))
    router = Router({"m": [first, second]})
    with pytest.raises(InvalidRequest):
        await texts(router)
    assert first.calls + second.calls == 1


@pytest.mark.parametrize("poison", [InvalidRequest("bad input"), RequestFailed("failed alone in the engine"),
                                    KeyError("a bug this request hit")], ids=type)
async def test_requests_that_fail_on_their_own_never_count_against_the_replica(poison):
    only = Scripted("a", fail_before=poison)
    router = Router({"m": [only]}, settings=RouterSettings(max_consecutive_failures=1, ejection_seconds=60))
    for _ in range(3):
        with pytest.raises((InvalidRequest, RequestFailed)):
            await texts(router)
    replica = router.pools["m"].replicas[0]
    assert replica.consecutive_failures == 0 and replica.available(time.monotonic())
    assert only.calls == 3  # never retried, never moved


async def test_a_stray_exception_is_the_requests_failure_not_a_retry():
    stray, other = Scripted("a", fail_before=ValueError("unexpected")), Scripted("b")
    router = Router({"m": [stray, other]}, settings=RouterSettings(policy="round_robin"))
    outcomes = set()
    for _ in range(4):
        try:
            outcomes.add(await texts(router))
        except RequestFailed as exc:
            assert "ValueError: unexpected" in exc.message
            outcomes.add("failed")
    assert outcomes == {"failed", "b0 b1 b2 "} and other.calls == 2


@pytest.mark.parametrize("token_ids", [{"prompt_token_ids": [1, 128]}, {"logit_bias": {128: 1.0}},
                                       {"stop_token_ids": [-1]}], ids=str)
async def test_token_ids_are_checked_against_the_vocabulary_before_any_replica(token_ids):
    class WithVocab(Scripted):
        @property
        def info(self) -> ModelInfo:
            return ModelInfo(self.name, 128, vocab_size=128)

    backend = WithVocab("a")
    router = Router({"m": [backend]})
    prompt_ids = token_ids.pop("prompt_token_ids", None)
    request = GenerateRequest("r", "m", SamplingParams(**token_ids), prompt=None if prompt_ids else "x",
                              prompt_token_ids=prompt_ids)
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        [d async for d in router.resolve("m").generate(request)]
    assert backend.calls == 0


async def test_a_stream_failing_midway_is_interrupted_not_truncated():
    router = Router({"m": [Scripted("a", tokens=5, fail_after=2)]})
    got = []
    with pytest.raises(StreamInterrupted, match="failed after the stream started"):
        async for delta in router.resolve("m").generate(req()):
            got.append(delta.text)
    assert got == ["a0 ", "a1 "]


async def test_a_buffered_request_failing_midway_is_restarted_elsewhere():
    flaky, good = Scripted("a", tokens=5, fail_after=2), Scripted("b", tokens=5)
    router = Router({"m": [flaky, good]}, settings=RouterSettings(policy="round_robin"))
    results = {await texts(router, buffered=True) for _ in range(4)}
    assert results == {"b0 b1 b2 b3 b4 "}
    assert flaky.calls >= 1


async def test_consecutive_failures_eject_a_replica_for_a_while():
    broken, good = Scripted("a", fail_before=EngineDead("down")), Scripted("b")
    router = Router({"m": [broken, good]},
                    settings=RouterSettings(policy="round_robin", max_consecutive_failures=2, ejection_seconds=60))
    for _ in range(10):
        await texts(router)
    assert broken.calls == 2, "an ejected replica still got traffic"
    assert router.replica_health()["m"] == {"m/0": False, "m/1": True}


async def test_every_replica_failing_raises_the_last_error_even_once_all_are_ejected():
    a, b = Scripted("a", fail_before=EngineDead("gpu fell off")), Scripted("b", fail_before=EngineDead("gpu fell off"))
    router = Router({"m": [a, b]}, settings=RouterSettings(max_consecutive_failures=1, ejection_seconds=60))
    with pytest.raises(EngineDead, match="gpu fell off"):
        await texts(router)
    assert router.replica_health()["m"] == {"m/0": False, "m/1": False}
    # Both are ejected, and nothing else can serve: they are tried anyway, and their own error comes back.
    with pytest.raises(EngineDead, match="gpu fell off"):
        await texts(router)
    assert (a.calls, b.calls) == (2, 2)
    assert await router.ready(), "ejected replicas that pass their health checks can still serve"


async def test_a_lone_replica_that_recovers_serves_at_once_despite_its_ejection():
    flaky = Scripted("a", fail_before=EngineDead("blip"))
    router = Router({"m": [flaky]}, settings=RouterSettings(max_consecutive_failures=2, ejection_seconds=60))
    for _ in range(2):
        with pytest.raises(EngineDead):
            await texts(router)
    assert router.replica_health()["m"] == {"m/0": False}
    flaky.fail_before = None
    assert await texts(router) == "a0 a1 a2 "
    assert router.replica_health()["m"] == {"m/0": True}, "a success ends the ejection"


async def test_ejected_replicas_are_not_tried_while_a_fallback_can_serve():
    broken, backup = Scripted("a", fail_before=EngineDead("down")), Scripted("z")
    router = Router({"m": [broken], "backup": [backup]}, fallbacks={"m": ["backup"]},
                    settings=RouterSettings(max_consecutive_failures=1, ejection_seconds=60))
    for _ in range(3):
        assert await texts(router) == "z0 z1 z2 "
    assert broken.calls == 1


async def test_no_replica_passing_its_health_check_is_a_503():
    router = Router({"m": [Scripted("a", healthy=False)]})
    await router.resolve("m").check_health()
    with pytest.raises(Unavailable, match="no healthy replica"):
        await texts(router)
    assert not await router.ready()


async def test_fallback_model_serves_when_every_replica_fails():
    router = Router({"m": [Scripted("a", fail_before=EngineDead("down"))], "backup": [Scripted("z")]},
                    fallbacks={"m": ["backup"]})
    assert await texts(router) == "z0 z1 z2 "


async def test_least_outstanding_sends_new_work_to_the_idle_replica():
    slow, fast = Scripted("a", tokens=50, delay=0.01), Scripted("b", tokens=1)
    router = Router({"m": [slow, fast]})
    pool = router.resolve("m")
    long_stream = pool.generate(req())
    await anext(long_stream)  # the first pick (a tie) goes to the first replica: one request outstanding there
    assert [r.outstanding for r in pool.replicas] == [1, 0]
    for _ in range(4):
        await texts(router)
    await long_stream.aclose()
    assert (slow.calls, fast.calls) == (1, 4)
    assert all(r.outstanding == 0 for r in pool.replicas)


async def test_closing_a_stream_closes_the_replica_stream_and_frees_the_slot():
    backend = Scripted("a", tokens=100)
    router = Router({"m": [backend]})
    pool = router.resolve("m")
    stream = pool.generate(req())
    await anext(stream)
    assert pool.replicas[0].outstanding == 1
    await stream.aclose()
    assert pool.replicas[0].outstanding == 0
    assert backend.closed_streams == 1


async def test_active_health_checks_take_an_unhealthy_replica_out_and_back():
    sick, good = Scripted("a"), Scripted("b")
    router = Router({"m": [sick, good]}, settings=RouterSettings(policy="round_robin"))
    sick.healthy = False
    await router.resolve("m").check_health()
    for _ in range(4):
        assert await texts(router) == "b0 b1 b2 "
    assert sick.calls == 0
    sick.healthy = True
    assert await router.ready()
    await asyncio.gather(*(texts(router) for _ in range(4)))
    assert sick.calls > 0


async def test_health_loop_runs_in_the_background():
    sick = Scripted("a", healthy=False)
    router = Router({"m": [sick, Scripted("b")]}, settings=RouterSettings(health_check_interval=0.05))
    await router.start()
    try:
        deadline = time.monotonic() + 5
        while router.replica_health()["m"]["m/0"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert router.replica_health()["m"] == {"m/0": False, "m/1": True}
    finally:
        await router.close()


async def test_aliases_resolve_and_unknown_models_are_404():
    router = Router({"m": Scripted("a")}, aliases={"tiny": "m"})
    assert await texts(router, "tiny") == "a0 a1 a2 "
    assert [info.name for info in router.models()] == ["m", "tiny"]
    with pytest.raises(ModelNotFound, match="Available models: m, tiny"):
        router.resolve("nope")


def test_config_file_is_checked_field_by_field():
    good = parse_config({
        "router": {"policy": "round_robin"},
        "models": [
            {"name": "a", "backend": "hf", "options": {"model": "x"}, "replicas": 2, "aliases": "tiny",
             "fallback": ["b"]},
            {"name": "b", "backend": "openai", "options": {"url": "http://h/v1"},
             "replicas": [{"url": "http://h1/v1"}, {"url": "http://h2/v1"}]},
        ],
    })
    assert [m.replica_options() for m in good.models] == [
        [{"model": "x"}, {"model": "x"}], [{"url": "http://h1/v1"}, {"url": "http://h2/v1"}]]
    assert good.models[0].aliases == ["tiny"]
    bad = [
        ({"models": [{"name": "a", "backend": "nope"}]}, "unknown backend 'nope'"),
        ({"models": [{"name": "a", "backend": "hf", "replicas": 0}]}, "replicas must be >= 1"),
        ({"models": [{"name": "a", "backend": "hf", "fallback": ["zz"]}]}, "fallback 'zz'"),
        ({"models": [{"name": "a", "backend": "hf"}, {"name": "a", "backend": "hf"}]}, "used twice"),
        ({"models": [{"name": "a", "backend": "hf", "colour": 1}]}, "unknown field"),
        ({"router": {"policy": "random"}, "models": [{"name": "a", "backend": "hf"}]}, "router.policy"),
        ({"models": []}, "no models"),
    ]
    for raw, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_config(raw)


def test_several_hf_engines_on_the_cpu_are_warned_about_by_name():
    def warning(models):
        return parse_config({"models": models}).cpu_contention_warning()

    two = warning([{"name": "a", "backend": "hf", "options": {"model": "x"}, "replicas": 2}])
    assert two is not None and "2 HF engines" in two and "a/0, a/1" in two
    mixed = warning([{"name": "a", "backend": "hf", "options": {"model": "x"}},
                     {"name": "b", "backend": "hf", "options": {"model": "y", "device": "cpu"}}])
    assert mixed is not None and "a/0, b/0" in mixed
    assert warning([{"name": "a", "backend": "hf", "options": {"model": "x"}}]) is None
    assert warning([{"name": "a", "backend": "hf", "options": {"model": "x", "device": "cuda"}, "replicas": 2}]) is None
    assert warning([{"name": "a", "backend": "openai", "options": {"url": "http://h/v1"}, "replicas": 4}]) is None
