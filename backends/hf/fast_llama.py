"""A lean forward pass for Llama-family models (llama, qwen2, mistral with default RoPE).

The same operations as transformers' modeling code, in the same order and precision, so outputs are
identical, but as plain tensor calls over the model's own weights: on a small model on CPU the Python of
~40 module calls per layer costs as much as the arithmetic. Models it does not recognise use the
ordinary transformers forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backends.hf.kv_cache import SlotKVCache

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


class FastLlamaForward:
    def __init__(self, model):
        config = model.config
        self.model = model
        self.embed = model.model.embed_tokens.weight
        self.layers = list(model.model.layers)
        self.norm = model.model.norm
        self.lm_head = model.lm_head.weight
        self.inv_freq = model.model.rotary_emb.inv_freq
        self.attention_scaling = model.model.rotary_emb.attention_scaling
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        self.gqa = config.num_attention_heads != config.num_key_value_heads

    @staticmethod
    def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * x32.to(dtype)

    def __call__(self, input_ids, positions, mask, cache: SlotKVCache, last_only: bool) -> torch.Tensor:
        hidden = F.embedding(input_ids, self.embed)
        freqs = positions[..., None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.attention_scaling).to(hidden.dtype).unsqueeze(1)
        sin = (emb.sin() * self.attention_scaling).to(hidden.dtype).unsqueeze(1)
        batch, width = input_ids.shape
        half = self.head_dim // 2
        for index, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            x = self._rms_norm(layer.input_layernorm, hidden)
            q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(batch, width, -1, self.head_dim).transpose(1, 2)
            k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(batch, width, -1, self.head_dim).transpose(1, 2)
            v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias).view(batch, width, -1, self.head_dim).transpose(1, 2)
            q = q * cos + torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin
            k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin
            k, v = cache.update(k, v, index)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=self.gqa)
            out = out.transpose(1, 2).contiguous().reshape(batch, width, -1)
            hidden = hidden + F.linear(out, attn.o_proj.weight, attn.o_proj.bias)
            x = self._rms_norm(layer.post_attention_layernorm, hidden)
            gated = F.silu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight)
            hidden = hidden + F.linear(gated, mlp.down_proj.weight)
        if last_only:
            hidden = hidden[:, -1:, :]
        return F.linear(self._rms_norm(self.norm, hidden), self.lm_head)
