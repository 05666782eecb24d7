"""GET /health (the process is alive and can serve: the liveness check) and GET /ready (every model is
loaded and accepting: the readiness check)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.errors import error_body


async def health(request: Request):
    """503 once an in-process engine has died for good (its step loop crashed): only a restart brings it
    back, so this is what lets an orchestrator's liveness probe restart the process. A remote upstream that
    is down does not count: restarting this process would not help it (GET /ready reports it)."""
    dead = request.app.state.router.dead_models()
    if dead:
        message = f"engine dead, restart needed: {', '.join(dead)}"
        return JSONResponse(error_body(message, "service_unavailable", code="engine_dead"), status_code=503)
    return JSONResponse({"status": "ok"})


async def ready(request: Request):
    state = request.app.state
    if state.ready and await state.router.ready():
        return JSONResponse({"status": "ready"})
    return JSONResponse(error_body("not ready", "service_unavailable"), status_code=503)
