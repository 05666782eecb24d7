"""One step's tokens as flat tensors, for the lean forward over the paged KV cache.

The step's sequences are laid out one after another: decode rows (one new token each) first, then the
prompt chunks, grouped by shape. Every projection then runs once over all T tokens with no padding;
only attention needs to know where one sequence ends: decode rows read their blocks through their block
tables in one kernel call, and each group of prompt chunks of one shape (same number of new tokens, same
number already computed) is one batched attention call over keys gathered from its blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from backends.hf.sequence import Sequence


@dataclass
class PrefillGroup:
    """Prompt chunks of `num_seqs` sequences of the same shape, consecutive in the flat batch."""

    start: int
    """The flat index of the group's first token."""
    num_seqs: int
    count: int
    """New tokens of each sequence."""
    past: int
    """Tokens of each sequence already in the cache before this chunk."""
    read_index: torch.Tensor
    """[num_seqs, past + count] flat cache positions of each sequence's positions 0..past+count-1."""
    mask: torch.Tensor | None
    """[count, past + count] True where a new token may attend (None when past is 0: plain causal)."""

    @property
    def stop(self) -> int:
        return self.start + self.num_seqs * self.count


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    """[T] the step's new tokens."""
    positions: torch.Tensor
    """[T] each token's position in its sequence."""
    write_blocks: torch.Tensor
    """[T] the block each token's key and value go to."""
    write_offsets: torch.Tensor
    """[T, 1] the offset within that block."""
    num_decode: int
    """The first num_decode tokens are decode rows, one per sequence."""
    decode_block_tables: torch.Tensor
    """[num_decode, max_blocks] int32 block tables of the decode rows."""
    decode_lengths: torch.Tensor
    """[num_decode] int64 positions each decode row attends to (its new token's included)."""
    prefill_groups: list[PrefillGroup] = field(default_factory=list)
    logit_rows: torch.Tensor | None = None
    """Flat indices of the tokens whose logits are wanted, or None for every token."""

    def to(self, device: torch.device) -> StepInputs:
        if device.type == "cpu":
            return self
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        groups = [PrefillGroup(g.start, g.num_seqs, g.count, g.past, move(g.read_index), move(g.mask))
                  for g in self.prefill_groups]
        return StepInputs(move(self.input_ids), move(self.positions), move(self.write_blocks),
                          move(self.write_offsets), self.num_decode, move(self.decode_block_tables),
                          move(self.decode_lengths), groups, move(self.logit_rows))


def build_step(decode: list[Sequence], prefill: list[tuple[Sequence, int]], tables: dict[Sequence, list[int]],
               block_size: int, logits_of: dict[Sequence, str]) -> tuple[StepInputs, list[tuple[Sequence, int]]]:
    """The flat inputs of a step: `decode` sequences compute their one uncomputed token, `prefill` ones
    (sequence, count) a chunk; `tables` their block tables. `logits_of[seq]` is "last" (its last new
    token's logits are wanted), "all" (every new token's) or absent. Returns the inputs and, for each
    sequence wanting logits in the order of the lm_head's output rows, (sequence, number of rows)."""
    ids, positions, blocks, offsets, rows = [], [], [], [], []
    wanted: list[tuple[Sequence, int]] = []

    def add_tokens(seq: Sequence, start: int, count: int) -> None:
        table = tables[seq]
        first_flat = len(ids)
        for p in range(start, start + count):
            ids.append(seq.token_ids[p])
            positions.append(p)
            blocks.append(table[p // block_size])
            offsets.append(p % block_size)
        kind = logits_of.get(seq)
        if kind == "last":
            rows.append(first_flat + count - 1)
            wanted.append((seq, 1))
        elif kind == "all":
            rows.extend(range(first_flat, first_flat + count))
            wanted.append((seq, count))

    for seq in decode:
        add_tokens(seq, seq.num_computed_tokens, 1)
    width = max((len(tables[s]) for s in decode), default=0)
    decode_tables = torch.tensor([tables[s] + [0] * (width - len(tables[s])) for s in decode] or [[]],
                                 dtype=torch.int32)
    decode_lengths = torch.tensor([s.num_computed_tokens + 1 for s in decode], dtype=torch.long)

    groups: list[PrefillGroup] = []
    prefill = sorted(prefill, key=lambda item: (item[1], item[0].num_computed_tokens))
    i = 0
    while i < len(prefill):
        count, past = prefill[i][1], prefill[i][0].num_computed_tokens
        j = i
        while j < len(prefill) and prefill[j][1] == count and prefill[j][0].num_computed_tokens == past:
            j += 1
        start = len(ids)
        read = []
        for seq, _ in prefill[i:j]:
            add_tokens(seq, past, count)
            table = tables[seq]
            read.append([table[p // block_size] * block_size + p % block_size for p in range(past + count)])
        mask = None
        if past:
            key_positions = torch.arange(past + count).view(1, -1)
            mask = key_positions <= (past + torch.arange(count)).view(-1, 1)
        groups.append(PrefillGroup(start, j - i, count, past, torch.tensor(read), mask))
        i = j

    every = len(rows) == len(ids)
    step = StepInputs(torch.tensor(ids), torch.tensor(positions), torch.tensor(blocks),
                      torch.tensor(offsets).view(-1, 1), len(decode), decode_tables, decode_lengths, groups,
                      None if every else torch.tensor(rows, dtype=torch.long))
    return step, wanted
