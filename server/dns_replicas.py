"""A model's replicas from a DNS name: every A record is a replica (a Kubernetes headless Service answers
with one per ready pod), and the name is resolved again every `refresh_interval` seconds.

An address that appears joins the pool once its backend has started (the openai backend checks that the
server there serves the model; one that fails to start is tried again at the next resolution). An address
that disappears is retired: it takes no new request, and its backend closes when the requests it has in
flight have ended (server/pool.py), so a pod leaving the Service drops nothing. (Kubernetes takes a pod
out of the Service's answers as it signals it: a preStop pause longer than refresh_interval plus the DNS
TTL keeps it taking requests until the gateway has seen it go, and the server's drain then finishes what
it has.) A pod that dies outright costs what any failed replica does: buffered requests move to another
replica, a stream already started ends with an error event.

A resolution that fails (the DNS server down, the name gone, no address at all) keeps the replicas last
known and is logged once until the name resolves again: dropping every replica on a DNS hiccup would fail
every request, while keeping replicas that are really gone costs only their own requests' retries, and
ejection moves traffic off them. Resolution runs on asyncio's thread pool (getaddrinfo blocks), never on
the event loop, and the resolver is a parameter, so tests answer the name themselves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from backends.base import Backend
from server.config import DnsReplicasConfig
from server.pool import ModelPool, Replica

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(name, port) -> the name's IPv4 addresses; raises (OSError, usually) when the name does not resolve."""

RESOLVE_TIMEOUT_S = 10.0
"""A resolution slower than this counts as failed (glibc's own default gives up after 2 x 5 s)."""


async def resolve_ipv4(name: str, port: int) -> list[str]:
    """The system resolver's A records for `name` (getaddrinfo, on asyncio's default thread pool)."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def url_at(url: str, address: str, port: int) -> str:
    """`url` with its host and port replaced by one replica's address and port."""
    host = f"[{address}]" if ":" in address else address
    return urlunsplit(urlsplit(url)._replace(netloc=f"{host}:{port}"))


@dataclass(frozen=True)
class DnsReplicaSource:
    """What a model whose replicas come from DNS is built from (Router's `backends` takes one of these in
    place of a list of backends)."""

    config: DnsReplicasConfig
    backend_at: Callable[[str], Backend]
    """The (unstarted) backend of the replica at one address."""
    stand_in: Backend
    """An unstarted backend of the model's own options: its `info` names the model until a replica joins."""


class DnsReplicas:
    """Keeps one pool's replicas in step with its DNS name: `refresh()` once, `run()` for ever."""

    def __init__(self, pool: ModelPool, source: DnsReplicaSource, resolver: Resolver | None = None):
        self.pool, self.source = pool, source
        self.resolver = resolver or resolve_ipv4
        self.by_address: dict[str, Replica] = {}
        self._resolving_fails = False  # logged once per run of failures
        self._unstartable: set[str] = set()  # addresses whose failure to start was logged

    @property
    def _name(self) -> str:
        return self.source.config.name

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.source.config.refresh_interval)
            try:
                await self.refresh()
            except Exception:  # a bug in one round must not stop the refreshes for good
                logger.exception("model %r: refreshing the replicas of %s failed", self.pool.name, self._name)

    async def refresh(self) -> None:
        """Resolve the name once; retire the replicas whose address is gone, start and add the new ones."""
        addresses = await self._resolve()
        if addresses is None:
            return
        for address in sorted(set(self.by_address) - addresses):
            replica = self.by_address.pop(address)
            logger.info("model %r: %s left %s; it takes no new requests and closes after its %d in flight",
                        self.pool.name, replica.name, self._name, replica.outstanding)
            self.pool.retire(replica)
        self._unstartable &= addresses
        await asyncio.gather(*(self._join(a) for a in sorted(addresses - set(self.by_address))))

    async def _resolve(self) -> set[str] | None:
        """The name's addresses, or None when it did not resolve (logged once until it does again)."""
        config = self.source.config
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                answer = await self.resolver(config.name, config.port)
            addresses = {a for a in answer if _is_ip(a)}
            if not addresses:
                raise OSError(f"no address in the answer {answer!r}")
        except Exception as exc:  # whatever the resolver raised: the last known replicas stay
            if not self._resolving_fails:
                logger.warning("model %r: resolving %s failed (%s: %s); keeping its %d replicas until it "
                               "resolves again", self.pool.name, config.name, type(exc).__name__, exc,
                               len(self.by_address))
            self._resolving_fails = True
            return None
        if self._resolving_fails:
            logger.info("model %r: %s resolves again", self.pool.name, config.name)
            self._resolving_fails = False
        return addresses

    async def _join(self, address: str) -> None:
        name = f"{self.pool.name}/{address}:{self.source.config.port}"
        backend: Backend | None = None
        try:
            backend = self.source.backend_at(address)
            await backend.start()
        except Exception as exc:
            if address not in self._unstartable:  # tried again at each resolution; said once
                logger.warning("model %r: replica %s did not start (%s: %s); trying again while %s lists it",
                               self.pool.name, name, type(exc).__name__, exc, self._name)
            self._unstartable.add(address)
            if backend is not None:
                await _close_quietly(backend)
            return
        except BaseException:  # cancelled (the router is closing): leave nothing open behind
            if backend is not None:
                await _close_quietly(backend)
            raise
        self._unstartable.discard(address)
        self.by_address[address] = self.pool.add_replica(name, backend)
        logger.info("model %r: replica %s joined", self.pool.name, name)


def _is_ip(address: object) -> bool:
    if not isinstance(address, str):
        return False
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


async def _close_quietly(backend: Backend) -> None:
    try:
        await backend.close()
    except Exception:
        logger.exception("closing a replica that did not start failed")
