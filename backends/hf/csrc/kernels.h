// CPU kernels of the HF engine's lean forward (float32). Each checks its inputs and names itself in errors.
#pragma once
#include <torch/extension.h>

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& lengths, double scale);
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor silu_mul(const at::Tensor& gate_up);
at::Tensor rope_and_cache_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                at::Tensor& key_cache, at::Tensor& value_cache, const at::Tensor& positions,
                                int64_t first_slot, int64_t q_heads);
