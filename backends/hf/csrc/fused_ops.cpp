// The small steps of a decode layer, each one pass instead of several PyTorch ops: at batch 32 a decode
// step ran ~130 small ops, each costing more in dispatch than in arithmetic.
//
// Each takes float32 or bfloat16 (argmax_rows: float32, as logits are). In bfloat16 the arithmetic is float32
// and each output is rounded to bf16 once (kernels.h), where torch's op-by-op bf16 rounds after every op
// (HF's RMSNorm rounds x * rsqrt(...) before the weight multiply; silu(gate) * up rounds silu first; RoPE's
// x * cos + rotate_half(x) * sin rounds each product and the sum): the kernels' results are the exact value
// rounded once, up to float32 error, and torch's may differ from them by an ulp or two of bf16.
#include "kernels.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>

namespace {

void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, op, ": ", name, " must be a float32 CPU tensor");
}

// t is a CPU tensor of `type` (the op's element type, taken from its first input).
void check_type(const at::Tensor& t, at::ScalarType type, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type, op, ": ", name, " must be a CPU tensor of ", type,
              ", not ", t.scalar_type());
}

// The index of the first maximum of row[0..n), or of its first NaN. Two vectorized passes: the maximum
// (a ternary, which vectorizes where std::max in an `omp simd` max reduction ran 14x slower), then the
// first chunk holding it, scanned one by one.
int64_t argmax_of(const float* row, int64_t n) {
  float top = -INFINITY;
  int nans = 0;
#pragma omp simd reduction(max : top) reduction(+ : nans)
  for (int64_t i = 0; i < n; ++i) {
    top = row[i] > top ? row[i] : top;
    nans += row[i] != row[i];
  }
  if (nans > 0)
    for (int64_t i = 0; i < n; ++i)
      if (row[i] != row[i]) return i;
  constexpr int64_t chunk = 256;
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t stop = std::min(n, start + chunk);
    int hits = 0;
#pragma omp simd reduction(+ : hits)
    for (int64_t i = start; i < stop; ++i) hits += row[i] == top;
    if (hits > 0)
      for (int64_t i = start; i < stop; ++i)
        if (row[i] == top) return i;
  }
  return 0;  // not reached: top is one of the values
}

// The norm's checks and output, shared by rms_norm and add_rms_norm: [..., size] float32 rows.
void check_norm_weight(const at::Tensor& weight, at::ScalarType type, int64_t size, const char* op) {
  check_type(weight, type, op, "weight");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == size && weight.is_contiguous(), op,
              ": weight must be a contiguous [", size, "]");
}

// out = row * rsqrt(squares / size + eps) * weight, where squares is the row's sum of squares.
template <typename T>
inline void normalize_row(const T* row, float squares, const T* weight, T* out, int64_t size, float eps) {
  const float inv = 1.f / std::sqrt(squares / size + eps);
#pragma omp simd
  for (int64_t i = 0; i < size; ++i) out[i] = from_float<T>(to_float(weight[i]) * (to_float(row[i]) * inv));
}

}  // namespace

// Llama's RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, over the last dimension; weight of x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const char* op = "rms_norm";
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be a CPU tensor");
  const int64_t size = x.size(-1);
  check_norm_weight(weight, x.scalar_type(), size, op);
  return dispatch_float_types(x.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    const auto input = x.contiguous();
    auto out = at::empty_like(input);
    const T* xp = data_as<const T>(input);
    const T* wp = data_as<const T>(weight);
    T* outp = data_as<T>(out);
    at::parallel_for(0, input.numel() / size, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* row = xp + r * size;
        float squares = 0.f;
#pragma omp simd reduction(+ : squares)
        for (int64_t i = 0; i < size; ++i) squares += to_float(row[i]) * to_float(row[i]);
        normalize_row(row, squares, wp, outp + r * size, size, static_cast<float>(eps));
      }
    });
    return out;
  });
}

// The residual add and the next RMSNorm in one pass: hidden += delta (in place: the forward owns its
// residual stream), then returns rms_norm(hidden) * weight. Two passes over the rows instead of three,
// and one call instead of two, twice a layer. In bfloat16 the sum is rounded to bf16 as it is stored and the
// norm is of the stored (rounded) sum, as torch's hidden.add_(delta) then rms_norm(hidden) computes it: the
// next layer reads the residual stream as stored, and its norm must be of the same values.
at::Tensor add_rms_norm(at::Tensor& hidden, const at::Tensor& delta, const at::Tensor& weight, double eps) {
  const char* op = "add_rms_norm";
  TORCH_CHECK(hidden.device().is_cpu(), op, ": hidden must be a CPU tensor");
  check_type(delta, hidden.scalar_type(), op, "delta");
  const int64_t size = hidden.size(-1);
  check_norm_weight(weight, hidden.scalar_type(), size, op);
  TORCH_CHECK(hidden.is_contiguous() && delta.sizes() == hidden.sizes(), op,
              ": hidden must be contiguous and delta of its shape");
  return dispatch_float_types(hidden.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    const auto addend = delta.contiguous();
    auto out = at::empty_like(hidden);
    T* hp = data_as<T>(hidden);
    const T* dp = data_as<const T>(addend);
    const T* wp = data_as<const T>(weight);
    T* outp = data_as<T>(out);
    at::parallel_for(0, hidden.numel() / size, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        T* row = hp + r * size;
        const T* d = dp + r * size;
        float squares = 0.f;
#pragma omp simd reduction(+ : squares)
        for (int64_t i = 0; i < size; ++i) {
          const T sum = from_float<T>(to_float(row[i]) + to_float(d[i]));
          row[i] = sum;
          squares += to_float(sum) * to_float(sum);
        }
        normalize_row(row, squares, wp, outp + r * size, size, static_cast<float>(eps));
      }
    });
    return out;
  });
}

// The gated MLP's middle: gate_up is [..., 2 * I] (gate then up, as the fused projection makes it);
// returns silu(gate) * up, [..., I].
at::Tensor silu_mul(const at::Tensor& gate_up) {
  const char* op = "silu_mul";
  TORCH_CHECK(gate_up.device().is_cpu(), op, ": gate_up must be a CPU tensor");
  const int64_t width = gate_up.size(-1);
  TORCH_CHECK(width % 2 == 0, op, ": last dimension ", width, " is not even");
  return dispatch_float_types(gate_up.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    const int64_t inter = width / 2;
    const auto input = gate_up.contiguous();
    auto sizes = input.sizes().vec();
    sizes.back() = inter;
    auto out = at::empty(sizes, input.options());
    const int64_t rows = input.numel() / width;
    const T* ip = data_as<const T>(input);
    T* outp = data_as<T>(out);
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* gate = ip + r * width;
        const T* up = gate + inter;
        T* o = outp + r * inter;
#pragma omp simd
        for (int64_t i = 0; i < inter; ++i) {
          const float g = to_float(gate[i]);
          o[i] = from_float<T>(g / (1.f + fast_exp(-g)) * to_float(up[i]));
        }
      }
    });
    return out;
  });
}

namespace {

// rope_and_cache_write's work, its inputs checked: T the element type of qkv and the caches, C of cos, sin.
template <typename T, typename C>
at::Tensor rope_and_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& key_cache,
                          at::Tensor& value_cache, const int64_t* slot, const int64_t* pos, int64_t q_heads,
                          int64_t kv_heads) {
  const int64_t B = qkv.size(0), W = qkv.size(1), heads = qkv.size(2), D = qkv.size(3);
  auto q = at::empty({B, W, q_heads, D}, qkv.options());
  const T* src = data_as<const T>(qkv);
  const C* cp = data_as<const C>(cos);
  const C* sp = data_as<const C>(sin);
  T* qp = data_as<T>(q);
  T* kp = data_as<T>(key_cache);
  T* vp = data_as<T>(value_cache);
  const int64_t slot_stride = key_cache.stride(0), position_stride = key_cache.stride(1);
  const int64_t half = D / 2;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t token = b * W + w;
        const T* row = src + token * heads * D;
        const C* c = cp + token * D;
        const C* s = sp + token * D;
        const int64_t at_cell = slot[b] * slot_stride + pos[token] * position_stride;
        for (int64_t h = 0; h < q_heads + kv_heads; ++h) {
          const T* x = row + h * D;
          T* o = h < q_heads ? qp + (token * q_heads + h) * D : kp + at_cell + (h - q_heads) * D;
#pragma omp simd
          for (int64_t i = 0; i < half; ++i)
            o[i] = from_float<T>(to_float(x[i]) * to_float(c[i]) + (-to_float(x[i + half])) * to_float(s[i]));
#pragma omp simd
          for (int64_t i = half; i < D; ++i)
            o[i] = from_float<T>(to_float(x[i]) * to_float(c[i]) + to_float(x[i - half]) * to_float(s[i]));
        }
        std::memcpy(vp + at_cell, row + (q_heads + kv_heads) * D, kv_heads * D * sizeof(T));
      }
  });
  return q;
}

}  // namespace

// RoPE and the KV-cache write of a forward's new tokens: qkv [B, W, q_heads + 2 * kv_heads, D] (the fused
// projection's output), cos, sin [B, W, D] (RoPE at each token's position, attention scaling included).
// Rotates q and k (x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]), writes k and v into the
// caches [slots, positions, kv_heads, D] at (slots[b], positions[b, w]), and returns q [B, W, q_heads, D].
// The paged cache calls it with its pool viewed as [num_blocks, block_size, kv_heads, D], W = 1 and one row
// per token: slots = each token's block, positions = its offset in the block.
// qkv and the caches share a dtype (float32 or bfloat16); cos and sin are of that dtype or float32.
// Pad tokens write to the cache's spare last position, which no query reads; rows run in parallel, so one
// row's pads never race another's.
at::Tensor rope_and_cache_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                at::Tensor& key_cache, at::Tensor& value_cache, const at::Tensor& slots,
                                const at::Tensor& positions, int64_t q_heads) {
  const char* op = "rope_and_cache_write";
  TORCH_CHECK(qkv.device().is_cpu(), op, ": qkv must be a CPU tensor");
  const auto type = qkv.scalar_type();
  check_type(cos, cos.scalar_type() == at::kFloat ? at::kFloat : type, op, "cos");
  check_type(sin, cos.scalar_type(), op, "sin");
  check_type(key_cache, type, op, "key_cache");
  check_type(value_cache, type, op, "value_cache");
  TORCH_CHECK(qkv.dim() == 4 && qkv.is_contiguous(), op, ": qkv must be a contiguous [B, W, heads, D]");
  const int64_t B = qkv.size(0), W = qkv.size(1), heads = qkv.size(2), D = qkv.size(3);
  const int64_t kv_heads = (heads - q_heads) / 2;
  TORCH_CHECK(q_heads > 0 && kv_heads > 0 && q_heads + 2 * kv_heads == heads && D % 2 == 0, op,
              ": qkv's ", heads, " heads of size ", D, " do not split into ", q_heads, " query heads and k, v");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.numel() == B * W * D && sin.numel() == B * W * D,
              op, ": cos and sin must be contiguous [B, W, D]");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous() && key_cache.sizes() == value_cache.sizes() &&
                  key_cache.dim() == 4 && key_cache.size(2) == kv_heads && key_cache.size(3) == D,
              op, ": caches must be contiguous [slots, positions, ", kv_heads, ", ", D, "]");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.is_contiguous() && slots.numel() == B, op,
              ": slots must be a contiguous int64 [B]");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.is_contiguous() && positions.numel() == B * W, op,
              ": positions must be a contiguous int64 [B, W]");
  const int64_t* slot = slots.data_ptr<int64_t>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(slot[b] >= 0 && slot[b] < key_cache.size(0), op, ": slot ", slot[b], " outside the cache's ",
                key_cache.size(0));
    for (int64_t w = 0; w < W; ++w)
      TORCH_CHECK(pos[b * W + w] >= 0 && pos[b * W + w] < key_cache.size(1), op, ": position ", pos[b * W + w],
                  " outside the cache");
  }

  return dispatch_float_types(type, op, [&](auto tag) {
    using T = decltype(tag);
    if (cos.scalar_type() == at::kFloat)
      return rope_and_write<T, float>(qkv, cos, sin, key_cache, value_cache, slot, pos, q_heads, kv_heads);
    return rope_and_write<T, T>(qkv, cos, sin, key_cache, value_cache, slot, pos, q_heads, kv_heads);
  });
}

// Each row's index of its largest value, as torch.argmax(x, -1) picks it: the first maximum, or the first
// NaN of a row that has one. x: [rows, n] float32 with contiguous rows. Greedy decoding's last step:
// torch's CPU argmax took ~60 us over a [32, 4096] batch of logits, this a few.
at::Tensor argmax_rows(const at::Tensor& x) {
  check_float(x, "argmax_rows", "x");
  TORCH_CHECK(x.dim() == 2 && x.size(1) > 0 && x.stride(1) == 1,
              "argmax_rows: x must be [rows, n > 0] with each row contiguous");
  const int64_t rows = x.size(0), n = x.size(1), stride = x.stride(0);
  auto out = at::empty({rows}, x.options().dtype(at::kLong));
  const float* xp = x.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) op[r] = argmax_of(xp + r * stride, n);
  });
  return out;
}
