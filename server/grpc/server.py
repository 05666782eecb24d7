"""Start the gRPC server (turnout.v1.Generation, grpc.health.v1.Health, server reflection) on the running
event loop, beside the HTTP server, over the same router and telemetry."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from server.grpc.gen import generate_pb2 as pb
from server.grpc.handlers import add_generation_service
from server.grpc.service import GenerationService
from server.router import Router
from server.telemetry import Telemetry

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Generation"].full_name  # "turnout.v1.Generation"
HEALTH_POLL_S = 5.0


class GrpcServer:
    def __init__(self, router: Router, telemetry: Telemetry, host: str, port: int):
        if not 0 < port < 65536:
            raise ValueError(f"grpc port must be in 1..65535, got {port}")
        self.address = f"{host}:{port}"
        self.router = router
        self._health_task: asyncio.Task | None = None
        # No SO_REUSEPORT (on by default in gRPC on Linux): a port already taken must be an error.
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        add_generation_service(GenerationService(router, telemetry), self.server)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)

    async def start(self) -> None:
        try:
            self.server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot bind the gRPC server to {self.address}: {exc}") from None
        await self.server.start()
        await self._set_health()
        self._health_task = asyncio.create_task(self._poll_health())

    async def _set_health(self) -> None:
        ready = await self.router.ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):  # "" is the whole server, as grpc_health_probe asks by default
            await self.health.set(service, status)

    async def _poll_health(self) -> None:
        """Follow the backends' health (as GET /ready does), so a dead engine reads NOT_SERVING."""
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            await self._set_health()

    async def stop(self, grace: float = 5.0) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
