"""Response bodies of TGI's native API as the handlers build them (routes.py, convert.py, server/errors.py),
after text-generation-inference's `router/src/lib.rs`, for the published schema: see
server/response_model.py for why the handlers do not go through these."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, RootModel

from server.response_model import ResponseModel, absent_unless

FinishReason = Literal["length", "eos_token", "stop_sequence"]


class ErrorResponse(ResponseModel):
    """Every error on TGI's routes, and the event that ends a stream failing after its start."""

    error: str
    error_type: str
    """`validation` (422), `overloaded` (429), `generation` (424), as TGI has them; routing's errors by their
    status (`method_not_allowed`)."""


class Token(ResponseModel):
    id: int
    text: str
    """The text this token adds (the texts of non-special tokens add up to `generated_text`); a special
    token's own spelling."""
    logprob: float | None
    special: bool


class PrefillToken(ResponseModel):
    id: int
    text: str
    logprob: float | None
    """null for the first prompt token, which nothing predicts."""


class BestOfSequence(ResponseModel):
    generated_text: str
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken]
    tokens: list[Token]
    top_tokens: list[list[Token]] = absent_unless("the request sets `top_n_tokens`")


class Details(ResponseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    """The seed that reproduces a sampled answer; null when decoding greedily."""
    prefill: list[PrefillToken]
    """The prompt's tokens, with `decoder_input_details`."""
    tokens: list[Token]
    top_tokens: list[list[Token]] = absent_unless("the request sets `top_n_tokens`")
    best_of_sequences: list[BestOfSequence] = absent_unless("`best_of` > 1: the other candidates, best first")


class GenerateResponse(ResponseModel):
    """POST /generate."""

    generated_text: str
    details: Details = absent_unless("the request sets `details` or `decoder_input_details`")


class CompatGenerateResponse(RootModel[Annotated[list[GenerateResponse], Field(min_length=1, max_length=1)]]):
    """POST / without `stream`: a list holding the one answer."""


class StreamDetails(ResponseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    input_length: int


class StreamResponse(ResponseModel):
    """One event of POST /generate_stream (and of POST / with `stream: true`), one per token."""

    index: int
    token: Token
    top_tokens: list[Token] = absent_unless("the request sets `top_n_tokens`")
    generated_text: str | None
    """The whole text, on the last event only."""
    details: StreamDetails | None
    """On the last event, when the request sets `details`."""


class Info(ResponseModel):
    """GET /info: the default model (a TGI server serves one)."""

    model_id: str
    model_sha: str | None
    model_pipeline_tag: str
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    validation_workers: int
    max_client_batch_size: int
    router: str
    version: str
    sha: str | None
    docker_label: str | None


class SimpleToken(ResponseModel):
    id: int
    text: str
    start: int
    """Character offsets of the token's text in `inputs`."""
    stop: int


class TokenizeResponse(RootModel[list[SimpleToken]]):
    """POST /tokenize in TGI's shape."""
