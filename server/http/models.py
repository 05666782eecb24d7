"""GET /v1/models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


async def list_models(request: Request):
    router = request.app.state.router
    created = request.app.state.started_at
    data = []
    entries = [(name, backend.info) for name, backend in router.backends.items()]
    entries += [(info.name, info) for backend in router.backends.values() for info in backend.adapters]
    for name, info in entries:
        data.append({
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": info.owned_by,
            "root": info.name,
            "parent": info.parent,
            "max_model_len": info.max_model_len,
        })
    return JSONResponse({"object": "list", "data": data})
