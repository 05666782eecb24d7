"""The model forward over a scheduled batch, on top of the slot KV cache.

A step's sequences split into two groups, each one forward: those decoding one token, and those
computing a chunk of prompt. Mixing them would pad every decode row to the longest prompt chunk.
Rows of the prompt group are left-padded so that every row's last real token is the last column,
which lets the model compute logits for that column only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from backends.hf import fast_llama
from backends.hf.config import BASE_ADAPTER
from backends.hf.kv_cache import SlotKVCache
from backends.hf.ops import KernelOps, TorchOps
from backends.hf.sequence import Sequence


@dataclass
class RunnerOutput:
    due: list[Sequence] = field(default_factory=list)
    """Sequences whose whole token list is now computed: their next token is to be chosen."""
    logits: torch.Tensor | None = None
    """[len(due), vocab] next-token logits, in the order of `due`."""
    prompt_logits: dict[Sequence, torch.Tensor] = field(default_factory=dict)
    """For sequences wanting prompt logprobs: logits at each position computed this step."""

    @classmethod
    def merged(cls, parts: list[RunnerOutput]) -> RunnerOutput:
        """Several forwards' outputs as one (their due rows in order)."""
        out = cls()
        for part in parts:
            out.due += part.due
            out.prompt_logits.update(part.prompt_logits)
        blocks = [part.logits for part in parts if part.logits is not None]
        if blocks:
            out.logits = torch.cat(blocks)
        return out


def _wants_prompt_logprobs(seq: Sequence) -> bool:
    return seq.sampling.prompt_logprobs is not None and seq.num_computed_tokens < seq.num_prompt_tokens


class ModelRunner:
    def __init__(self, model, num_slots: int, max_len: int, pad_token_id: int):
        self.model = model
        self.max_len = max_len
        self.pad_token_id = pad_token_id
        self.cache = SlotKVCache(num_slots, max_len, model.config.num_hidden_layers)
        self._bool_mask = model.config._attn_implementation in ("sdpa", "flex_attention")
        # Looked up once: `model.device` walks every parameter on each access.
        self.device, self.dtype = model.device, model.dtype
        # A peft model (LoRA adapters loaded) runs the regular forward, which applies each row's adapter;
        # the lean forward reads the base weights only.
        self.serves_adapters = hasattr(model, "peft_config")
        lean = fast_llama.supports(model) and not self.serves_adapters
        self.fast_forward = fast_llama.FastLlamaForward(model) if lean else None
        self.ops = self.fast_forward.ops if self.fast_forward is not None else TorchOps()
        """The ops the lean forward chose at load (PyTorch's for the transformers forward); the sampler's
        greedy argmax runs on them too."""
        # Decode steps skip the general forward's attention mask and write indices (~0.2 ms of a ~4 ms step
        # at batch 32 went to building them) only on the C++ kernels, whose decode attention reads each
        # row's length instead. PyTorch's attention needs the mask anyway (its decode_attention would build
        # one a layer rather than one a step), and `decode` makes its index tensors on the CPU: the general
        # forward serves every other model, device and dtype.
        self.mask_free_decode = isinstance(self.ops, KernelOps)
        # Forwards whose rows used more than one adapter (or an adapter and the base); tests read it.
        self.num_mixed_adapter_forwards = 0
        self._slot_of: dict[Sequence, int] = {}
        self._slot_owner: list[Sequence | None] = []  # None: a hole left by a released sequence

    # Slots: a sequence takes the next free slot on its first forward and gives it back when it leaves.
    # Before each forward the highest slots' owners move down into the holes, so that slots 0..n-1 are in
    # use and a decode batch reads a plain slice of the cache. Moving then rather than at each release
    # means sequences that leave together from the top move nobody (a batch that finishes in one step),
    # and one copy of only the computed positions serves all the moves.
    def _slot(self, seq: Sequence) -> int:
        slot = self._slot_of.get(seq)
        if slot is None:
            slot = len(self._slot_owner)
            if slot >= self.cache.num_slots:
                raise RuntimeError(f"no free KV slot (all {self.cache.num_slots} in use)")
            self._slot_of[seq] = slot
            self._slot_owner.append(seq)
        return slot

    def release(self, seq: Sequence) -> None:
        slot = self._slot_of.pop(seq, None)
        if slot is not None:
            self._slot_owner[slot] = None

    def _compact(self) -> None:
        owners = self._slot_owner
        moves: list[tuple[int, int]] = []  # (hole, the slot whose owner moves into it)
        length = 0
        for hole in range(len(owners)):
            while owners and owners[-1] is None:
                owners.pop()
            if hole >= len(owners):
                break
            if owners[hole] is None:
                seq = owners.pop()
                moves.append((hole, len(owners)))
                length = max(length, seq.num_computed_tokens)
                owners[hole] = seq
                self._slot_of[seq] = hole
        if moves:
            self.cache.copy_slots([d for d, _ in moves], [s for _, s in moves], length)

    @torch.inference_mode()
    def fork(self, seqs: list[Sequence], sources: list[int]) -> None:
        """seqs[i] continues seqs[sources[i]]: give it that sequence's KV cache."""
        slots = [self._slot_of[s] for s in seqs]
        moves = [(slots[i], slots[j]) for i, j in enumerate(sources) if i != j]
        if moves:
            self.cache.copy_slots([d for d, _ in moves], [s for _, s in moves])

    @property
    def num_slots_used(self) -> int:
        return len(self._slot_of)

    @torch.inference_mode()
    def execute(self, num_scheduled_tokens: dict[Sequence, int]) -> RunnerOutput:
        """Run the scheduled tokens; return the sequences whose next token is due with their logits, and
        the logits of every computed prompt position for sequences that asked for prompt logprobs."""
        self._compact()
        decode = [s for s, n in num_scheduled_tokens.items() if n == 1]
        prompt = [s for s, n in num_scheduled_tokens.items() if n > 1]
        output = RunnerOutput()
        blocks: list[torch.Tensor] = []  # each group's logits of its due rows, in the order of `due`
        for group in (decode, prompt):
            if not group:
                continue
            group.sort(key=self._slot)
            counts = [num_scheduled_tokens[s] for s in group]
            wants_prompt = {s for s in group if _wants_prompt_logprobs(s)}
            group_logits = self._forward(group, counts, every_position=bool(wants_prompt))
            due_rows = []
            for row, (seq, count) in enumerate(zip(group, counts, strict=True)):
                if seq in wants_prompt:
                    output.prompt_logits[seq] = group_logits[row, -count:]
                seq.num_computed_tokens += count
                if seq.num_computed_tokens == len(seq.token_ids):
                    output.due.append(seq)
                    due_rows.append(row)
            if wants_prompt:
                group_logits = group_logits[:, -1]
            if due_rows:  # a decode group is due whole: its logits go on as they are, uncopied
                blocks.append(group_logits if len(due_rows) == len(group) else group_logits[due_rows])
        if blocks:
            output.logits = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
        return output

    def _forward(self, seqs: list[Sequence], counts: list[int], every_position: bool = False) -> torch.Tensor:
        """Logits [batch, vocab] of each row's last token, or [batch, width, vocab] with every_position."""
        width = max(counts)
        if width == 1 and not every_position and self.mask_free_decode:
            logits = self._decode_without_mask(seqs)
            if logits is not None:
                return logits
        spare = self.cache.spare_column
        ids_rows, position_rows, write_rows = [], [], []
        for seq, count in zip(seqs, counts, strict=True):
            start, pad = seq.num_computed_tokens, width - count
            span = list(range(start, start + count))
            ids_rows.append([self.pad_token_id] * pad + seq.token_ids[start : start + count])
            position_rows.append([0] * pad + span)
            write_rows.append([spare] * pad + span)
        input_ids = torch.tensor(ids_rows)
        positions = torch.tensor(position_rows)
        write_positions = torch.tensor(write_rows)
        kv_len = max(seq.num_computed_tokens + count for seq, count in zip(seqs, counts, strict=True))
        # Query at position p attends keys 0..p of its own slot; pad queries see key 0 only (never NaN).
        allowed = torch.arange(kv_len).view(1, 1, 1, kv_len) <= positions.view(len(seqs), 1, width, 1)
        if self._bool_mask:
            mask = allowed
        else:
            dtype = self.dtype
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        device = self.device
        if device.type != "cpu":
            input_ids, positions, mask = input_ids.to(device), positions.to(device), mask.to(device)
            write_positions = write_positions.to(device)
        self.cache.prepare([self._slot_of[s] for s in seqs], write_positions, kv_len)
        if self.fast_forward is not None:
            logits = self.fast_forward(input_ids, positions, mask, self.cache, last_only=not every_position)
            return _for_sampling(logits if every_position else logits[:, -1, :])
        adapter_args = {}
        if self.serves_adapters:
            names = [seq.adapter or BASE_ADAPTER for seq in seqs]
            adapter_args["adapter_names"] = names
            self.num_mixed_adapter_forwards += len(set(names)) > 1
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=0 if every_position else 1,
            **adapter_args,
        )
        return _for_sampling(out.logits if every_position else out.logits[:, -1, :])

    def _decode_without_mask(self, seqs: list[Sequence]) -> torch.Tensor | None:
        """A decode step on the lean forward's `decode`, which needs only each row's token and position (no
        mask, no write indices); None when the rows' slots are not consecutive (a chunked prefill holds one
        between them)."""
        first, last = self._slot_of[seqs[0]], self._slot_of[seqs[-1]]  # rows are sorted by slot
        if last - first != len(seqs) - 1:
            return None
        positions = [seq.num_computed_tokens for seq in seqs]
        input_ids = torch.tensor([seq.token_ids[p] for seq, p in zip(seqs, positions, strict=True)])
        self.cache.prepare_decode(slice(first, last + 1), kv_len=max(positions) + 1)
        logits = self.fast_forward.decode(input_ids.unsqueeze(1), torch.tensor(positions).unsqueeze(1), self.cache)
        return logits[:, -1]


def _for_sampling(logits: torch.Tensor) -> torch.Tensor:
    """float32 on the CPU, where the sampler, logprobs and beam search work (its small per-row tensors are
    made there); one [batch, vocab] copy per step off an accelerator, nothing on CPU."""
    return logits.float().cpu()
