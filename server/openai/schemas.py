"""Request bodies of the OpenAI API, as pydantic models: types and ranges only.

Conversion to core types lives in server/openai/convert.py; nothing here imports a backend. Fields outside
OpenAI's API (top_k, min_p, repetition_penalty, use_beam_search, ...) are the ones vLLM accepts through
`extra_body`, with the same names. Unknown fields are ignored, as OpenAI's own API does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.openai.tool_schemas import MAX_TOOLS, ToolCallField, ToolChoiceField, ToolDefinition

MAX_STOP_SEQUENCES = 16
MAX_N = 16


def schema_only(**keywords: Any) -> Any:
    """A rule that a validator below (or convert.py) checks, with a message that quotes the bad value, shown
    in the published schema (GET /openapi.json) too."""
    return Field(json_schema_extra=keywords)


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    name: str = "schema"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True, json_schema_extra={
        "if": {"properties": {"type": {"const": "json_schema"}}},
        "then": {"required": ["json_schema"], "properties": {"json_schema": {"type": "object"}}},
    })

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    value: dict[str, Any] | None = None
    """TGI's chat API puts a schema here, with type json_object (huggingface_hub's chat_completion sends
    OpenAI's json_schema that way)."""

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        return self


class SamplingFields(BaseModel):
    """Decoding fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    model: str
    """A model, alias or LoRA adapter the server serves (GET /v1/models)."""
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]],
                          schema_only(propertyNames={"pattern": "^[0-9]+$"})] | None = None
    """Token id (in decimal) -> bias added to its logit."""
    seed: int | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    """json_object / json_schema: constrained decoding (on /v1/completions too, as vLLM has it)."""
    # Extra parameters (vLLM names), passed by the openai client through `extra_body`.
    top_k: Annotated[int, Field(ge=-1)] | None = None
    """0 or -1: no top-k filter."""
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    typical_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0
    min_tokens: Annotated[int, Field(ge=0)] = 0
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    use_beam_search: bool = False
    beam_width: Annotated[int, Field(ge=1, le=MAX_N)] | None = None
    length_penalty: Annotated[float, Field(ge=-10.0, le=10.0)] = 1.0
    """Beam search scores a hypothesis as its logprob sum / length ** length_penalty (transformers'); bounded
    so that the power stays a number for any context length (1e300 overflowed it: a 500)."""
    early_stopping: bool = False
    return_token_ids: bool = False
    """vLLM's extension: each choice (and each streamed chunk) also carries its generated `token_ids`."""

    @model_validator(mode="after")
    def _check_common(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if self.beam_width is not None and self.beam_width < self.n:
            raise ValueError(f"beam_width ({self.beam_width}) must be >= n ({self.n})")
        return self


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{"model": "turnout-tiny", "prompt": "def fibonacci(n):", "max_tokens": 16}],
    })

    prompt: (str | Annotated[list[str], schema_only(minItems=1)] | Annotated[list[int], schema_only(minItems=1)]
             | Annotated[list[list[int]], schema_only(minItems=1)])
    """A text, a list of texts, one prompt as token ids, or a list of those."""
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    best_of: Annotated[int, Field(ge=1, le=MAX_N)] | None = None
    """Candidates generated per prompt (>= n), of which the n most likely are returned; not streamed."""
    suffix: Annotated[str, schema_only(maxLength=0)] | None = None
    """Not supported: only empty or null is accepted."""

    @model_validator(mode="after")
    def _check(self):
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be an empty list")
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) must be >= n ({self.n})")
        if self.suffix:
            raise ValueError("suffix is not supported")
        if self.stream and self.best_of is not None and self.best_of > self.n:
            raise ValueError("best_of > n cannot be streamed: the best choices are known only at the end")
        return self

    def prompts(self) -> list[str] | list[list[int]]:
        """The prompt(s) as a list: of strings, or of token-id lists."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [self.prompt]  # one prompt given as token ids
        return list(self.prompt)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallField] | None = None
    """An assistant turn's calls."""
    tool_call_id: str | None = None
    """A tool turn's answer to the call with this id."""

    @model_validator(mode="after")
    def _tool_fields(self):
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls, not {self.role!r} ones")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{"model": "turnout-tiny", "messages": [{"role": "user", "content": "What does zip do?"}],
                      "max_tokens": 32}],
    })

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    """Functions the model may call (server/tool_calling/ says how each backend serves them)."""
    tool_choice: ToolChoiceField | None = None
    """Default: "auto" when there are tools, else "none"."""
    parallel_tool_calls: bool = True
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _check(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self


class TokenizeRequest(BaseModel):
    """POST /tokenize in vLLM's shape: exactly one of `prompt` or `messages`."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True, json_schema_extra={
        "examples": [{"model": "turnout-tiny", "prompt": "import os"}],
    })

    model: str | None = None
    """Default: the first model served."""
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    """With `messages`: the tools the chat template lists (as on /v1/chat/completions)."""
    add_special_tokens: bool = True
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True, json_schema_extra={
        "examples": [{"model": "turnout-tiny", "tokens": [1, 2, 3]}],
    })

    model: str | None = None
    """Default: the first model served."""
    tokens: list[int]
