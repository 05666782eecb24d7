"""The model forward over a scheduled batch, on the paged KV cache.

On the lean forward (Llama-family models, `fast_llama`) a step is one forward over all its tokens laid
out flat (`step_inputs`): decode rows and prompt chunks together, nothing padded. Any other model (or a
model serving LoRA adapters, whose peft forward applies each row's adapter) runs transformers' own
forward, in two padded groups per step: the rows decoding one token, and the prompt chunks (mixing them
would pad every decode row to the longest chunk). Prompt rows are left-padded so that every row's last
real token is the last column, and the cache (`PagedKVCache.update`) writes each row's new keys and
values to its blocks and hands attention its past gathered in position order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from backends.hf import fast_llama
from backends.hf.block_manager import BlockManager
from backends.hf.config import BASE_ADAPTER
from backends.hf.kv_cache import PagedKVCache
from backends.hf.ops import TorchOps
from backends.hf.sequence import Sequence
from backends.hf.step_inputs import build_step


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
    def __init__(self, model, blocks: BlockManager, pad_token_id: int):
        self.model = model
        self.blocks = blocks
        self.pad_token_id = pad_token_id
        self.cache = PagedKVCache(blocks.num_blocks, blocks.block_size, model.config.num_hidden_layers)
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
        # Forwards whose rows used more than one adapter (or an adapter and the base); tests read it.
        self.num_mixed_adapter_forwards = 0

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy shared blocks that the step writes into (the scheduler's `block_copies`) first."""
        if pairs:
            with torch.inference_mode():
                self.cache.copy_blocks(pairs)

    @torch.inference_mode()
    def execute(self, num_scheduled_tokens: dict[Sequence, int]) -> RunnerOutput:
        """Run the scheduled tokens; return the sequences whose next token is due with their logits, and
        the logits of every computed prompt position for sequences that asked for prompt logprobs. Each
        sequence must hold blocks for its tokens (`BlockManager.prepare_write`)."""
        if self.fast_forward is not None:
            return self._execute_flat(num_scheduled_tokens)
        decode = [s for s, n in num_scheduled_tokens.items() if n == 1]
        prompt = [s for s, n in num_scheduled_tokens.items() if n > 1]
        output = RunnerOutput()
        blocks: list[torch.Tensor] = []  # each group's logits of its due rows, in the order of `due`
        for group in (decode, prompt):
            if not group:
                continue
            counts = [num_scheduled_tokens[s] for s in group]
            wants_prompt = {s for s in group if _wants_prompt_logprobs(s)}
            group_logits = self._padded_forward(group, counts, every_position=bool(wants_prompt))
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

    def _execute_flat(self, num_scheduled_tokens: dict[Sequence, int]) -> RunnerOutput:
        decode = [s for s, n in num_scheduled_tokens.items() if n == 1]
        prefill = [(s, n) for s, n in num_scheduled_tokens.items() if n > 1]
        logits_of = {}
        for seq, count in num_scheduled_tokens.items():
            if _wants_prompt_logprobs(seq):
                logits_of[seq] = "all"
            elif seq.num_computed_tokens + count == len(seq.token_ids):
                logits_of[seq] = "last"
        tables = {seq: self.blocks.block_table(seq) for seq in num_scheduled_tokens}
        step, wanted = build_step(decode, prefill, tables, self.blocks.block_size, logits_of)
        logits = _for_sampling(self.fast_forward.forward(step.to(self.device), self.cache))
        for seq, count in num_scheduled_tokens.items():
            seq.num_computed_tokens += count
        output = RunnerOutput()
        due_rows, row = [], 0
        for seq, rows in wanted:
            if logits_of[seq] == "all":
                output.prompt_logits[seq] = logits[row:row + rows]
            if seq.num_computed_tokens == len(seq.token_ids):
                output.due.append(seq)
                due_rows.append(row + rows - 1)
            row += rows
        if due_rows:
            output.logits = logits if len(due_rows) == logits.shape[0] else logits[due_rows]
        return output

    def _padded_forward(self, seqs: list[Sequence], counts: list[int], every_position: bool = False) -> torch.Tensor:
        """transformers' forward over left-padded rows: logits [batch, vocab] of each row's last token, or
        [batch, width, vocab] with every_position."""
        width = max(counts)
        block_size, scratch = self.blocks.block_size, self.cache.scratch_position
        kv_len = max(seq.num_computed_tokens + count for seq, count in zip(seqs, counts, strict=True))
        ids_rows, position_rows, write_rows, read_rows = [], [], [], []
        for seq, count in zip(seqs, counts, strict=True):
            start, pad = seq.num_computed_tokens, width - count
            table = self.blocks.block_table(seq)
            flat = [table[p // block_size] * block_size + p % block_size for p in range(start + count)]
            ids_rows.append([self.pad_token_id] * pad + seq.token_ids[start : start + count])
            position_rows.append([0] * pad + list(range(start, start + count)))
            write_rows.append([scratch] * pad + flat[start:])
            read_rows.append(flat + [scratch] * (kv_len - len(flat)))
        input_ids = torch.tensor(ids_rows)
        positions = torch.tensor(position_rows)
        # Query at position p attends keys 0..p of its own sequence; pad queries see key 0 only (never NaN).
        allowed = torch.arange(kv_len).view(1, 1, 1, kv_len) <= positions.view(len(seqs), 1, width, 1)
        if self._bool_mask:
            mask = allowed
        else:
            dtype = self.dtype
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        device = self.device
        write_index, read_index = torch.tensor(write_rows), torch.tensor(read_rows)
        if device.type != "cpu":
            input_ids, positions, mask = input_ids.to(device), positions.to(device), mask.to(device)
            write_index, read_index = write_index.to(device), read_index.to(device)
        self.cache.prepare_padded(write_index, read_index)
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


def _for_sampling(logits: torch.Tensor) -> torch.Tensor:
    """float32 on the CPU, where the sampler, logprobs and beam search work (its small per-row tensors are
    made there); one [batch, vocab] copy per step off an accelerator, nothing on CPU."""
    return logits.float().cpu()
