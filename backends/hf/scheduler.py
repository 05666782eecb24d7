"""Pure scheduling policy: which sequences run in the next step, and how many tokens each computes.

No torch here. The scheduler admits waiting sequences into the running batch between steps (up to
`max_num_seqs`), spends at most `max_num_batched_tokens` per step on prompt tokens (long prompts are
chunked across steps), and drops finished or aborted sequences the moment it is told about them, so
their slot is free for the very next step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from backends.hf.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    """Most sequences in the running batch at once (the KV cache has this many slots)."""
    max_num_batched_tokens: int = 2048
    """Most tokens computed in one step, decode tokens included; longer prompts are chunked."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                f"max_num_seqs ({self.max_num_seqs}) so every running sequence can decode each step"
            )


@dataclass(frozen=True)
class ScheduledBatch:
    """What one step computes: for each sequence, how many of its uncomputed tokens to run."""

    num_scheduled_tokens: dict[Sequence, int]

    @property
    def sequences(self) -> list[Sequence]:
        return list(self.num_scheduled_tokens)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_scheduled_tokens.values())

    def __bool__(self) -> bool:
        return bool(self.num_scheduled_tokens)


class Scheduler:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Forget a finished or aborted sequence; its slot is free for the next schedule()."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def schedule(self) -> ScheduledBatch:
        """Decode tokens of running sequences first, then their unfinished prompt chunks, then admit
        waiting sequences while slots and the token budget last (so a long prompt never stalls decode)."""
        budget = self.config.max_num_batched_tokens
        scheduled: dict[Sequence, int] = {}
        decoding = [seq for seq in self.running if seq.num_uncomputed_tokens == 1]
        prefilling = [seq for seq in self.running if seq.num_uncomputed_tokens > 1]
        for seq in decoding + prefilling:
            if budget == 0:
                break
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            scheduled[seq] = num_tokens
            budget -= num_tokens
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            scheduled[seq] = num_tokens
            budget -= num_tokens
        return ScheduledBatch(scheduled)
