// Attention of one new token per sequence over its cached keys and values (CPU, float32).
//
// q: [batch, q_heads, head_dim]; k, v: [batch, length, kv_heads, head_dim], views into the slot KV cache
// (the last dimension contiguous); lengths[b]: how many of the first cached positions row b attends to.
// Per row, one pass over its keys reads every head of a position together (adjacent in the cache), a
// softmax per head, then one pass over its values: the cache is read once, front to back, which is what
// bounds decode attention here (SDPA's CPU kernel walks each head separately).
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& lengths, double scale) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "decode_attention: CPU tensors only");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "decode_attention: float32 only");
  TORCH_CHECK(q.dim() == 3 && k.dim() == 4 && v.dim() == 4, "decode_attention: q [B, H, D], k and v [B, L, H_kv, D]");
  TORCH_CHECK(q.stride(2) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "decode_attention: head_dim must be contiguous");
  TORCH_CHECK(k.sizes() == v.sizes(), "decode_attention: k and v differ in shape");
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2), L = k.size(1), Hkv = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(3) == D && Hkv > 0 && Hq % Hkv == 0,
              "decode_attention: k/v batch, head count or head_dim do not fit q");
  TORCH_CHECK(lengths.scalar_type() == at::kLong && lengths.dim() == 1 && lengths.size(0) == B && lengths.is_contiguous(),
              "decode_attention: lengths must be a contiguous int64 [B]");
  const int64_t* len = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(len[b] >= 1 && len[b] <= L, "decode_attention: length ", len[b], " of row ", b, " outside 1..", L);

  const int64_t group = Hq / Hkv;
  auto out = at::empty({B, Hq, D}, q.options());
  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const int64_t qsb = q.stride(0), qsh = q.stride(1);
  const int64_t ksb = k.stride(0), ksl = k.stride(1), ksh = k.stride(2);
  const int64_t vsb = v.stride(0), vsl = v.stride(1), vsh = v.stride(2);
  const float s = static_cast<float>(scale);

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, acc(Hq * D), top(Hq), sum(Hq);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = len[b];
      scores.resize(n * Hq);
      std::fill(top.begin(), top.end(), -INFINITY);
      for (int64_t l = 0; l < n; ++l) {
        const float* key_row = kp + b * ksb + l * ksl;
        for (int64_t h = 0; h < Hq; ++h) {
          const float* key = key_row + (h / group) * ksh;
          const float* query = qp + b * qsb + h * qsh;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < D; ++d) dot += query[d] * key[d];
          const float x = dot * s;
          scores[l * Hq + h] = x;
          top[h] = std::max(top[h], x);
        }
      }
      // Softmax numerators: the exponentials as one flat loop, which vectorizes (per position, Hq is short).
      float* score = scores.data();
      for (int64_t l = 0; l < n; ++l)
        for (int64_t h = 0; h < Hq; ++h) score[l * Hq + h] -= top[h];
#pragma omp simd
      for (int64_t i = 0; i < n * Hq; ++i) score[i] = fast_exp(score[i]);
      std::fill(sum.begin(), sum.end(), 0.f);
      for (int64_t l = 0; l < n; ++l)
        for (int64_t h = 0; h < Hq; ++h) sum[h] += score[l * Hq + h];
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t l = 0; l < n; ++l) {
        const float* value_row = vp + b * vsb + l * vsl;
        for (int64_t h = 0; h < Hq; ++h) {
          const float* value = value_row + (h / group) * vsh;
          const float p = scores[l * Hq + h];
          float* a = acc.data() + h * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) a[d] += p * value[d];
        }
      }
      float* o = op + b * Hq * D;
      for (int64_t h = 0; h < Hq; ++h) {
        const float inv = 1.f / sum[h];
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[h * D + d] = acc[h * D + d] * inv;
      }
    }
  });
  return out;
}
