"""GET /health (the process is alive) and GET /ready (every model is loaded and accepting)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.errors import error_body


async def health(request: Request):
    return JSONResponse({"status": "ok"})


async def ready(request: Request):
    state = request.app.state
    if state.ready and await state.router.ready():
        return JSONResponse({"status": "ready"})
    return JSONResponse(error_body("not ready", "service_unavailable"), status_code=503)
