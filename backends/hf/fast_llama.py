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
from backends.hf.kv_cache import PagedKVCache
from backends.hf.ops import choose_ops
from backends.hf.step_inputs import StepInputs

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

    def forward(self, step: StepInputs, cache: PagedKVCache) -> torch.Tensor:
        """Logits [rows, vocab] of the step's tokens named by `step.logit_rows` (every token's when None).
        All T tokens of the step go through each projection together, unpadded; attention alone goes per
        sequence shape (`_attention`)."""
        ops = self.ops
        tokens = step.input_ids.shape[0]
        q_heads, kv_heads = self.num_heads, self.num_kv_heads
        hidden = F.embedding(step.input_ids, self.embed)
        cos, sin = self._rope_tables(step.positions.view(tokens, 1), hidden.dtype)
        x = self._rms_norm(self.layers[0].input_layernorm, hidden)
        for index, layer in enumerate(self.layers):
            qkv = self.qkv[index](x).view(tokens, 1, q_heads + 2 * kv_heads, self.head_dim)
            keys, values = cache.layer(index, like=qkv[:, :, :kv_heads].transpose(1, 2))
            q = ops.rope_and_cache_write(qkv, cos, sin, keys, values, step.write_blocks, step.write_offsets,
                                         q_heads).view(tokens, q_heads, self.head_dim)
            out = self._attention(q, keys, values, step)
            x = self._add_rms_norm(layer.post_attention_layernorm, hidden, self.o_proj[index](out.view(tokens, -1)))
            mlp = self.down_proj[index](ops.silu_mul(self.gate_up[index](x)))
            x = self._add_rms_norm(self._next_norm(index), hidden, mlp)
        return self.lm_head(x if step.logit_rows is None else x[step.logit_rows])

    def _attention(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, step: StepInputs) -> torch.Tensor:
        """q [T, q_heads, D] of the step's tokens over the paged cache (this layer's keys and values, the new
        tokens' already written): decode rows in one call through their block tables; each group of prompt
        chunks of one shape in one batched SDPA call over keys gathered from its blocks (causal, or with the
        group's mask when part of it was computed before: a cached prefix or an earlier chunk)."""
        decode = step.num_decode
        if not step.prefill_groups:
            return self.ops.paged_decode_attention(q, keys, values, step.decode_block_tables, step.decode_lengths,
                                                   self.scaling)
        out = torch.empty_like(q)
        if decode:
            out[:decode] = self.ops.paged_decode_attention(q[:decode], keys, values, step.decode_block_tables,
                                                           step.decode_lengths, self.scaling)
        flat_keys = keys.view(-1, *keys.shape[2:])
        flat_values = values.view(-1, *values.shape[2:])
        for group in step.prefill_groups:
            group_q = q[group.start:group.stop].view(group.num_seqs, group.count, self.num_heads, self.head_dim)
            k = flat_keys[group.read_index].transpose(1, 2)
            v = flat_values[group.read_index].transpose(1, 2)
            attended = F.scaled_dot_product_attention(group_q.transpose(1, 2), k, v, attn_mask=group.mask,
                                                      is_causal=group.mask is None, scale=self.scaling,
                                                      enable_gqa=self.gqa)
            out[group.start:group.stop] = attended.transpose(1, 2).reshape(-1, self.num_heads, self.head_dim)
        return out

    # -- embeddings (backends/hf/embedding.py) ------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Final hidden states [batch, width, hidden] (after the final norm, as transformers' base model's
        last_hidden_state) of whole inputs, without any KV cache: the same arithmetic as `forward`, with RoPE
        as TorchOps computes it and causal attention over each row. Rows are padded on the right, so a real
        token attends only to the real tokens before it and needs no padding mask (the pads' states are
        garbage the caller does not read)."""
        hidden = F.embedding(input_ids, self.embed)
        cos, sin = self._rope_tables(positions, hidden.dtype)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [batch, width, 1, head_dim]: the same for every head
        batch, width = input_ids.shape
        q_heads, kv_heads, half = self.num_heads, self.num_kv_heads, self.head_dim // 2
        x = self._rms_norm(self.layers[0].input_layernorm, hidden)
        for index, layer in enumerate(self.layers):
            qkv = self.qkv[index](x).view(batch, width, q_heads + 2 * kv_heads, self.head_dim)
            qk = qkv[:, :, : q_heads + kv_heads]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            q, k = qk[:, :, :q_heads].transpose(1, 2), qk[:, :, q_heads:].transpose(1, 2)
            v = qkv[:, :, q_heads + kv_heads :].transpose(1, 2)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=self.gqa)
            out = out.transpose(1, 2).reshape(batch, width, -1)
            x = self._add_rms_norm(layer.post_attention_layernorm, hidden, self.o_proj[index](out))
            mlp = self.down_proj[index](self.ops.silu_mul(self.gate_up[index](x)))
            x = self._add_rms_norm(self._next_norm(index), hidden, mlp)
        return x
