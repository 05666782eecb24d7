"""POST /v1/embeddings: its request body (types only, as server/openai/schemas.py's; the rules that name
`input` in their errors are checked by the route, server/openai/embeddings.py) and its response, for the
published schema (as server/openai/responses.py's: the handler builds plain dicts)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from backends.embeddings import MAX_INPUTS
from server.openai.schemas import schema_only
from server.response_model import ResponseModel

_ITEMS = schema_only(minItems=1, maxItems=MAX_INPUTS)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True, json_schema_extra={
        "examples": [{"model": "turnout-tiny", "input": ["The for statement", "The while statement"]}],
    })

    model: str
    """A model the server serves (GET /v1/models)."""
    input: (Annotated[str, schema_only(minLength=1)] | Annotated[list[Annotated[str, schema_only(minLength=1)]], _ITEMS]
            | Annotated[list[int], schema_only(minItems=1)]
            | Annotated[list[Annotated[list[int], schema_only(minItems=1)]], _ITEMS])
    """A text, a list of texts, one input as token ids, or a list of those: not empty, at most 2048 inputs,
    each within the model's context."""
    encoding_format: Literal["float", "base64"] = "float"
    """`base64`: each embedding as the base64 of its little-endian float32 bytes (as OpenAI's)."""
    dimensions: Annotated[int, Field(ge=1)] | None = None
    """Keep the first `dimensions` components, re-normalised; at most the model's hidden size."""
    user: str | None = None
    """Accepted and ignored (OpenAI's end-user id)."""


class Embedding(ResponseModel):
    object: Literal["embedding"]
    index: int
    """The input's position in `input`."""
    embedding: list[float] | str
    """L2-normalised: a list of floats, or its base64 with `encoding_format: base64`."""


class EmbeddingUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(ResponseModel):
    """POST /v1/embeddings: one embedding per input, in order."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
