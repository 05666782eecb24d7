"""The engine's hot ops, one interface with two implementations chosen once when a model loads.

`TorchOps` computes each op with PyTorch ops on any device and dtype; `KernelOps` computes the same on the
C++ CPU kernels of `cpu_kernels` (float32 and bfloat16), which are one pass where PyTorch takes several ops
(see `cpu_kernels` for what each saves and what it measured). `choose_ops` picks the kernels for float32 and
bfloat16 weights on the CPU where they could be built, PyTorch otherwise (float16, any other device); the
lean forward and the sampler then call through what it chose, with no per-op check. TorchOps' docstrings are
the contract: in float32 the two agree to float rounding (~1e-6); in bfloat16 the kernels round each output
once (within half a bf16 ulp of the exact value) where torch rounds after each op (up to ~2^-7 of the output's
scale), so they differ by bf16 rounding. tests/unit/test_cpu_kernels.py checks every op of both against the
same references.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backends.hf import cpu_kernels


class TorchOps:
    """Each op as PyTorch ops: what the kernels must match, and the engine's ops off CPU float32 and bfloat16
    or where the kernels could not be built."""

    @staticmethod
    def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """Llama's RMSNorm over the last dimension: x * rsqrt(mean(x^2) + eps) * weight."""
        return F.rms_norm(x, (x.shape[-1],), weight, eps)

    @staticmethod
    def add_rms_norm(hidden: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """hidden += delta, in place (the residual stream is the caller's own tensor); returns its RMSNorm."""
        hidden.add_(delta)
        return TorchOps.rms_norm(hidden, weight, eps)

    @staticmethod
    def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up of a fused [..., 2 * intermediate] gate/up projection's output (gate first)."""
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def rope_and_cache_write(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_cache: torch.Tensor,
                             value_cache: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor,
                             q_heads: int) -> torch.Tensor:
        """RoPE and the KV-cache write of a forward's new tokens. qkv [B, W, q_heads + 2 * kv_heads, D] is the
        fused projection's output; cos, sin [B, W, D] RoPE at each token's position. Rotates q and k
        (x * cos + rotate_half(x) * sin), writes k and v into the caches [slot, position, kv_heads, D] at
        (slots[b], positions[b, w]), and returns q [B, W, q_heads, D]."""
        kv_heads = (qkv.shape[2] - q_heads) // 2
        half = qkv.shape[-1] // 2
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [B, W, 1, D]: the same angles for every head
        qk = qkv[:, :, : q_heads + kv_heads]
        qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
        rows = slots.unsqueeze(1)
        key_cache[rows, positions] = qk[:, :, q_heads:]
        value_cache[rows, positions] = qkv[:, :, q_heads + kv_heads :]
        return qk[:, :, :q_heads]

    @staticmethod
    def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                         scale: float) -> torch.Tensor:
        """Attention of one new token per row: q [B, q_heads, D] over k, v [B, L, kv_heads, D] (views into
        the slot cache), row b attending to its first lengths[b] positions; returns [B, q_heads, D]. Only
        `FastLlamaForward.decode` calls it, which the runner chooses on the kernels alone
        (`ModelRunner.mask_free_decode`); this one lets `decode` be tested without the C++ build."""
        batch, length = k.shape[0], k.shape[1]
        allowed = (torch.arange(length, device=k.device) < lengths.view(batch, 1)).view(batch, 1, 1, length)
        out = F.scaled_dot_product_attention(q.unsqueeze(2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=allowed, scale=scale, enable_gqa=q.shape[1] != k.shape[2])
        return out.squeeze(2)

    @staticmethod
    def paged_decode_attention(q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                               block_tables: torch.Tensor, lengths: torch.Tensor, scale: float) -> torch.Tensor:
        """decode_attention over a paged cache: key_cache, value_cache [num_blocks, block_size, kv_heads, D];
        row b's position p is in block block_tables[b, p // block_size] (int32 [B, max_blocks]) at offset
        p % block_size, and row b attends to its first lengths[b] positions. Entries of a row's table past
        its length are never read (they may be anything, e.g. -1). Gathers each row's blocks into a
        contiguous [B, L, kv_heads, D] and calls decode_attention: the reference, and the ops off the CPU."""
        batch, block_size = q.shape[0], key_cache.shape[1]
        blocks = -(-int(lengths.max()) // block_size)  # the most blocks any row reads
        used = torch.arange(blocks, device=lengths.device) * block_size < lengths.view(batch, 1)
        ids = torch.where(used, block_tables[:, :blocks].long(), 0).flatten()  # unused entries: any valid block
        shape = (batch, blocks * block_size, *key_cache.shape[2:])
        keys = key_cache.index_select(0, ids).view(shape)
        values = value_cache.index_select(0, ids).view(shape)
        # A block's cells past its row's length were never written (a fresh pool is torch.empty: NaN is
        # possible). SDPA adds its mask to the scores (NaN + -inf is NaN) and weighs values by zero (0 * NaN
        # is NaN), so those keys and values become 0 in the copy.
        past = (torch.arange(shape[1], device=lengths.device) >= lengths.view(batch, 1)).view(batch, shape[1], 1, 1)
        keys.masked_fill_(past, 0)
        values.masked_fill_(past, 0)
        return TorchOps.decode_attention(q, keys, values, lengths, scale)

    @staticmethod
    def argmax_rows(logits: torch.Tensor) -> torch.Tensor:
        """Each row's index of its largest value, as torch.argmax(logits, -1) picks it (the first maximum,
        the first NaN of a row with one): greedy sampling."""
        return logits.argmax(dim=-1)


class KernelOps:
    """The same ops on the C++ kernels (float32 and bfloat16, CPU; argmax_rows float32). The forward's ops are the extension's functions
    themselves, so a call costs no Python frame."""

    def __init__(self, kernels):
        self.rms_norm = kernels.rms_norm
        self.add_rms_norm = kernels.add_rms_norm
        self.silu_mul = kernels.silu_mul
        self.rope_and_cache_write = kernels.rope_and_cache_write
        self.decode_attention = kernels.decode_attention
        self.paged_decode_attention = kernels.paged_decode_attention
        self._argmax_kernel = kernels.argmax_rows

    def argmax_rows(self, logits: torch.Tensor) -> torch.Tensor:
        """On the kernel where it reads the logits (float32 CPU rows, each contiguous: what the runner hands
        the sampler), else torch's: the sampler's logits, unlike the forward's tensors, are not fixed at load."""
        if (logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.dim() == 2
                and logits.stride(1) == 1):
            return self._argmax_kernel(logits)
        return TorchOps.argmax_rows(logits)


Ops = TorchOps | KernelOps


def choose_ops(device: torch.device, dtype: torch.dtype) -> Ops:
    """The ops for tensors on `device` in `dtype`: the C++ kernels for float32 and bfloat16 on the CPU where
    they could be built (`cpu_kernels.load` logs why not), else PyTorch's (float16, float64, any other
    device)."""
    if device.type == "cpu" and dtype in (torch.float32, torch.bfloat16):
        kernels = cpu_kernels.load()
        if kernels is not None:
            return KernelOps(kernels)
    return TorchOps()
