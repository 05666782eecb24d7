"""Core types: the only vocabulary shared by the front ends, the router and the backends.

A front end (OpenAI HTTP, TGI HTTP, gRPC) turns its wire request into a `GenerateRequest`; a backend
turns that into tokens and yields `OutputDelta`s; the front end encodes those back onto the wire.
Nothing here knows about HTTP, pydantic or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ToolSupport(StrEnum):
    """How a backend serves `tools` on chat requests."""

    NONE = "none"
    """It cannot: a chat request with tools is a 400 naming `tools`."""
    GRAMMAR = "grammar"
    """The front end does it over a local tokenizer: it renders the tools with the chat template, constrains
    `required` and named choices with `SamplingParams.json_schema`, and reads the calls out of the text. The
    backend sees an ordinary request."""
    UPSTREAM = "upstream"
    """A remote server does it: `GenerateRequest.tools` and the messages go to it as they are, and its
    calls come back in `OutputDelta.tool_calls`."""


@dataclass(slots=True, frozen=True)
class ToolFunction:
    """A function a model may call: its name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str | None = None
    parameters: dict | None = None
    """A JSON schema (an object's); None: the function takes no arguments."""


@dataclass(slots=True, frozen=True)
class ToolChoice:
    mode: str = "auto"
    """"none" (answer in text), "auto" (text or calls, as the model likes), "required" (one call or more)
    or "function" (a call of `name`)."""
    name: str | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of one tool call, in OpenAI's streaming shape: the first piece of call `index` has its `id`
    and `name`; later ones only add `arguments` text (the call's arguments are their concatenation)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class FinishReason(StrEnum):
    STOP = "stop"  # end-of-sequence token, a stop token id or a stop string
    LENGTH = "length"  # max_tokens reached or the context is full
    ABORT = "abort"  # the client went away or the request was cancelled


GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass(slots=True)
class SamplingParams:
    """Every decoding knob a request can turn. Defaults mean "plain greedy-or-sampled, no filters".

    Validation of ranges lives in the front ends (they own the error messages a user sees);
    `validate()` re-checks the invariants a backend relies on, for callers that build these directly.
    """

    max_tokens: int | None = 16
    """Upper bound on generated tokens (None: up to the end of the context); generation may stop
    earlier at EOS or a stop condition."""
    min_tokens: int = 0
    """EOS and stop token ids are suppressed until this many tokens have been generated."""
    temperature: float = 1.0
    """0 means greedy. Logits are divided by it before the filters below."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to at least top_p."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 disables."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the most likely token's; 0 disables."""
    typical_p: float = 1.0
    """Locally typical sampling mass; 1 disables."""
    repetition_penalty: float = 1.0
    """HF semantics: logits of tokens already seen (prompt and output) are divided (if > 0) or multiplied."""
    presence_penalty: float = 0.0
    """OpenAI semantics: subtracted once from the logit of every token present in the output."""
    frequency_penalty: float = 0.0
    """OpenAI semantics: subtracted per occurrence in the output."""
    logit_bias: dict[int, float] = field(default_factory=dict)
    """Added to the logits of the given token ids."""
    seed: int | None = None
    """Makes sampling reproducible for this request whatever else shares its batch."""
    stop: list[str] = field(default_factory=list)
    """Generation ends when the text contains one of these; it is not returned."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Generation ends when one of these is sampled (it is not returned as text)."""
    ignore_eos: bool = False
    """Keep generating past the model's end-of-sequence token."""
    n: int = 1
    """Number of choices to return."""
    best_of: int | None = None
    """Generate this many and return the n with the highest cumulative logprob."""
    logprobs: int | None = None
    """Return the logprob of each sampled token plus this many top alternatives (0 = sampled only)."""
    prompt_logprobs: int | None = None
    """Same for prompt tokens (completions `echo` + `logprobs`)."""
    use_beam_search: bool = False
    beam_width: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    json_schema: dict | None = None
    """Constrain output to JSON matching this schema ({} for any JSON object)."""
    skip_special_tokens: bool = True

    @property
    def greedy(self) -> bool:
        """Temperatures below GREEDY_BELOW_TEMPERATURE are greedy too (as vLLM's): dividing logits by, say,
        1e-300 overflows them to infinities, whose softmax is NaN, and the draw would pick any token."""
        return self.temperature < GREEDY_BELOW_TEMPERATURE or self.top_k == 1

    def validate(self) -> None:
        """Raise ValueError naming the first field outside the range a backend can honour."""
        checks = [
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens", self.max_tokens, ">= 1"),
            (self.min_tokens >= 0, "min_tokens", self.min_tokens, ">= 0"),
            (self.max_tokens is None or self.min_tokens <= self.max_tokens, "min_tokens", self.min_tokens,
             "<= max_tokens"),
            (self.temperature >= 0.0, "temperature", self.temperature, ">= 0"),
            (0.0 < self.top_p <= 1.0, "top_p", self.top_p, "in (0, 1]"),
            (self.top_k >= 0, "top_k", self.top_k, ">= 0"),
            (0.0 <= self.min_p <= 1.0, "min_p", self.min_p, "in [0, 1]"),
            (0.0 < self.typical_p <= 1.0, "typical_p", self.typical_p, "in (0, 1]"),
            (self.repetition_penalty > 0.0, "repetition_penalty", self.repetition_penalty, "> 0"),
            (self.n >= 1, "n", self.n, ">= 1"),
            (not self.use_beam_search or self.beam_width >= self.n, "beam_width", self.beam_width, ">= n"),
            (self.best_of is None or self.best_of >= self.n, "best_of", self.best_of, ">= n"),
        ]
        for ok, name, value, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {value!r}")


@dataclass(slots=True)
class GenerateRequest:
    """One request as a backend sees it: exactly one of `prompt` text, `prompt_token_ids` or `messages`.

    `messages` (OpenAI-shaped dicts: role and content, an assistant's `tool_calls`, a tool's `tool_call_id`)
    is used only for backends without a local tokenizer (remote servers apply their own chat
    template); local backends get chat requests already rendered to token ids.
    """

    request_id: str
    model: str
    sampling: SamplingParams
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    adapter: str | None = None
    messages: list[dict] | None = None
    buffered: bool = False
    """The front end sends nothing until the request has finished (a non-streaming response), so the
    router may restart it on another replica if one fails midway."""
    tenant: str = ""
    """Who asked (the API key's name; "" without keys): the router's waiting queue takes tenants in turn."""
    deadline: float | None = None
    """time.monotonic() by which the request must be done; the router aborts it then. None: no deadline."""
    patience: float | None = None
    """Seconds the client waits for each next piece of output (OpenAI clients send their read timeout): a
    longer wait is abandoned, as the client has given up by then. None: no bound."""
    tools: list[ToolFunction] | None = None
    """For a `ToolSupport.UPSTREAM` backend: the functions the model may call, with `tool_choice` and
    `parallel_tool_calls`. Other backends never get them (the front end has done the work or refused)."""
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    session: str | None = None
    """The client's session id (the header router.affinity_session_header names), which the router's
    prefix_affinity policy places the request by instead of its prompt. Backends ignore it."""


@dataclass(slots=True)
class TopLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass(slots=True)
class TokenLogprob:
    """The sampled token's logprob, and the `logprobs` most likely alternatives at that position."""

    token_id: int
    token: str
    logprob: float | None
    """None only for the first prompt token, which nothing predicts."""
    top: list[TopLogprob] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    """Prompt tokens whose KV came from the prefix cache (OpenAI's prompt_tokens_details.cached_tokens);
    None where the backend does not tell."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        cached = (None if self.cached_tokens is None and other.cached_tokens is None
                  else (self.cached_tokens or 0) + (other.cached_tokens or 0))
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     cached)


@dataclass(slots=True)
class OutputDelta:
    """What a backend yields: the tokens and text new since the previous delta of the same choice.

    The last delta of a choice carries `finish_reason`; the last delta of the request carries `usage`
    (summed over choices).
    """

    index: int = 0
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob] | None = None
    """On a choice's first delta, when asked for: one entry per prompt token."""
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    """With finish_reason STOP: the stop string or stop token id that ended the choice; None when the
    model's end-of-sequence token (or a finished grammar) ended it. vLLM's meaning."""
    usage: Usage | None = None
    cumulative_logprob: float | None = None
    """Sum of the choice's token logprobs, on its last delta, when logprobs or best_of were asked for."""
    tool_calls: list[ToolCallDelta] | None = None
    """Pieces of the tool calls this choice makes (from a `ToolSupport.UPSTREAM` backend, or the front end's
    reading of the text)."""


@dataclass(slots=True, frozen=True)
class ModelInfo:
    name: str
    max_model_len: int
    owned_by: str = "turnout"
    parent: str | None = None
    vocab_size: int | None = None
    """Rows of the model's output logits: every token id a request names must be below it. None when the
    backend cannot tell (a remote server); then only the server behind it can check."""
    max_running: int | None = None
    """Sequences the backend runs at once (its batch); the router queues requests beyond it. None: it
    queues itself (a remote server)."""


@dataclass(slots=True)
class BackendStats:
    """A snapshot of a backend's engine, for metrics. Remote backends that cannot tell return None instead."""

    num_running: int
    """Requests' sequences in the running batch."""
    num_waiting: int
    """Sequences queued for admission."""
    kv_cache_usage: float
    """Fraction of the KV cache in use, 0..1 (the HF engine: blocks held / blocks)."""
    token_budget_usage: float = 0.0
    """Fraction of the per-step token budget (max_num_batched_tokens) the last step used, 0..1."""
    queue_times: list[float] = field(default_factory=list)
    """Seconds each sequence waited between arrival and its first step, for sequences first scheduled
    since the previous stats() call (each wait is reported once: the caller feeds a histogram)."""
    prefix_cache_queries: int = 0
    """Prompt tokens looked up in the prefix cache so far (cumulative; vLLM's vllm:prefix_cache_queries)."""
    prefix_cache_hits: int = 0
    """Of those, tokens found cached (cumulative; vllm:prefix_cache_hits)."""
    num_preemptions: int = 0
    """Sequences preempted for want of KV-cache blocks so far (cumulative; vllm:num_preemptions)."""
