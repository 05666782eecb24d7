"""Scripted HTTP servers on loopback for client tests: raw asyncio sockets, so every byte on the wire is
the test's choice. A subclass writes `handle`; `async with` serves it on a free port."""

from __future__ import annotations

import asyncio
import ssl


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head (through the blank line) and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head, await reader.readexactly(length)


class LoopbackServer:
    ssl_context: ssl.SSLContext | None = None
    """Set before `async with` to serve HTTPS."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.ssl_context)
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
