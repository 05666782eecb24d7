"""A DNS resolver for tests (server/dns_replicas.py's Resolver): answers one name with the addresses a test
sets, so replicas on loopback addresses can come and go behind a name without /etc/hosts or a DNS server."""

from __future__ import annotations

import socket


class StubResolver:
    """Answers `name` with `addresses` (a test changes them at will); `failing`, when set, is raised as a
    DNS outage would be; any other name does not exist."""

    def __init__(self, name: str, *addresses: str):
        self.name = name
        self.addresses = list(addresses)
        self.failing: Exception | None = None
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, name: str, port: int) -> list[str]:
        self.asked.append((name, port))
        if self.failing is not None:
            raise self.failing
        if name != self.name:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.addresses)
