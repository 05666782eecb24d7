"""A real turnout server (uvicorn on a free loopback port) running in a background thread, so tests
talk to it over HTTP with real clients and can still look inside its engine."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from backends.hf.backend import HFBackend
from backends.hf.config import HFEngineConfig
from server.app import build_app
from server.http.limits import HttpLimits
from server.http.transport import http_protocol, protocol_over
from server.router import Router


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_on(*hosts: str) -> int:
    """A port free on every one of `hosts` (loopback addresses: Linux routes all of 127.0.0.0/8 to lo), so
    servers on each can share it, as the pods behind one Service do."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    with socket.socket() as other:
                        other.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


class ServerThread:
    def __init__(self, backends: dict[str, HFBackend], router: Router | None = None, grpc: bool = False,
                 limits: HttpLimits | None = None, allowed_origins: tuple[str, ...] = (), parser: type | None = None,
                 host: str = "127.0.0.1", port: int | None = None):
        """`limits` and `allowed_origins`: as `turnout serve`'s flags set them (default: their defaults).
        `parser`: uvicorn's protocol class ours is built on (default: the one `http_protocol` picks).
        `host`, `port`: where it listens (default: a free port on 127.0.0.1)."""
        self.backends = backends
        self.router = router or Router(backends)
        self.host = host
        self.port = port or free_port()
        self.grpc_port = free_port() if grpc else None
        self.limits = limits or HttpLimits()
        self.app = build_app(self.router, grpc_port=self.grpc_port, limits=self.limits,
                             allowed_origins=allowed_origins)
        config = uvicorn.Config(self.app, host=host, port=self.port, log_level="warning",
                                http=protocol_over(parser, self.limits) if parser else http_protocol(self.limits),
                                timeout_keep_alive=self.limits.keep_alive_timeout)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @classmethod
    def for_model(cls, model_dir, name: str, grpc: bool = False, limits: HttpLimits | None = None,
                  host: str = "127.0.0.1", port: int | None = None, **engine_options) -> ServerThread:
        backend = HFBackend(HFEngineConfig(model=str(model_dir), served_model_name=name, **engine_options))
        return cls({name: backend}, grpc=grpc, limits=limits, host=host, port=port)

    @classmethod
    def for_router(cls, router: Router, limits: HttpLimits | None = None) -> ServerThread:
        return cls({}, router, limits=limits)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def engine(self, name: str | None = None):
        backend = self.backends[name] if name else next(iter(self.backends.values()))
        return backend.engine

    def start(self, timeout: float = 180.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def crash(self) -> None:
        """What its peers see of a crashed pod: no new connection is accepted, and every open one ends at
        once, abruptly, with no answer. (The thread lives on until `stop()`, serving nobody.)"""
        cut = threading.Event()

        def cut_all() -> None:  # on the server's own loop: its connection set changes only there
            for listening in self.server.servers:
                listening.close()
            for connection in list(self.server.server_state.connections):
                connection.transport.abort()
            cut.set()

        self.server.servers[0].get_loop().call_soon_threadsafe(cut_all)
        assert cut.wait(30), "the server's loop did not run the cut"


def wait_ready(port: int, proc, timeout: float = 120.0, log_path=None) -> None:
    """Block until a `turnout serve` child answers GET /ready; fail with its log if it dies or stalls."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log = open(log_path, errors="replace").read()[-4000:] if log_path else ""
            raise AssertionError(f"server did not become ready:\n{log}")
        time.sleep(0.2)
