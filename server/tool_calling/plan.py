"""What a chat request's tools mean for the backend serving it (backends.types.ToolSupport).

GRAMMAR (a local tokenizer: the HF engine, vLLM in process): the template renders the tools; `required`
and named choices get a constraint (constraint.py), so every call parses and follows its schema; a
reader per choice (readers.py) turns the text into calls. UPSTREAM: everything goes to the remote server.
NONE: a request with tools, or with calls in its history, is refused with a 400 naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.errors import InvalidRequest
from backends.types import ToolChoice, ToolFunction, ToolSupport
from server.tool_calling.constraint import constraint_schema
from server.tool_calling.readers import ArrayCallReader, NamedCallReader, TaggedCallReader

NO_TOOLS = ToolChoice("none")


@dataclass(frozen=True)
class ToolPlan:
    functions: list[ToolFunction]
    choice: ToolChoice
    parallel: bool
    support: ToolSupport

    @property
    def calls_possible(self) -> bool:
        return bool(self.functions) and self.choice.mode != "none"

    @property
    def reads_text(self) -> bool:
        """The front end reads the calls out of the generated text (else the backend sends them, or none)."""
        return self.support is ToolSupport.GRAMMAR and self.calls_possible

    def constraint(self) -> dict | None:
        if not self.reads_text:
            return None
        return constraint_schema(self.functions, self.choice, self.parallel)

    def reader(self):
        """A fresh reader for one choice's text (None when the text is plain content)."""
        if not self.reads_text:
            return None
        if self.choice.mode == "function":
            return NamedCallReader(self.choice.name)
        if self.choice.mode == "required":
            return ArrayCallReader()
        return TaggedCallReader({f.name for f in self.functions}, self.parallel)

    def template_tools(self) -> list[dict] | None:
        return template_tools(self.functions)


def template_tools(functions: list[ToolFunction]) -> list[dict] | None:
    """The tools in OpenAI's shape, as chat templates take them (None: there are none)."""
    if not functions:
        return None
    out = []
    for f in functions:
        function: dict = {"name": f.name}
        if f.description is not None:
            function["description"] = f.description
        if f.parameters is not None:
            function["parameters"] = f.parameters
        out.append({"type": "function", "function": function})
    return out


def tool_plan(functions: list[ToolFunction], choice: ToolChoice, parallel: bool, support: ToolSupport,
              model: str, history_has_calls: bool) -> ToolPlan:
    if support is ToolSupport.NONE:
        if functions:
            raise InvalidRequest(f"the model `{model}` cannot call tools: its backend does not support "
                                 "`tools` (serve it with the hf, vllm or openai backend to call them)",
                                 param="tools")
        if history_has_calls:
            raise InvalidRequest(f"the model `{model}` cannot call tools, so its conversation cannot hold tool "
                                 "calls or tool messages", param="messages")
    return ToolPlan(functions, choice if functions else NO_TOOLS, parallel, support)
