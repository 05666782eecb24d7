"""One object per request: its tokens, how many of them the KV cache already holds, and its status.

State is counters, not phases: a sequence "needs prefill" simply when `num_computed_tokens` lags
`len(token_ids)` by more than one, so chunked prefill and decode are the same thing to the scheduler.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from backends.types import FinishReason, SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    index: int = 0
    """Which choice of its request this sequence is (for n > 1)."""
    token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    """Of its prompt's tokens at its first admission, how many the prefix cache held (not computed)."""
    num_preemptions: int = 0
    """Times it gave its KV-cache blocks back to make room, to be recomputed."""
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    cumulative_logprob: float = 0.0
    prompt_logprobs: list = field(default_factory=list)
    """TokenLogprob per prompt token, filled while the prompt is computed, when the request asks for them."""
    detokenizer: Any = None
    """The sequence's IncrementalDetokenizer; owned by the engine's output stage."""
    generator: Any = None
    """A seeded random.Random when the request has a seed; owned by the sampler."""
    beam_group: Any = None
    """The BeamGroup this sequence is one beam of, for beam search."""
    grammar: Any = None
    """An xgrammar GrammarMatcher when the output must follow a JSON schema."""
    adapter: str | None = None
    """The LoRA adapter this sequence runs with; None for the base model."""

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids):]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def finish(self, reason: FinishReason) -> None:
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
