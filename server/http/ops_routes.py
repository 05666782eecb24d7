"""The routes orchestrators and monitoring call: GET /health (liveness), GET /ready (readiness) and
GET /metrics (Prometheus text; the names are in server/metrics.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.errors import error_body
from server.metrics import CONTENT_TYPE


async def health(request: Request):
    """200 while the process can serve. 503 once an in-process engine has died for good (its step loop
    crashed): only a restart brings it back, so this is what lets an orchestrator's liveness probe restart
    the process. A remote upstream that is down does not count: restarting this process would not help it
    (GET /ready reports it)."""
    dead = request.app.state.router.dead_models()
    if dead:
        message = f"engine dead, restart needed: {', '.join(dead)}"
        return JSONResponse(error_body(message, "service_unavailable", code="engine_dead"), status_code=503)
    return JSONResponse({"status": "ok"})


async def ready(request: Request):
    """200 while every model is loaded and has a replica that passes its health checks."""
    state = request.app.state
    if state.ready and await state.router.ready():
        return JSONResponse({"status": "ready"})
    return JSONResponse(error_body("not ready", "service_unavailable"), status_code=503)


async def metrics(request: Request):
    state = request.app.state
    await state.telemetry.metrics.refresh(state.router)
    return Response(state.telemetry.metrics.exposition(), media_type=CONTENT_TYPE)
