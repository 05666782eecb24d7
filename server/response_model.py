"""The base of the response models (server/openai/responses.py, server/tgi/responses.py): the shapes of what
the handlers return, for the published schema (server/openapi.py) only.

Handlers build their bodies as plain dicts, never through these models: validating every streamed chunk
would cost the per-token path more than everything else it does. What keeps the two in step is
tests/integration/test_openapi_schemathesis.py, which checks every response of a live server against the
published schema; unknown keys are refused here, so a key a handler adds without adding it to its model
fails there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ResponseModel(BaseModel):
    """A response body: a field with no default is always present (null only where its type says so)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def absent_unless(condition: str) -> Any:
    """A key the handler leaves out, rather than setting to null, unless `condition` holds."""
    return Field(default=None, description=f"Present only when {condition}.", json_schema_extra=_no_default)


def _no_default(schema: dict) -> None:
    # The None default is how pydantic spells "not required"; on the wire the key is missing, never null.
    schema.pop("default", None)
