"""Request bodies of TGI's native API (text-generation-inference `router/src/lib.rs`), as pydantic models.

Field names, defaults and the range rules (with TGI's messages) follow TGI's router, so TGI clients get
the answers they expect. Conversion to core types lives in server/tgi/convert.py. Unknown fields are
ignored, as TGI's serde structs do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_BEST_OF = 16
MAX_STOP_SEQUENCES = 16
MAX_TOP_N_TOKENS = 20
MAX_SEED = 2**64 - 1  # TGI's seed is a u64


def schema_only(**keywords: Any) -> Any:
    """A bound of TGI's rules (`_tgi_rules` below), shown in the published schema (GET /openapi.json) only:
    pydantic checking it would answer with its own message instead of TGI's, which clients match on."""
    return Field(json_schema_extra=keywords)


class Grammar(BaseModel):
    """TGI's `GrammarType`: {"type": "json" | "json_object" | "json_schema" | "regex", "value": ...}."""

    type: Literal["json", "json_object", "json_schema", "regex"]
    value: Any = None


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    best_of: Annotated[int, schema_only(minimum=1, maximum=MAX_BEST_OF)] | None = None
    """Candidates generated, of which the most likely is returned; > 1 needs sampling and no `seed`."""
    temperature: Annotated[float, schema_only(exclusiveMinimum=0)] | None = None
    repetition_penalty: Annotated[float, schema_only(exclusiveMinimum=0)] | None = None
    frequency_penalty: Annotated[float, schema_only(minimum=-2.0, maximum=2.0)] | None = None
    top_k: Annotated[int, schema_only(minimum=1)] | None = None
    top_p: Annotated[float, schema_only(exclusiveMinimum=0.0, exclusiveMaximum=1.0)] | None = None
    typical_p: Annotated[float, schema_only(exclusiveMinimum=0.0, exclusiveMaximum=1.0)] | None = None
    do_sample: bool = False
    """Sample rather than decode greedily; also implied by any warper set to a non-neutral value."""
    max_new_tokens: Annotated[int, schema_only(minimum=1)] | None = None
    return_full_text: bool | None = None
    """Prepend the prompt to `generated_text`."""
    stop: Annotated[list[str], schema_only(maxItems=MAX_STOP_SEQUENCES)] = Field(default_factory=list)
    truncate: Annotated[int, schema_only(minimum=1)] | None = None
    """Keep only the prompt's last `truncate` tokens (less than the model's context)."""
    watermark: Annotated[bool, schema_only(const=False)] = False
    """Not supported by turnout: only false is accepted."""
    details: bool = False
    """Return `details`: finish reason, seed, tokens with their logprobs."""
    decoder_input_details: bool = False
    """Also return the prompt's tokens (`details.prefill`); not when streaming."""
    seed: Annotated[int, schema_only(minimum=0, maximum=MAX_SEED)] | None = None
    top_n_tokens: Annotated[int, schema_only(minimum=0, maximum=MAX_TOP_N_TOKENS)] | None = None
    """Alternatives returned per token (`top_tokens`)."""
    grammar: Grammar | None = None
    """Constrain the output to a JSON schema (`regex` is refused)."""
    adapter_id: str | None = None
    """A LoRA adapter of the model to apply."""

    @property
    def sampling(self) -> bool:
        """TGI samples when asked to, or when any warper is set to a non-neutral value (its
        `NextTokenChooser`); otherwise it decodes greedily."""
        return (
            self.do_sample
            or (self.temperature is not None and self.temperature != 1.0)
            or (self.top_k is not None and self.top_k != 0)
            or (self.top_p is not None and self.top_p < 1.0)
            or (self.typical_p is not None and self.typical_p < 1.0)
        )

    @model_validator(mode="after")
    def _tgi_rules(self):
        """TGI's `Validation::validate` rules and messages, in its order."""
        best_of = self.best_of if self.best_of is not None else 1
        rules = [
            (0 < best_of <= MAX_BEST_OF, f"`best_of` must be > 0 and <= {MAX_BEST_OF}. Given: {best_of}"),
            (best_of == 1 or self.sampling, "you must use sampling when `best_of` is > 1"),
            (self.temperature is None or self.temperature > 0, "`temperature` must be strictly positive"),
            (self.repetition_penalty is None or self.repetition_penalty > 0,
             "`repetition_penalty` must be strictly positive"),
            (self.frequency_penalty is None or -2.0 <= self.frequency_penalty <= 2.0,
             "`frequency_penalty` must be >= -2.0 and <= 2.0"),
            (self.top_p is None or 0.0 < self.top_p < 1.0, "`top_p` must be > 0.0 and < 1.0"),
            (self.typical_p is None or 0.0 < self.typical_p < 1.0, "`typical_p` must be > 0.0 and < 1.0"),
            (self.top_k is None or self.top_k > 0, "`top_k` must be strictly positive"),
            (self.max_new_tokens is None or self.max_new_tokens > 0, "`max_new_tokens` must be strictly positive"),
            (len(self.stop) <= MAX_STOP_SEQUENCES,
             f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(self.stop)}"),
            (self.seed is None or best_of == 1, "`seed` must not be set when `best_of` > 1"),
            (self.seed is None or 0 <= self.seed <= MAX_SEED, f"`seed` must be >= 0 and <= {MAX_SEED}"),
            (self.top_n_tokens is None or 0 <= self.top_n_tokens <= MAX_TOP_N_TOKENS,
             f"`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}. Given: {self.top_n_tokens}"),
            (self.truncate is None or self.truncate > 0,
             f"`truncate` must be strictly positive. Given: {self.truncate}"),
            (not self.watermark, "`watermark` is not supported by turnout"),
        ]
        for ok, message in rules:
            if not ok:
                raise ValueError(message)
        return self


def _sampling_by_default() -> GenerateParameters:
    # TGI quirk kept on purpose: a request with no `parameters` object at all samples (its
    # `default_parameters()` has do_sample = true), while `"parameters": {}` decodes greedily.
    return GenerateParameters(do_sample=True)


class GenerateRequest(BaseModel):
    """POST /generate and POST /generate_stream."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True, json_schema_extra={
        "examples": [{"inputs": "def fibonacci(n):", "parameters": {"max_new_tokens": 16, "details": True}}],
    })

    inputs: Annotated[str, schema_only(minLength=1)]
    """The prompt."""
    parameters: GenerateParameters = Field(default_factory=_sampling_by_default)
    """Left out entirely, the request samples (TGI's default); `{}` decodes greedily."""
    model: str | None = None
    """Not in TGI's API (a TGI server serves one model): picks one of turnout's models; default: the first."""

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.inputs:
            raise ValueError("`inputs` cannot be empty")
        return self


class CompatGenerateRequest(GenerateRequest):
    """POST /: /generate, or /generate_stream when `stream` is true."""

    stream: bool = False


class TokenizeRequest(BaseModel):
    """POST /tokenize in TGI's shape (told apart from the vLLM shape by its `inputs` field)."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True, json_schema_extra={
        "examples": [{"inputs": "import os"}],
    })

    inputs: str
    model: str | None = None
