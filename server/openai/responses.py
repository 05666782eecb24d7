"""Response bodies of the OpenAI API as the handlers build them (completions.py, chat.py, models.py,
tokenize.py, server/errors.py), for the published schema: see server/response_model.py for why the
handlers do not go through these."""

from __future__ import annotations

from typing import Literal

from backends.types import FinishReason
from server.response_model import ResponseModel, absent_unless

FinishReasonValue = Literal[tuple(reason.value for reason in FinishReason)]
"""`stop` (EOS, a stop string or stop token, a finished grammar), `length`, or `abort` (cancelled)."""


class ErrorDetail(ResponseModel):
    message: str
    type: str
    """`invalid_request_error`, `not_found_error`, `server_overloaded`, `service_unavailable`,
    `internal_error`, `upstream_error` (server/errors.py `ERROR_TABLE`)."""
    param: str | None
    """The request field at fault, when there is one."""
    code: str | None
    """A finer reason: `context_length_exceeded`, `model_not_found`, `model_unavailable`, `engine_dead`,
    `request_failed`, `stream_interrupted`, or an upstream's own code."""


class ErrorResponse(ResponseModel):
    """Every error on the OpenAI routes, and the event that ends a stream failing after its start."""

    error: ErrorDetail


class PromptTokensDetails(ResponseModel):
    cached_tokens: int
    """Prompt tokens served from the prefix cache (not computed again)."""


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = absent_unless("the backend reports prefix-cache hits")


class CompletionLogprobs(ResponseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    """null for the first prompt token (with `echo`), which nothing predicts."""
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(ResponseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReasonValue | None
    """null until the choice ends (in a stream, on every chunk but its last)."""
    token_ids: list[int] = absent_unless("the request sets `return_token_ids`")


class Completion(ResponseModel):
    """POST /v1/completions without `stream`."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(ResponseModel):
    """One event of POST /v1/completions with `stream: true`. With `stream_options.include_usage` every
    chunk has `usage: null` and a last one, with no choices, has the usage."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = absent_unless("the request sets `stream_options.include_usage`")


class TopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(ResponseModel):
    content: list[TokenLogprob]


class AssistantMessage(ResponseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(ResponseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReasonValue | None
    token_ids: list[int] = absent_unless("the request sets `return_token_ids`")


class ChatCompletion(ResponseModel):
    """POST /v1/chat/completions without `stream`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(ResponseModel):
    """The first chunk of a choice has the role and empty content; later ones the new text, or nothing."""

    role: Literal["assistant"] = absent_unless("it is the choice's first chunk")
    content: str = absent_unless("the chunk adds text (its first chunk: empty text)")


class ChatChunkChoice(ResponseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: FinishReasonValue | None
    token_ids: list[int] = absent_unless("the request sets `return_token_ids` (not on a choice's first chunk)")


class ChatCompletionChunk(ResponseModel):
    """One event of POST /v1/chat/completions with `stream: true` (usage as in CompletionChunk)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = absent_unless("the request sets `stream_options.include_usage`")


class Model(ResponseModel):
    id: str
    object: Literal["model"]
    created: int
    """When the server started."""
    owned_by: str
    root: str
    """The base model (an adapter's parent; the model itself otherwise)."""
    parent: str | None
    """The base model of a LoRA adapter; null for a model."""
    max_model_len: int


class ModelList(ResponseModel):
    """GET /v1/models: every model, alias and adapter served."""

    object: Literal["list"]
    data: list[Model]


class TokenizeResponse(ResponseModel):
    """POST /tokenize in vLLM's shape."""

    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeResponse(ResponseModel):
    prompt: str
