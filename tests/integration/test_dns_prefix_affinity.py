"""The router across pods: turnout servers on 127.0.0.2, .3, .4 (one port, as the pods behind a headless
Service), and a gateway whose model takes its replicas from a DNS name that a stub resolver answers with
their addresses, placing requests with prefix_affinity.

Each replica's backend is tapped: the tap records the prompts that reach it, and holds them while closed,
so that a test can keep requests in flight on a replica for as long as it needs without any timing.
Requests are non-streamed completions (the ones the router may move to another replica at any point).
"""

from __future__ import annotations

import asyncio
import math
import threading
from contextlib import contextmanager

import httpx
import pytest

from server.config import parse_config
from server.router import Router
from tests.server_thread import ServerThread, free_port_on
from tests.stub_resolver import StubResolver

MODEL = "turnout-tiny"
NAME = "turnout-pool.test.svc.cluster.local"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
SPARE = "127.0.0.5"  # a replica of its own for the test that kills one


class Tap:
    """Wraps one replica's backend.generate: records each prompt that reaches it, holds it while closed."""

    def __init__(self, backend):
        self.prompts: list[str] = []
        self.open = threading.Event()
        self.open.set()
        inner = backend.generate

        async def generate(request):
            self.prompts.append(request.prompt)
            while not self.open.is_set():  # the replica's own event loop: a threading.Event cannot be awaited
                await asyncio.sleep(0.005)
            async for delta in inner(request):
                yield delta

        backend.generate = generate


def start_replica(model_dir, host: str, port: int) -> tuple[ServerThread, Tap]:
    server = ServerThread.for_model(model_dir, MODEL, host=host, port=port, max_num_seqs=32, num_threads=1)
    tap = Tap(server.backends[MODEL])
    return server.start(), tap


@pytest.fixture(scope="module")
def fleet(bundled_model_dir):
    """{host: Tap} of three replicas listening on one port, and that port."""
    port = free_port_on(*HOSTS, SPARE)
    started = [start_replica(bundled_model_dir, host, port) for host in HOSTS]
    yield {host: tap for host, (_, tap) in zip(HOSTS, started, strict=True)}, port
    for server, _ in started:
        server.stop()


@pytest.fixture
def taps(fleet):
    taps, _ = fleet
    for tap in taps.values():
        tap.prompts.clear()
        tap.open.set()
    return taps


@contextmanager
def gateway(resolver: StubResolver, port: int):
    config = parse_config({
        "router": {"policy": "prefix_affinity", "affinity_prefix_tokens": 16},  # 64 characters
        "models": [{"name": MODEL, "backend": "openai",
                    "options": {"url": f"http://{NAME}:{port}/v1", "model": MODEL},
                    "replicas_from_dns": {"refresh_interval": 0.05}}],
    })
    server = ServerThread.for_router(Router.from_config(config, resolver=resolver)).start()
    try:
        yield server
    finally:
        server.stop()


def prefix(i: int) -> str:
    return f"Document {i:03d}. You answer questions about this document only. ".ljust(64, "-")


def home_of(taps: dict[str, Tap], prompt: str) -> set[str]:
    return {host for host, tap in taps.items() if prompt in tap.prompts}


async def complete(http: httpx.AsyncClient, gw: ServerThread, prompt: str) -> httpx.Response:
    return await http.post(f"{gw.base_url}/completions",
                           json={"model": MODEL, "prompt": prompt, "max_tokens": 1, "temperature": 0})


async def wait_until(condition, what: str) -> None:
    """Poll `condition` (no timing is asserted: the test's own timeout bounds the wait)."""
    while not condition():
        await asyncio.sleep(0.01)
    assert condition(), what


def pool(gw: ServerThread):
    return gw.router.pools[MODEL]


def closing_spy(backend) -> threading.Event:
    """Set once `backend` is closed."""
    closed = threading.Event()
    inner = backend.close

    async def close() -> None:
        closed.set()
        await inner()

    backend.close = close
    return closed


async def test_requests_sharing_a_prefix_stay_on_one_replica(fleet, taps):
    _, port = fleet
    with gateway(StubResolver(NAME, *HOSTS), port) as gw:
        async with httpx.AsyncClient(timeout=60) as http:
            for i in range(12):
                for suffix in ("What is it about?", "Who wrote it?", "Summarise it in one line."):
                    response = await complete(http, gw, prefix(i) + suffix)
                    assert response.status_code == 200, response.text
        homes = {}
        for i in range(12):
            seen = set().union(*(home_of(taps, prefix(i) + s)
                                 for s in ("What is it about?", "Who wrote it?", "Summarise it in one line.")))
            assert len(seen) == 1, (i, seen)
            homes[i] = seen.pop()
        assert len(set(homes.values())) >= 2  # the prefixes spread over the replicas


async def test_a_hot_prefix_is_spread_and_no_replica_passes_the_bound(fleet, taps):
    _, port = fleet
    with gateway(StubResolver(NAME, *HOSTS), port) as gw:
        for tap in taps.values():
            tap.open.clear()
        async with httpx.AsyncClient(timeout=60) as http:
            calls = [asyncio.create_task(complete(http, gw, prefix(0) + f"question {i}")) for i in range(24)]
            await wait_until(lambda: sum(len(t.prompts) for t in taps.values()) == 24, "all 24 reach a replica")
            in_flight = {r.name: r.outstanding for r in pool(gw).replicas}
            for tap in taps.values():
                tap.open.set()
            responses = await asyncio.gather(*calls)
        assert all(r.status_code == 200 for r in responses)
        assert sum(in_flight.values()) == 24
        assert max(in_flight.values()) <= math.ceil(1.25 * 24 / 3), in_flight
        assert all(len(tap.prompts) > 0 for tap in taps.values())  # 10 + 10 < 24: all three took some


async def test_a_replica_that_appears_joins_and_takes_only_prefixes_that_move_to_it(fleet, taps):
    _, port = fleet
    resolver = StubResolver(NAME, *HOSTS[:2])
    with gateway(resolver, port) as gw:
        async with httpx.AsyncClient(timeout=60) as http:
            async def homes(tag: str) -> dict[int, str]:
                found = {}
                for i in range(30):
                    prompt = prefix(i) + tag
                    assert (await complete(http, gw, prompt)).status_code == 200
                    (found[i],) = home_of(taps, prompt)
                return found

            before = await homes("before")
            assert set(before.values()) <= set(HOSTS[:2])
            resolver.addresses.append(HOSTS[2])
            await wait_until(lambda: len(pool(gw).replicas) == 3, "the new replica joins")
            after = await homes("after")
        moved = {i for i in before if after[i] != before[i]}
        assert moved and all(after[i] == HOSTS[2] for i in moved)  # the rest kept their replica


async def test_a_replica_removed_mid_load_finishes_its_requests_and_takes_no_new_ones(fleet, taps):
    _, port = fleet
    resolver = StubResolver(NAME, *HOSTS)
    leaving = taps[HOSTS[1]]
    with gateway(resolver, port) as gw:
        leaving.open.clear()
        replica = next(r for r in pool(gw).replicas if HOSTS[1] in r.name)
        closed = closing_spy(replica.backend)
        async with httpx.AsyncClient(timeout=60) as http:
            async def worker(w: int) -> list[httpx.Response]:
                return [await complete(http, gw, prefix(w * 5 + j) + "question") for j in range(5)]

            workers = [asyncio.create_task(worker(w)) for w in range(8)]  # each has one request in flight
            await wait_until(lambda: len(leaving.prompts) >= 2, "some requests are in flight on it")
            resolver.addresses.remove(HOSTS[1])
            await wait_until(lambda: replica not in pool(gw).replicas, "the gateway retires it")
            held = replica.outstanding  # constant from here: none of its requests can end, none can join
            await wait_until(lambda: len(leaving.prompts) == held, "what was sent to it arrives")
            await wait_until(lambda: sum(w.done() for w in workers) == 8 - held, "the other workers finish")
            assert not closed.is_set()  # it is still open, serving what it holds
            leaving.open.set()  # its requests end; their workers go on, on the other replicas
            responses = [r for batch in await asyncio.gather(*workers) for r in batch]
        assert len(leaving.prompts) == held  # nothing new reached it after it left
        assert len(responses) == 40 and all(r.status_code == 200 for r in responses)
        await wait_until(closed.is_set, "its backend closes once its requests have ended")


async def test_a_replica_that_dies_mid_load_costs_no_non_streamed_request(fleet, taps, bundled_model_dir):
    _, port = fleet
    dying_server, dying = start_replica(bundled_model_dir, SPARE, port)
    resolver = StubResolver(NAME, HOSTS[0], SPARE)
    try:
        with gateway(resolver, port) as gw:
            dying.open.clear()
            async with httpx.AsyncClient(timeout=60) as http:
                async def worker(w: int) -> list[httpx.Response]:
                    return [await complete(http, gw, prefix(w * 4 + j) + "question") for j in range(4)]

                load = asyncio.gather(*(worker(w) for w in range(6)))
                await wait_until(lambda: len(dying.prompts) >= 2, "some requests are in flight on it")
                cut = list(dying.prompts)
                dying_server.crash()  # the pod crashes with those requests in flight...
                resolver.addresses.remove(SPARE)  # ...and Kubernetes takes it out of the Service
                responses = [r for batch in await load for r in batch]
    finally:
        dying.open.set()  # what it held ends, talking to nobody, so that it can stop
        dying_server.stop()
    assert len(responses) == 24
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    # It answered nothing (held until the load was over), so the survivor served all 24 once each: the ones
    # cut on the dying replica again.
    assert sorted(taps[HOSTS[0]].prompts) == sorted(prefix(i) + "question" for i in range(24))
    assert set(cut) <= set(taps[HOSTS[0]].prompts)
