// CPU kernels of the HF engine's lean forward (float32). Each checks its inputs and names itself in errors.
#pragma once
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>

// exp(x) in float32 that the compiler vectorizes (a libm call stops it: 8x slower over a prefill's MLP):
// 2^n * exp(r) with n = round(x / ln 2), r = x - n ln 2 (two-part ln 2), exp(r) by Cephes' expf
// polynomial. Within 2 ulp of exp where exp(x) is a normal float; +inf above ~88.72; inputs below
// -86.9 give exp(-86.9) ~ 2e-38 (silu and softmax only add it to 1 or to a sum of at least 1).
inline float fast_exp(float x) {
  x = std::min(std::max(x, -86.9f), 89.f);
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // 1.5 * 2^23: round to nearest
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  // 2^n as 2^(n-1) * 2: n reaches 128 near the top, where the product overflows to inf as exp does.
  const int32_t half_scale = (static_cast<int32_t>(n) + 126) << 23;
  return (p * r * r + r + 1.f) * __builtin_bit_cast(float, half_scale) * 2.f;
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& lengths, double scale);
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor add_rms_norm(at::Tensor& hidden, const at::Tensor& delta, const at::Tensor& weight, double eps);
at::Tensor silu_mul(const at::Tensor& gate_up);
at::Tensor argmax_rows(const at::Tensor& x);
at::Tensor rope_and_cache_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                at::Tensor& key_cache, at::Tensor& value_cache, const at::Tensor& slots,
                                const at::Tensor& positions, int64_t q_heads);
