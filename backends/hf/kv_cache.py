"""A paged KV cache: a pool of fixed-size blocks per layer, read and written through block tables.

Each layer's keys and values are one tensor [num_blocks + 1, block_size, kv_heads, head_dim]: block b
holds block_size consecutive positions of whichever sequence's block table names b (`block_manager`
decides that; this module only stores). The extra last block is scratch: tokens that only pad a batch
write there, and no real query ever attends to it.

Two ways in:
- the lean forward (`fast_llama`) takes each layer's tensors (`layer`) and writes and reads them itself,
  through the step's flat token -> (block, offset) map and each sequence's block table;
- any other `transformers` model runs its own forward with this object as its `Cache`: `prepare_padded`
  declares a padded batch's write and read indices (flat positions in the block pool), `update` writes the
  new keys and values there and returns each row's past keys and values gathered in position order.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


class PagedKVCache(Cache):
    def __init__(self, num_blocks: int, block_size: int, num_layers: int):
        super().__init__(layers=[])
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_layers = num_layers
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # Set by `prepare_padded` before a transformers forward.
        self._write_index: torch.Tensor | None = None
        self._read_index: torch.Tensor | None = None
        self._kv_len = 0

    @property
    def scratch_block(self) -> int:
        return self.num_blocks

    @property
    def scratch_position(self) -> int:
        """A flat position in the scratch block, where pad tokens write."""
        return self.num_blocks * self.block_size

    def layer(self, layer_idx: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's whole key and value tensors, [num_blocks + 1, block_size, kv_heads, head_dim];
        allocated on first use with the heads, size, dtype and device of `like` ([..., kv_heads, tokens,
        head_dim] as a transformers attention layer hands its keys over)."""
        if layer_idx == len(self.keys):
            *_, num_heads, _, head_dim = like.shape
            shape = (self.num_blocks + 1, self.block_size, num_heads, head_dim)
            # Uninitialized: a block's memory becomes resident only once written, so the process grows with
            # the tokens held, not the budget. Nothing reads a cell before it is written, except the scratch
            # block, which pads write and padded rows read past their length (masked, but 0 * NaN is NaN).
            for tensors in (self.keys, self.values):
                tensor = torch.empty(shape, dtype=like.dtype, device=like.device)
                tensor[self.scratch_block].zero_()
                tensors.append(tensor)
        return self.keys[layer_idx], self.values[layer_idx]

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Each (source, copy) pair: block `copy` takes the contents of block `source` in every layer."""
        if not pairs or not self.keys:
            return
        device = self.keys[0].device
        sources = torch.tensor([s for s, _ in pairs], device=device)
        copies = torch.tensor([c for _, c in pairs], device=device)
        for tensor in (*self.keys, *self.values):
            tensor[copies] = tensor[sources]

    # -- the transformers forward's Cache ----------------------------------------------------------------
    def prepare_padded(self, write_index: torch.Tensor, read_index: torch.Tensor) -> None:
        """Declare the next transformers forward: row b's new token w goes to flat position write_index[b, w]
        ([batch, width]); attention reads flat positions read_index[b, :] ([batch, kv_len]) as positions
        0..kv_len-1 of row b (past its length, anything: the mask hides them)."""
        self._write_index = write_index
        self._read_index = read_index
        self._kv_len = read_index.shape[1]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self._write_index is None:
            raise RuntimeError("the paged cache serves a transformers forward only after prepare_padded()")
        keys, values = self.layer(layer_idx, like=key_states)
        flat_keys, flat_values = keys.view(-1, *keys.shape[2:]), values.view(-1, *values.shape[2:])
        flat_keys[self._write_index] = key_states.transpose(1, 2)
        flat_values[self._write_index] = value_states.transpose(1, 2)
        return flat_keys[self._read_index].transpose(1, 2), flat_values[self._read_index].transpose(1, 2)

    # The parts of the Cache interface that model code may query.
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self._kv_len, 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_sliding(self) -> list[bool]:
        return [False] * self.num_layers

    def __len__(self) -> int:
        return self.num_layers
