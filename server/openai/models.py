"""GET /v1/models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.http.auth_middleware import key_of


async def list_models(request: Request):
    router = request.app.state.router
    created = request.app.state.started_at
    data = []
    for info in router.models(key_of(request)):
        data.append({
            "id": info.name,
            "object": "model",
            "created": created,
            "owned_by": info.owned_by,
            "root": info.parent or info.name,
            "parent": info.parent,
            "max_model_len": info.max_model_len,
        })
    return JSONResponse({"object": "list", "data": data})
