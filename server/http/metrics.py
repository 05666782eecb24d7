"""GET /metrics: Prometheus text exposition (see server/metrics.py for the names)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from server.metrics import CONTENT_TYPE


async def metrics(request: Request):
    state = request.app.state
    await state.telemetry.metrics.refresh(state.router)
    return Response(state.telemetry.metrics.exposition(), media_type=CONTENT_TYPE)
