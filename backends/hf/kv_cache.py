"""A slot-addressed KV cache that plugs into any `transformers` model through the `Cache` API.

Each running sequence owns one slot (a row of every layer's key and value tensors) for its whole life.
A forward pass writes each new token's key/value at (its slot, its position) and attends over its own
slot only, so sequences join and leave the batch between steps without touching anyone else's cache:
nothing is recomputed, padded or shifted. Slots are kept compact (sequences 0..n-1) so the decode batch
reads a plain slice of the cache rather than a gathered copy.

Tokens that only pad a batch write to a spare column (`max_len`) that no real query ever attends to.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


class SlotKVCache(Cache):
    def __init__(self, num_slots: int, max_len: int, num_layers: int):
        super().__init__(layers=[])
        self.num_slots = num_slots
        self.max_len = max_len
        self.num_layers = num_layers
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # Set by `prepare` before each forward.
        self._rows: slice | torch.Tensor = slice(0, 0)
        self._write_slots: torch.Tensor | None = None
        self._write_rows: torch.Tensor | None = None
        self._write_cols: torch.Tensor | None = None
        self._kv_len = 0

    @property
    def spare_column(self) -> int:
        return self.max_len

    def prepare(self, slots: list[int], write_positions: torch.Tensor, kv_len: int) -> None:
        """Declare the next forward: batch row i is slot `slots[i]`; its tokens go to `write_positions[i]`
        (shape [batch, tokens]); attention reads the first `kv_len` columns."""
        first = slots[0]
        if slots == list(range(first, first + len(slots))):
            self._rows = slice(first, first + len(slots))
        else:
            self._rows = torch.tensor(slots, dtype=torch.long, device=write_positions.device)
        self._write_slots = torch.tensor(slots, dtype=torch.long, device=write_positions.device)
        self._write_rows = self._write_slots.unsqueeze(1)
        self._write_cols = write_positions
        self._kv_len = kv_len

    def prepare_decode(self, rows: slice, kv_len: int) -> None:
        """Declare a decode step on kernels that write the new keys and values themselves (`layer`): batch row
        i is slot rows.start + i; attention reads the first `kv_len` columns. `update` is then unavailable."""
        self._rows = rows
        self._write_slots = self._write_rows = self._write_cols = None
        self._kv_len = kv_len

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self._write_cols is None:
            raise RuntimeError("the cache was prepared for a kernel decode step (prepare_decode); "
                               "update() needs prepare() and its write positions")
        keys, values = self.layer(layer_idx, like=key_states)
        # Stored [slot, position, head, head_dim]: a batch's keys are then a strided view the attention
        # kernel reads in place (with heads second, CPU sdpa copied them to contiguous memory every call).
        keys[self._write_rows, self._write_cols] = key_states.transpose(1, 2)
        values[self._write_rows, self._write_cols] = value_states.transpose(1, 2)
        return self.read(layer_idx)

    def read(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The prepared batch's keys and values of one layer, [batch, heads, kv_len, head_dim] views."""
        return (self.keys[layer_idx][self._rows, : self._kv_len].transpose(1, 2),
                self.values[layer_idx][self._rows, : self._kv_len].transpose(1, 2))

    @property
    def write_slots(self) -> torch.Tensor | None:
        """[batch] the slot of each row of the prepared forward (None after `prepare_decode`)."""
        return self._write_slots

    @property
    def write_positions(self) -> torch.Tensor | None:
        """[batch, width] where each new token's key and value go (None after `prepare_decode`)."""
        return self._write_cols

    def layer(self, layer_idx: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's whole key and value tensors, [slot, position, head, head_dim], for kernels that write
        and read them in place; allocated on first use like `update` does (`like`: [batch, heads, tokens,
        head_dim])."""
        if layer_idx == len(self.keys):
            self._allocate(like)
        return self.keys[layer_idx], self.values[layer_idx]

    @property
    def rows(self) -> slice | torch.Tensor:
        """The slots of the prepared forward's batch rows: a slice when they are consecutive."""
        return self._rows

    @property
    def kv_len(self) -> int:
        return self._kv_len

    def _allocate(self, like: torch.Tensor) -> None:
        _, num_heads, _, head_dim = like.shape
        shape = (self.num_slots, self.max_len + 1, num_heads, head_dim)
        self.keys.append(torch.zeros(shape, dtype=like.dtype, device=like.device))
        self.values.append(torch.zeros(shape, dtype=like.dtype, device=like.device))

    def copy_slots(self, dst: list[int], src: list[int], length: int | None = None) -> None:
        """Slot dst[i] takes the contents slot src[i] had before the call: its first `length` positions,
        or all of them."""
        dst_index, src_index = torch.tensor(dst), torch.tensor(src)
        columns = slice(0, length)
        for tensor in (*self.keys, *self.values):
            tensor[dst_index, columns] = tensor[src_index, columns]

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
