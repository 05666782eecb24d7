"""The tool-calling fields of a chat request (OpenAI's shapes): function definitions, `tool_choice`, and the
calls and results in the history. Types and ranges only, as in schemas.py; what they mean for a backend is
server/tool_calling/."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator, SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TOOLS = 128
"""OpenAI's own limit on `tools`."""

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
"""OpenAI's rule for a function's name."""


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    """A JSON schema of the arguments (an object's). Absent: the function takes none."""
    strict: bool | None = None
    """Accepted; constrained calls (tool_choice required or named) follow the schema whatever it says."""

    @field_validator("parameters")
    @classmethod
    def _a_schema(cls, parameters: dict[str, Any] | None):
        if parameters is None:
            return None
        try:
            Draft202012Validator.check_schema(parameters)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        if parameters.get("type", "object") != "object":
            raise ValueError(f"a function's parameters are an object's schema, not type {parameters['type']!r}")
        return parameters


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]


class NamedToolChoice(BaseModel):
    """Force a call of this function."""

    type: Literal["function"]
    function: FunctionName


ToolChoiceField = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    name: str
    arguments: str
    """The arguments as JSON text, as the model wrote them."""


class ToolCallField(BaseModel):
    """A call an earlier assistant turn made."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall
