"""Pure scheduling policy: which sequences run in the next step, and how many tokens each computes.

No torch here. The scheduler admits waiting sequences into the running batch between steps (up to
`max_num_seqs`, and only while the KV cache has blocks for their tokens: `block_manager`), spends at most
`max_num_batched_tokens` per step on prompt tokens (long prompts are chunked across steps), and drops
finished or aborted sequences the moment it is told about them, so their blocks are free for the very
next step.

When a running sequence needs a block and none is free, the newest running sequence is preempted (a
beam search group as a whole): its blocks are given back and it waits at the front of the line, keeping
its tokens, to be recomputed when blocks free up (prefix caching often finds most of them still cached).
The oldest sequence can therefore always run on, and a preempted one resumes with exactly the tokens it
had. No new sequence is admitted in a step that preempted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from backends.hf.block_manager import BlockManager
from backends.hf.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    """Most sequences in the running batch at once."""
    max_num_batched_tokens: int = 2048
    """Most tokens computed in one step, decode tokens included; longer prompts are chunked."""
    num_blocks: int = 4096
    """KV-cache blocks (the cache's memory budget, in blocks)."""
    block_size: int = 16
    """Token positions per KV-cache block."""
    enable_prefix_caching: bool = True
    """Reuse the computed blocks of earlier sequences that began with the same tokens."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                f"max_num_seqs ({self.max_num_seqs}) so every running sequence can decode each step"
            )
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError(f"the KV cache needs at least one block of at least one token, "
                             f"got {self.num_blocks} blocks of {self.block_size}")


@dataclass(frozen=True)
class ScheduledBatch:
    """What one step computes: for each sequence, how many of its uncomputed tokens to run, and the
    KV-cache blocks to copy first (shared blocks about to be written: (source, copy) pairs)."""

    num_scheduled_tokens: dict[Sequence, int]
    block_copies: list[tuple[int, int]] = field(default_factory=list)

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
        self.blocks = BlockManager(config.num_blocks, config.block_size, config.enable_prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        """Sequences preempted so far (vLLM's vllm:num_preemptions)."""
        self.unfittable: list[Sequence] = []
        """Sequences whose tokens need more blocks than the whole cache has; the engine fails them (the
        backend refuses such requests before they get here: this is the last line)."""

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
        """Forget a finished or aborted sequence; its blocks are free for the next schedule()."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq)

    def schedule(self) -> ScheduledBatch:
        """Decode tokens of running sequences first, then their unfinished prompt chunks, then admit
        waiting sequences while places, blocks and the token budget last (so a long prompt never stalls
        decode). A running sequence that needs a block when none is free preempts the newest ones."""
        budget = self.config.max_num_batched_tokens
        scheduled: dict[Sequence, int] = {}
        copies: list[tuple[int, int]] = []
        preempted = False
        decoding = [seq for seq in self.running if seq.num_uncomputed_tokens == 1]
        prefilling = [seq for seq in self.running if seq.num_uncomputed_tokens > 1]
        for seq in decoding + prefilling:
            if budget == 0:
                break
            if seq not in self.running:  # preempted for an older sequence in this loop
                continue
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            while (ready := self.blocks.prepare_write(seq, seq.num_computed_tokens + num_tokens)) is None:
                victims = self._newest_unit()
                for victim in victims:
                    budget += scheduled.pop(victim, 0)
                    self._preempt(victim)
                preempted = True
                if seq in victims:
                    break
            if ready is None:
                continue
            copies += ready
            scheduled[seq] = num_tokens
            budget -= num_tokens
        deferred: list[Sequence] = []
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            needed = len(seq.token_ids)
            if self.blocks.blocks_for(needed) > self.blocks.num_blocks:
                self.waiting.popleft()
                self.unfittable.append(seq)
                continue
            if self.blocks.waits_for_prefix(seq):  # next step its prefix is cached: wait for it, not for us
                deferred.append(self.waiting.popleft())
                continue
            # Blocks for all of its tokens at once: a prompt admitted is never preempted by its own chunks.
            if not self.blocks.can_allocate(seq, needed):
                break
            self.waiting.popleft()
            seq.num_computed_tokens = self.blocks.allocate(seq, needed)
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = seq.num_computed_tokens
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            scheduled[seq] = num_tokens
            budget -= num_tokens
        self.waiting.extendleft(reversed(deferred))
        return ScheduledBatch(scheduled, copies)

    def computed(self, seqs: list[Sequence]) -> None:
        """After a forward: the sequences' newly computed full blocks enter the prefix cache."""
        for seq in seqs:
            self.blocks.cache_computed(seq, seq.num_computed_tokens)

    def _newest_unit(self) -> list[Sequence]:
        """The newest running sequence, with its whole beam search group if it is one beam (beams decode in
        lockstep: one preempted alone would hold the others)."""
        newest = self.running[-1]
        if newest.beam_group is None:
            return [newest]
        return [beam for beam in newest.beam_group.beams if beam in self.running]

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.num_computed_tokens = 0
        seq.prompt_logprobs = []  # recomputed along with the prompt (they were sent once already, if at all)
        if seq.beam_group is not None:
            seq.beam_group.pending.clear()  # every beam offers again once recomputed
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        seq.num_preemptions += 1
        self.num_preemptions += 1
