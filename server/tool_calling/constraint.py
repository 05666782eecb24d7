"""The JSON schema that constrains a `required` or named tool choice (SamplingParams.json_schema).

Named: the text is the function's arguments, so the schema is its `parameters`. Required: the text is an
array of calls, each {"name": <one of the functions>, "arguments": <that function's parameters>}; with
parallel_tool_calls false, exactly one. A grammar keeps the properties in the order given, so a call's name
is written (and streamed) before its arguments.
"""

from __future__ import annotations

from backends.types import ToolChoice, ToolFunction

NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}
"""A function defined without parameters takes none."""


def arguments_schema(function: ToolFunction) -> dict:
    return function.parameters if function.parameters is not None else NO_ARGUMENTS


def constraint_schema(functions: list[ToolFunction], choice: ToolChoice, parallel: bool) -> dict | None:
    """The schema the output must follow, or None when the model writes freely (auto, none)."""
    if choice.mode == "function":
        return arguments_schema(next(f for f in functions if f.name == choice.name))
    if choice.mode != "required":
        return None
    calls = [{
        "type": "object",
        "properties": {"name": {"const": f.name}, "arguments": arguments_schema(f)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for f in functions]
    array = {"type": "array", "items": calls[0] if len(calls) == 1 else {"anyOf": calls}, "minItems": 1}
    if not parallel:
        array["maxItems"] = 1
    return array
