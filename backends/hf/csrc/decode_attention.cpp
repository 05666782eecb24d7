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

namespace {

struct Views {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t qsb, qsh, ksb, ksl, vsb, vsl;
  int64_t Hq, D;
  float scale;
};

// One row b of the batch over its first n positions. kD is head_dim fixed at compile time (0: use v.D):
// with it the dot products and value sums are a few unrolled vector instructions, where a runtime length
// cost each of the ~400 per row a loop's set-up and tail (9 us a row at length 96, now ~3x less).
// kv_offset[h]: where query head h's key/value head starts within a position (GQA shares them).
template <int kD>
void attend_row(const Views& v, int64_t b, int64_t n, const int64_t* kv_offset, std::vector<float>& scores,
                std::vector<float>& acc, std::vector<float>& top, std::vector<float>& sum) {
  const int64_t Hq = v.Hq, D = kD > 0 ? kD : v.D;
  scores.resize(n * Hq);
  float* score = scores.data();
  std::fill(top.begin(), top.end(), -INFINITY);
  for (int64_t l = 0; l < n; ++l) {
    const float* key_row = v.k + b * v.ksb + l * v.ksl;
    for (int64_t h = 0; h < Hq; ++h) {
      const float* key = key_row + kv_offset[h];
      const float* query = v.q + b * v.qsb + h * v.qsh;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < D; ++d) dot += query[d] * key[d];
      const float x = dot * v.scale;
      score[l * Hq + h] = x;
      top[h] = x > top[h] ? x : top[h];
    }
  }
  // Softmax numerators: the exponentials as one flat loop, which vectorizes (per position, Hq is short).
  for (int64_t l = 0; l < n; ++l)
    for (int64_t h = 0; h < Hq; ++h) score[l * Hq + h] -= top[h];
#pragma omp simd
  for (int64_t i = 0; i < n * Hq; ++i) score[i] = fast_exp(score[i]);
  std::fill(sum.begin(), sum.end(), 0.f);
  for (int64_t l = 0; l < n; ++l)
    for (int64_t h = 0; h < Hq; ++h) sum[h] += score[l * Hq + h];
  std::fill(acc.begin(), acc.end(), 0.f);
  for (int64_t l = 0; l < n; ++l) {
    const float* value_row = v.v + b * v.vsb + l * v.vsl;
    for (int64_t h = 0; h < Hq; ++h) {
      const float* value = value_row + kv_offset[h];
      const float p = score[l * Hq + h];
      float* a = acc.data() + h * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) a[d] += p * value[d];
    }
  }
  float* o = v.out + b * Hq * D;
  for (int64_t h = 0; h < Hq; ++h) {
    const float inv = 1.f / sum[h];
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) o[h * D + d] = acc[h * D + d] * inv;
  }
}

}  // namespace

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

  TORCH_CHECK(k.stride(2) == v.stride(2), "decode_attention: k and v must share a layout");
  const int64_t group = Hq / Hkv;
  auto out = at::empty({B, Hq, D}, q.options());
  const Views views{q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), out.data_ptr<float>(),
                    q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                    Hq, D, static_cast<float>(scale)};
  std::vector<int64_t> kv_offset(Hq);
  for (int64_t h = 0; h < Hq; ++h) kv_offset[h] = (h / group) * k.stride(2);

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, acc(Hq * D), top(Hq), sum(Hq);
    for (int64_t b = begin; b < end; ++b) {
      switch (D) {
        case 64: attend_row<64>(views, b, len[b], kv_offset.data(), scores, acc, top, sum); break;
        case 128: attend_row<128>(views, b, len[b], kv_offset.data(), scores, acc, top, sum); break;
        default: attend_row<0>(views, b, len[b], kv_offset.data(), scores, acc, top, sum);
      }
    }
  });
  return out;
}
