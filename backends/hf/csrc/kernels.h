// CPU kernels of the HF engine's lean forward (float32 and bfloat16). Each checks its inputs and names itself
// in errors.
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

// bfloat16 as its bits (torch's layout: the top half of a float32). The kernels take bf16 tensors' data as
// uint16_t and do all arithmetic in float32: to_float on every load, from_float on every store, so a kernel
// rounds once per output where torch's op-by-op bf16 rounds after each op. Both are plain integer ops the
// compiler vectorizes in `omp simd` loops (a shift; an add, a shift and a NaN select).
using bf16 = uint16_t;

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) { return __builtin_bit_cast(float, static_cast<uint32_t>(x) << 16); }

template <typename T>
T from_float(float x);
template <>
inline float from_float<float>(float x) {
  return x;
}
// Round to nearest, ties to even, as torch's float -> bfloat16 (c10::round_to_nearest_even): overflow
// rounds to inf, and any NaN becomes the quiet NaN 0x7FC0.
template <>
inline bf16 from_float<bf16>(float x) {
  const uint32_t bits = __builtin_bit_cast(uint32_t, x);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return x != x ? static_cast<bf16>(0x7FC0) : static_cast<bf16>(rounded);
}

// Calls f(float{}) or f(bf16{}) for a float32 or bfloat16 tensor (the element type as a tag), and rejects
// any other dtype naming the op.
template <typename F>
auto dispatch_float_types(at::ScalarType type, const char* op, F&& f) {
  if (type == at::kFloat) return f(float{});
  TORCH_CHECK(type == at::kBFloat16, op, ": float32 or bfloat16 tensors only, not ", type);
  return f(bf16{});
}

// A tensor's data as T (float or bf16 bits); the caller has checked its dtype.
template <typename T>
T* data_as(const at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& lengths, double scale);
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                                  const at::Tensor& block_tables, const at::Tensor& lengths, double scale);
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor add_rms_norm(at::Tensor& hidden, const at::Tensor& delta, const at::Tensor& weight, double eps);
at::Tensor silu_mul(const at::Tensor& gate_up);
at::Tensor argmax_rows(const at::Tensor& x);
at::Tensor rope_and_cache_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                at::Tensor& key_cache, at::Tensor& value_cache, const at::Tensor& slots,
                                const at::Tensor& positions, int64_t q_heads);
