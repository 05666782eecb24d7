"""A model's replicas from a DNS name (server/dns_replicas.py), with a stub resolver and scripted backends:
joining, leaving without dropping what is in flight, failed resolutions and replicas that do not start;
and the config that asks for it."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from backends.errors import Unavailable
from backends.types import FinishReason, GenerateRequest, ModelInfo, OutputDelta, SamplingParams, Usage
from server.config import ConfigError, DnsReplicasConfig, RouterSettings, parse_config
from server.dns_replicas import DnsReplicaSource, url_at
from server.router import Router
from tests.inert_backend import InertBackend
from tests.stub_resolver import StubResolver

NAME = "pool.ns.svc.cluster.local"


def answering(*addresses: str) -> StubResolver:
    return StubResolver(NAME, *addresses)


class AtAddress(InertBackend):
    """The backend of one address: answers its address, once `release` is set; `closed` once closed."""

    def __init__(self, address: str, starts: bool = True):
        self.address, self.starts = address, starts
        self.release = asyncio.Event()
        self.release.set()
        self.served = 0
        self.closed = False

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("m", 2048)

    async def start(self) -> None:
        if not self.starts:
            raise RuntimeError(f"openai backend: cannot reach http://{self.address}:8000/v1")

    async def close(self) -> None:
        self.closed = True

    async def generate(self, request):
        self.served += 1
        await self.release.wait()
        yield OutputDelta(token_ids=[1], text=self.address, finish_reason=FinishReason.LENGTH, usage=Usage(1, 1))


class Fleet:
    """The backends built for each address, and a router whose model `m` takes its replicas from NAME."""

    def __init__(self, resolver: StubResolver, settings: RouterSettings | None = None):
        self.built: dict[str, list[AtAddress]] = {}
        self.unstartable: set[str] = set()
        source = DnsReplicaSource(DnsReplicasConfig(NAME, 8000, 0.01), self._backend_at, AtAddress("stand-in"))
        self.router = Router({"m": source}, settings=settings or RouterSettings(health_check_interval=0),
                             resolver=resolver)
        self.pool = self.router.pools["m"]
        self.dns = self.router.dns["m"]

    def _backend_at(self, address: str) -> AtAddress:
        backend = AtAddress(address, starts=address not in self.unstartable)
        self.built.setdefault(address, []).append(backend)
        return backend

    def backend(self, address: str) -> AtAddress:
        return self.built[address][-1]

    def names(self) -> list[str]:
        return sorted(r.name for r in self.pool.replicas)

    async def ask(self) -> str:
        request = GenerateRequest("r", "m", SamplingParams(), prompt="x", buffered=True)
        return "".join([d.text async for d in self.router.resolve("m").generate(request)])


async def test_every_address_is_a_replica_and_new_ones_join():
    resolver = answering("127.0.0.2", "127.0.0.3")
    fleet = Fleet(resolver)
    await fleet.router.start()
    try:
        assert fleet.names() == ["m/127.0.0.2:8000", "m/127.0.0.3:8000"] and resolver.asked[0] == (NAME, 8000)
        assert await fleet.router.ready()
        resolver.addresses.append("127.0.0.4")
        await fleet.dns.refresh()
        assert fleet.names() == ["m/127.0.0.2:8000", "m/127.0.0.3:8000", "m/127.0.0.4:8000"]
        assert {await fleet.ask() for _ in range(6)} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
        assert len(fleet.built["127.0.0.2"]) == 1  # a replica that stays is not rebuilt
    finally:
        await fleet.router.close()
    assert all(b.closed for backends in fleet.built.values() for b in backends)


async def test_the_refresh_loop_follows_the_name_on_its_own():
    resolver = answering("127.0.0.2")
    fleet = Fleet(resolver)
    await fleet.router.start()
    try:
        resolver.addresses = ["127.0.0.3"]
        while fleet.names() != ["m/127.0.0.3:8000"]:
            await asyncio.sleep(0.01)
    finally:
        await fleet.router.close()


async def test_a_replica_that_leaves_finishes_its_requests_and_takes_no_new_ones():
    resolver = answering("127.0.0.2", "127.0.0.3")
    fleet = Fleet(resolver)
    await fleet.router.start()
    try:
        leaving = fleet.backend("127.0.0.3")
        leaving.release.clear()
        fleet.backend("127.0.0.2").release.clear()
        held = [asyncio.create_task(fleet.ask()) for _ in range(4)]  # least outstanding: two on each
        while leaving.served < 2:
            await asyncio.sleep(0)
        resolver.addresses = ["127.0.0.2"]
        await fleet.dns.refresh()
        assert fleet.names() == ["m/127.0.0.2:8000"] and not leaving.closed  # still serving its two
        fleet.backend("127.0.0.2").release.set()
        assert [await fleet.ask() for _ in range(3)] == ["127.0.0.2"] * 3
        assert leaving.served == 2
        leaving.release.set()
        assert sorted(await asyncio.gather(*held)) == ["127.0.0.2"] * 2 + ["127.0.0.3"] * 2
        while not leaving.closed:  # closed once its last request ended
            await asyncio.sleep(0)
        resolver.addresses = ["127.0.0.2", "127.0.0.3"]  # and it may come back, as a fresh backend
        await fleet.dns.refresh()
        assert len(fleet.built["127.0.0.3"]) == 2 and fleet.names() == ["m/127.0.0.2:8000", "m/127.0.0.3:8000"]
    finally:
        await fleet.router.close()


async def test_a_failed_resolution_keeps_the_last_replicas_and_is_logged_once(caplog):
    resolver = answering("127.0.0.2", "127.0.0.3")
    fleet = Fleet(resolver)
    await fleet.router.start()
    try:
        caplog.set_level(logging.INFO, logger="server.dns_replicas")
        for failure in [socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
                        TimeoutError(), ValueError("a resolver's bug")]:
            resolver.failing = failure
            await fleet.dns.refresh()
        resolver.failing = None
        resolver.addresses = []  # an empty answer is no better
        await fleet.dns.refresh()
        assert fleet.names() == ["m/127.0.0.2:8000", "m/127.0.0.3:8000"]
        assert await fleet.ask() in ("127.0.0.2", "127.0.0.3")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "keeping its 2 replicas" in warnings[0].getMessage()
        resolver.addresses = ["127.0.0.2"]
        await fleet.dns.refresh()
        assert fleet.names() == ["m/127.0.0.2:8000"]
        assert any("resolves again" in r.getMessage() for r in caplog.records)
    finally:
        await fleet.router.close()


async def test_a_replica_that_does_not_start_is_left_out_and_tried_again(caplog):
    resolver = answering("127.0.0.2", "127.0.0.3")
    fleet = Fleet(resolver)
    fleet.unstartable.add("127.0.0.3")
    caplog.set_level(logging.WARNING, logger="server.dns_replicas")
    await fleet.router.start()
    try:
        assert fleet.names() == ["m/127.0.0.2:8000"] and fleet.backend("127.0.0.3").closed
        await fleet.dns.refresh()
        assert len([r for r in caplog.records if "did not start" in r.getMessage()]) == 1
        fleet.unstartable.clear()
        await fleet.dns.refresh()
        assert fleet.names() == ["m/127.0.0.2:8000", "m/127.0.0.3:8000"]
        assert len(fleet.built["127.0.0.3"]) == 3
    finally:
        await fleet.router.close()


async def test_a_name_that_does_not_resolve_yet_leaves_the_model_unready_not_broken():
    resolver = answering()
    fleet = Fleet(resolver)
    await fleet.router.start()
    try:
        assert fleet.pool.info.name == "m" and fleet.pool.info.max_model_len == 2048  # from the stand-in
        assert not await fleet.router.ready()
        with pytest.raises(Unavailable):
            await fleet.ask()
        resolver.addresses = ["127.0.0.2"]
        await fleet.dns.refresh()
        assert await fleet.router.ready() and await fleet.ask() == "127.0.0.2"
    finally:
        await fleet.router.close()


async def test_dns_replicas_and_prefix_affinity_keep_a_prefix_on_its_replica_as_others_join():
    resolver = answering("127.0.0.2", "127.0.0.3")
    fleet = Fleet(resolver, RouterSettings(policy="prefix_affinity", health_check_interval=0))
    await fleet.router.start()

    async def home(i: int) -> str:
        request = GenerateRequest("r", "m", SamplingParams(), prompt=f"prefix {i} " * 20, buffered=True)
        return "".join([d.text async for d in fleet.router.resolve("m").generate(request)])

    try:
        before = {i: await home(i) for i in range(60)}
        resolver.addresses.append("127.0.0.4")
        await fleet.dns.refresh()
        after = {i: await home(i) for i in range(60)}
        moved = [i for i in before if after[i] != before[i]]
        assert all(after[i] == "127.0.0.4" for i in moved) and 0 < len(moved) < 40
    finally:
        await fleet.router.close()


def test_url_at_puts_the_address_and_port_in_place_of_the_host():
    assert url_at("http://svc.ns.svc.cluster.local:8000/v1", "10.1.2.3", 8000) == "http://10.1.2.3:8000/v1"
    assert url_at("http://user@svc/v1", "10.1.2.3", 80) == "http://10.1.2.3:80/v1"
    assert url_at("http://svc:8000", "fd00::1", 9000) == "http://[fd00::1]:9000"


def test_the_config_takes_replicas_from_dns_for_remote_backends_only():
    def model(**fields):
        entry = {"name": "m", "backend": "openai", "options": {"url": "http://pool.ns.svc:8000/v1", "model": "m"}}
        return parse_config({"models": [{**entry, **fields}]}).models[0]

    assert model(replicas_from_dns={}).replicas_from_dns == DnsReplicasConfig("pool.ns.svc", 8000, 5.0)
    assert model(replicas_from_dns={"name": NAME, "port": 9000, "refresh_interval": 1}).replicas_from_dns == \
        DnsReplicasConfig(NAME, 9000, 1.0)
    assert model().replicas_from_dns is None
    for fields, message in [
        ({"replicas_from_dns": {}, "replicas": 2}, "not both"),
        ({"replicas_from_dns": {}, "backend": "hf"}, "only the openai and tgi backends"),
        ({"replicas_from_dns": {}, "options": {"url": "https://pool:8000/v1", "model": "m"}}, "http:// URL"),
        ({"replicas_from_dns": {"port": 0}}, "port must be a port number"),
        ({"replicas_from_dns": {"refresh_interval": 0}}, "refresh_interval"),
        ({"replicas_from_dns": {"every": 5}}, "unknown field"),
        ({"replicas_from_dns": "pool"}, "must be a mapping"),
    ]:
        with pytest.raises(ConfigError, match=message):
            model(**fields)


@pytest.mark.parametrize("backend, options, url", [
    ("openai", {"url": "http://pool:8000/v1", "model": "m"}, "http://127.0.0.2:8000/v1"),
    ("tgi", {"url": "http://pool:8080", "served_model_name": "m"}, "http://127.0.0.2:8080"),
])
def test_the_router_built_from_config_resolves_with_the_resolver_it_is_given(backend, options, url):
    config = parse_config({"models": [{"name": "m", "backend": backend, "replicas_from_dns": {"name": NAME},
                                       "options": options}]})
    resolver = answering("127.0.0.2")
    router = Router.from_config(config, resolver=resolver)
    assert router.dns["m"].resolver is resolver and router.pools["m"].replicas == []
    replica = router.dns["m"].source.backend_at("127.0.0.2")
    assert replica.config.url == url and {**vars(replica.config), "url": options["url"]} == vars(
        router.dns["m"].source.stand_in.config)  # the same options, but for the address
