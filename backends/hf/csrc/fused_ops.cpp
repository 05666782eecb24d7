// The small steps of a decode layer, each one pass instead of several PyTorch ops: at batch 32 a decode
// step ran ~130 small ops, each costing more in dispatch than in arithmetic.
#include "kernels.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>

namespace {

void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, op, ": ", name, " must be a float32 CPU tensor");
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
void check_norm_weight(const at::Tensor& weight, int64_t size, const char* op) {
  check_float(weight, op, "weight");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == size && weight.is_contiguous(), op,
              ": weight must be a contiguous [", size, "]");
}

// out = row * rsqrt(squares / size + eps) * weight, where squares is the row's sum of squares.
inline void normalize_row(const float* row, float squares, const float* weight, float* out, int64_t size,
                          float eps) {
  const float inv = 1.f / std::sqrt(squares / size + eps);
#pragma omp simd
  for (int64_t i = 0; i < size; ++i) out[i] = weight[i] * (row[i] * inv);
}

}  // namespace

// Llama's RMSNorm in float32: x * rsqrt(mean(x^2) + eps) * weight, over the last dimension.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_float(x, "rms_norm", "x");
  const int64_t size = x.size(-1);
  check_norm_weight(weight, size, "rms_norm");
  const auto input = x.contiguous();
  auto out = at::empty_like(input);
  const float* xp = input.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, input.numel() / size, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * size;
      float squares = 0.f;
#pragma omp simd reduction(+ : squares)
      for (int64_t i = 0; i < size; ++i) squares += row[i] * row[i];
      normalize_row(row, squares, wp, op + r * size, size, static_cast<float>(eps));
    }
  });
  return out;
}

// The residual add and the next RMSNorm in one pass: hidden += delta (in place: the forward owns its
// residual stream), then returns rms_norm(hidden) * weight. Two passes over the rows instead of three,
// and one call instead of two, twice a layer.
at::Tensor add_rms_norm(at::Tensor& hidden, const at::Tensor& delta, const at::Tensor& weight, double eps) {
  check_float(hidden, "add_rms_norm", "hidden");
  check_float(delta, "add_rms_norm", "delta");
  const int64_t size = hidden.size(-1);
  check_norm_weight(weight, size, "add_rms_norm");
  TORCH_CHECK(hidden.is_contiguous() && delta.sizes() == hidden.sizes(),
              "add_rms_norm: hidden must be contiguous and delta of its shape");
  const auto addend = delta.contiguous();
  auto out = at::empty_like(hidden);
  float* hp = hidden.data_ptr<float>();
  const float* dp = addend.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, hidden.numel() / size, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* row = hp + r * size;
      const float* d = dp + r * size;
      float squares = 0.f;
#pragma omp simd reduction(+ : squares)
      for (int64_t i = 0; i < size; ++i) {
        row[i] += d[i];
        squares += row[i] * row[i];
      }
      normalize_row(row, squares, wp, op + r * size, size, static_cast<float>(eps));
    }
  });
  return out;
}

// The gated MLP's middle: gate_up is [..., 2 * I] (gate then up, as the fused projection makes it);
// returns silu(gate) * up, [..., I].
at::Tensor silu_mul(const at::Tensor& gate_up) {
  check_float(gate_up, "silu_mul", "gate_up");
  const int64_t width = gate_up.size(-1);
  TORCH_CHECK(width % 2 == 0, "silu_mul: last dimension ", width, " is not even");
  const int64_t inter = width / 2;
  const auto input = gate_up.contiguous();
  auto sizes = input.sizes().vec();
  sizes.back() = inter;
  auto out = at::empty(sizes, input.options());
  const int64_t rows = input.numel() / width;
  const float* ip = input.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gate = ip + r * width;
      const float* up = gate + inter;
      float* o = op + r * inter;
#pragma omp simd
      for (int64_t i = 0; i < inter; ++i) o[i] = gate[i] / (1.f + fast_exp(-gate[i])) * up[i];
    }
  });
  return out;
}

// RoPE and the KV-cache write of a forward's new tokens: qkv [B, W, q_heads + 2 * kv_heads, D] (the fused
// projection's output), cos, sin [B, W, D] (RoPE at each token's position, attention scaling included).
// Rotates q and k (x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]), writes k and v into the
// caches [slots, positions, kv_heads, D] at (slots[b], positions[b, w]), and returns q [B, W, q_heads, D].
// Pad tokens write to the cache's spare last position, which no query reads; rows run in parallel, so one
// row's pads never race another's.
at::Tensor rope_and_cache_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                at::Tensor& key_cache, at::Tensor& value_cache, const at::Tensor& slots,
                                const at::Tensor& positions, int64_t q_heads) {
  const char* op = "rope_and_cache_write";
  check_float(qkv, op, "qkv");
  check_float(cos, op, "cos");
  check_float(sin, op, "sin");
  check_float(key_cache, op, "key_cache");
  check_float(value_cache, op, "value_cache");
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

  auto q = at::empty({B, W, q_heads, D}, qkv.options());
  const float* src = qkv.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  float* qp = q.data_ptr<float>();
  float* kp = key_cache.data_ptr<float>();
  float* vp = value_cache.data_ptr<float>();
  const int64_t slot_stride = key_cache.stride(0), position_stride = key_cache.stride(1);
  const int64_t half = D / 2;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t token = b * W + w;
        const float* row = src + token * heads * D;
        const float* c = cp + token * D;
        const float* s = sp + token * D;
        const int64_t at_cell = slot[b] * slot_stride + pos[token] * position_stride;
        for (int64_t h = 0; h < q_heads + kv_heads; ++h) {
          const float* x = row + h * D;
          float* o = h < q_heads ? qp + (token * q_heads + h) * D : kp + at_cell + (h - q_heads) * D;
          for (int64_t i = 0; i < half; ++i) o[i] = x[i] * c[i] + (-x[i + half]) * s[i];
          for (int64_t i = half; i < D; ++i) o[i] = x[i] * c[i] + x[i - half] * s[i];
        }
        std::memcpy(vp + at_cell, row + (q_heads + kv_heads) * D, kv_heads * D * sizeof(float));
      }
  });
  return q;
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
