"""A lean forward pass for Llama-family models (llama, qwen2, mistral with default RoPE).

The same arithmetic as transformers' modeling code, in the same precision, so outputs agree (to float
rounding), but as plain tensor calls over the model's own weights: on a small model on CPU the Python of
~40 module calls per layer costs as much as the arithmetic. Fewer, larger calls help too: q, k and v are
one matrix product (as are gate and up), RoPE turns q and k together, and RMSNorm is torch's fused kernel.
The fused matrices are the model's own storage: each projection's weight becomes a view into its layer's
fused matrix, so memory does not grow and the transformers forward still sees the same weights.
On CPU the projections are reordered for oneDNN instead (`packed_linear`): the reordered copy is then the
only one, and the model's projection modules are replaced by stand-ins that refuse to run, so the
model serves through this forward alone (as the runner uses it) without holding its weights twice.
RMSNorm, the gated activation and RoPE with the KV-cache write go through the ops chosen at load (`ops`):
on CPU in float32 the C++ kernels of `cpu_kernels`, one pass each; elsewhere PyTorch ops. A decode step
(`decode`, one token per row, rows in consecutive slots) is ~8 calls a layer instead of ~30 on the kernels.
Models it does not recognise use the ordinary transformers forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backends.hf import packed_linear
from backends.hf.kv_cache import SlotKVCache
from backends.hf.ops import choose_ops

SUPPORTED = ("llama", "qwen2", "mistral")


def supports(model) -> bool:
    config = model.config
    rope = getattr(config, "rope_parameters", None) or {}
    sliding = getattr(config, "use_sliding_window", bool(getattr(config, "sliding_window", None)))
    return (
        config.model_type in SUPPORTED
        and rope.get("rope_type", "default") == "default"
        and getattr(config, "hidden_act", "silu") == "silu"
        and not sliding
        and not getattr(config, "mlp_bias", False)
        and model.config._attn_implementation == "sdpa"
        # Quantized layers (bitsandbytes, GPTQ, torchao) keep packed weights that only their own forward reads.
        and getattr(config, "quantization_config", None) is None
    )


class _MovedProjection(torch.nn.Module):
    """Stands where a projection was whose weight now lives only in FastLlamaForward's packed copy."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("this projection's weight was moved into the lean forward's packed copy; "
                           "the model runs only through FastLlamaForward")


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors one after another along the first dimension; a lone tensor as it is (no copy)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _projection(owners: list[tuple[torch.nn.Module, str]]):
    """One projection computing these Linear layers (children `name` of `parent`) of the same input, their
    outputs concatenated. Packed: the layers leave the model. Dense: their parameters become views into
    the one concatenated weight, so memory does not grow."""
    modules = [getattr(parent, name) for parent, name in owners]
    has_bias = [m.bias is not None for m in modules]
    if any(has_bias) and not all(has_bias):
        raise ValueError("cannot fuse projections of which only some have a bias")
    weight = _concat([m.weight.detach() for m in modules])
    bias = _concat([m.bias.detach() for m in modules]) if all(has_bias) else None
    projection = packed_linear.linear(weight, bias)
    if projection.packed:
        for parent, name in owners:
            setattr(parent, name, _MovedProjection())
    elif len(modules) > 1:
        start = 0
        for m in modules:
            rows = m.weight.shape[0]
            m.weight.data = weight[start : start + rows]
            if bias is not None:
                m.bias.data = bias[start : start + rows]
            start += rows
    return projection


class FastLlamaForward:
    def __init__(self, model):
        config = model.config
        self.model = model
        self.embed = model.model.embed_tokens.weight
        self.layers = list(model.model.layers)
        self.norm = model.model.norm
        self.inv_freq = model.model.rotary_emb.inv_freq
        self.attention_scaling = model.model.rotary_emb.attention_scaling
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.gqa = self.num_heads != self.num_kv_heads
        with torch.no_grad():
            self.qkv = [_projection([(layer.self_attn, "q_proj"), (layer.self_attn, "k_proj"),
                                     (layer.self_attn, "v_proj")]) for layer in self.layers]
            self.o_proj = [_projection([(layer.self_attn, "o_proj")]) for layer in self.layers]
            self.gate_up = [_projection([(layer.mlp, "gate_proj"), (layer.mlp, "up_proj")]) for layer in self.layers]
            self.down_proj = [_projection([(layer.mlp, "down_proj")]) for layer in self.layers]
            if model.lm_head.weight.data_ptr() == self.embed.data_ptr():
                # Tied to the embedding, which stays as it is: a packed LM head is a second copy (vocab x hidden).
                self.lm_head = packed_linear.linear(self.embed)
            else:
                self.lm_head = _projection([(model, "lm_head")])
            self.ops = choose_ops(self.embed.device, self.embed.dtype)
            if self.qkv[0].packed:
                # Loaded weights can be views of the checkpoint's memory-mapped file, which stays mapped (and
                # counted in the resident set) while any of them lives. The tensors left (embedding, norms,
                # RoPE frequencies) get memory of their own, so that the mapping can close.
                for tensor in (*model.parameters(), *model.buffers()):
                    tensor.data = tensor.data.clone()

    def _rms_norm(self, norm, x: torch.Tensor) -> torch.Tensor:
        return self.ops.rms_norm(x, norm.weight, norm.variance_epsilon)

    def _add_rms_norm(self, norm, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The RMSNorm of the residual stream after adding `delta` to it in place (it is this forward's own
        tensor)."""
        return self.ops.add_rms_norm(hidden, delta, norm.weight, norm.variance_epsilon)

    def _next_norm(self, index: int):
        """The RMSNorm after layer `index`: the next layer's input norm, or the final norm after the last."""
        return self.layers[index + 1].input_layernorm if index + 1 < len(self.layers) else self.norm

    def _rope_tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [batch, width, head_dim] at each position, attention scaling included."""
        freqs = positions[..., None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(dtype), (emb.sin() * self.attention_scaling).to(dtype)

    def __call__(self, input_ids, positions, mask, cache: SlotKVCache, last_only: bool) -> torch.Tensor:
        ops = self.ops
        hidden = F.embedding(input_ids, self.embed)
        cos, sin = self._rope_tables(positions, hidden.dtype)
        batch, width = input_ids.shape
        q_heads, kv_heads = self.num_heads, self.num_kv_heads
        x = self._rms_norm(self.layers[0].input_layernorm, hidden)
        for index, layer in enumerate(self.layers):
            qkv = self.qkv[index](x).view(batch, width, q_heads + 2 * kv_heads, self.head_dim)
            keys, values = cache.layer(index, like=qkv[:, :, :kv_heads].transpose(1, 2))
            q = ops.rope_and_cache_write(qkv, cos, sin, keys, values, cache.write_slots, cache.write_positions,
                                         q_heads).transpose(1, 2)
            k, v = cache.read(index)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=self.gqa)
            out = out.transpose(1, 2).reshape(batch, width, -1)
            x = self._add_rms_norm(layer.post_attention_layernorm, hidden, self.o_proj[index](out))
            mlp = self.down_proj[index](ops.silu_mul(self.gate_up[index](x)))
            x = self._add_rms_norm(self._next_norm(index), hidden, mlp)
        return self.lm_head(x[:, -1:, :] if last_only else x)

    def decode(self, input_ids, positions, cache: SlotKVCache) -> torch.Tensor:
        """One new token per row ([batch, 1] ids and positions, on the CPU), rows in the consecutive slots
        `cache.rows` (the runner's decode batch): the same arithmetic as `__call__` with attention that reads
        each row's length, so it needs no attention mask and no write positions (rope_and_cache_write writes
        each row's new key and value at its position). The runner sends decode steps here only on the
        kernels (`ModelRunner.mask_free_decode` says why); with PyTorch ops it computes the same."""
        ops = self.ops
        batch = input_ids.shape[0]
        q_heads, kv_heads = self.num_heads, self.num_kv_heads
        hidden = F.embedding(input_ids, self.embed)
        cos, sin = self._rope_tables(positions, hidden.dtype)
        positions = positions.contiguous()
        lengths = positions[:, 0] + 1  # a row's query is at its newest position: it attends to 0..that one
        rows, kv_len = cache.rows, cache.kv_len
        slots = torch.arange(rows.start, rows.stop)
        x = self._rms_norm(self.layers[0].input_layernorm, hidden)
        for index, layer in enumerate(self.layers):
            qkv = self.qkv[index](x).view(batch, 1, q_heads + 2 * kv_heads, self.head_dim)
            keys, values = cache.layer(index, like=qkv[:, :, :kv_heads].transpose(1, 2))
            q = ops.rope_and_cache_write(qkv, cos, sin, keys, values, slots, positions, q_heads)
            q = q.view(batch, q_heads, self.head_dim)
            out = ops.decode_attention(q, keys[rows, :kv_len], values[rows, :kv_len], lengths, self.scaling)
            attended = self.o_proj[index](out.view(batch, 1, -1))
            x = self._add_rms_norm(layer.post_attention_layernorm, hidden, attended)
            mlp = self.down_proj[index](ops.silu_mul(self.gate_up[index](x)))
            x = self._add_rms_norm(self._next_norm(index), hidden, mlp)
        return self.lm_head(x)
