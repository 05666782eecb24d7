"""The gRPC Generate request's fields, validated by the same pydantic rules as /v1/completions.

The gRPC front end turns its protobuf message into a dict with the HTTP API's field names and validates
it here, so a value has the same range and gets the same error message over both protocols.
"""

from __future__ import annotations

from pydantic import model_validator

from server.openai.schemas import CompletionRequest


class GenerateFields(CompletionRequest):
    """A completion request with one prompt: text or token ids."""

    @model_validator(mode="after")
    def _one_prompt(self):
        if isinstance(self.prompt, list) and not all(isinstance(t, int) for t in self.prompt):
            raise ValueError("prompt must be text or one list of token ids")
        return self
