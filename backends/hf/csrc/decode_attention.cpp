// Attention of one new token per sequence over its cached keys and values (CPU, float32 or bfloat16), over
// two cache layouts:
//
// - decode_attention: q [batch, q_heads, head_dim]; k, v [batch, length, kv_heads, head_dim], views into the
//   slot KV cache (the last dimension contiguous); lengths[b]: how many of the first cached positions row b
//   attends to.
// - paged_decode_attention: the same q and lengths over a block pool, key_cache and value_cache
//   [num_blocks, block_size, kv_heads, head_dim]; row b's position p is at block block_tables[b, p / block_size],
//   offset p % block_size.
//
// Both run one routine per row (attend_row) that reaches position l through an accessor: a stride for the
// slot cache, a table of per-position pointers (filled block by block, no division per position) for the
// paged one. Per row, one pass over its keys reads every head of a position together (adjacent in the cache),
// a softmax per head, then one pass over its values: the cache is read once, front to back, which is what
// bounds decode attention here (SDPA's CPU kernel walks each head separately).
//
// bfloat16: q, k and v are read as bf16 and converted to float32 as they load; scores, softmax and the
// value sums are float32 and the output is rounded to bf16 once. That is more accurate than torch's bf16
// SDPA, which also accumulates in float32 but rounds its intermediate (e.g. the softmax weights) to bf16.
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// Per-thread buffers, reused across the rows a thread runs.
struct Scratch {
  std::vector<float> query, scores, acc, top, sum;
  std::vector<const void*> keys, values;  // the paged accessor's per-position pointers
};

// The slot cache's rows: position l at base + l * stride.
template <typename T>
struct StridedRows {
  const T* k;
  const T* v;
  int64_t k_stride, v_stride;
  const T* key(int64_t l) const { return k + l * k_stride; }
  const T* value(int64_t l) const { return v + l * v_stride; }
};

// The paged cache's rows: one pointer per position, to the first head of that position.
template <typename T>
struct PointerRows {
  const void* const* k;
  const void* const* v;
  const T* key(int64_t l) const { return static_cast<const T*>(k[l]); }
  const T* value(int64_t l) const { return static_cast<const T*>(v[l]); }
};

// query[0..D) . key[0..D), float32 query (converted once per row) against a float or bf16 key.
template <typename T, int kD>
inline float dot(const float* query, const T* key, int64_t D) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < (kD > 0 ? kD : D); ++d) acc += query[d] * to_float(key[d]);
  return acc;
}

// Prefetches the `elements` of T at p into L1, one hint per cache line. A position's keys (all heads) are a
// few KiB, about one 4 KiB page: the hardware prefetchers, which stop at page boundaries, do not fetch the
// next position in time, and in a paged cache the next block is anywhere. Hinting the position
// kPrefetchAhead ahead took the bf16 attention of batch 32 x 12 heads x 64 over
// lengths 96-128 from ~1,270 to ~700-1,050 us a layer (one thread, a noisy shared machine), and brought a paged
// cache at shuffled block ids (~1,930 us in float32, 17% slower than the contiguous ~1,650 us) level with it.
constexpr int64_t kPrefetchAhead = 2;

template <typename T>
inline void prefetch(const T* p, int64_t elements) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t offset = 0; offset < elements * static_cast<int64_t>(sizeof(T)); offset += 64)
    __builtin_prefetch(bytes + offset, 0, 3);
}

// One row over its first n positions. kD is head_dim fixed at compile time (0: use D): with it the dot
// products and value sums are a few unrolled vector instructions, where a runtime length cost each of the
// ~400 per row a loop's set-up and tail (9 us a row at length 96, now ~3x less).
// q: the row's [Hq, D] query (heads q_stride apart); kv_offset[h]: where query head h's key/value head
// starts within a position (GQA shares them); out: the row's [Hq, D] output.
template <typename T, int kD, typename Rows>
void attend_row(const Rows& rows, int64_t n, const T* q, int64_t q_stride, int64_t Hq, int64_t D_runtime,
                const int64_t* kv_offset, int64_t row_elements, float scale, T* out, Scratch& s) {
  const int64_t D = kD > 0 ? kD : D_runtime;
  s.query.resize(Hq * D);
  float* query = s.query.data();
  for (int64_t h = 0; h < Hq; ++h)
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) query[h * D + d] = to_float(q[h * q_stride + d]);
  s.scores.resize(n * Hq);
  float* score = s.scores.data();
  float* top = s.top.data();
  std::fill(top, top + Hq, -INFINITY);
  for (int64_t l = 0; l < n; ++l) {
    const T* key_row = rows.key(l);
    if (l + kPrefetchAhead < n) prefetch(rows.key(l + kPrefetchAhead), row_elements);
    for (int64_t h = 0; h < Hq; ++h) {
      const float x = dot<T, kD>(query + h * D, key_row + kv_offset[h], D) * scale;
      score[l * Hq + h] = x;
      top[h] = x > top[h] ? x : top[h];
    }
  }
  // Softmax numerators: the exponentials as one flat loop, which vectorizes (per position, Hq is short).
  for (int64_t l = 0; l < n; ++l)
    for (int64_t h = 0; h < Hq; ++h) score[l * Hq + h] -= top[h];
#pragma omp simd
  for (int64_t i = 0; i < n * Hq; ++i) score[i] = fast_exp(score[i]);
  float* sum = s.sum.data();
  std::fill(sum, sum + Hq, 0.f);
  for (int64_t l = 0; l < n; ++l)
    for (int64_t h = 0; h < Hq; ++h) sum[h] += score[l * Hq + h];
  s.acc.assign(Hq * D, 0.f);
  for (int64_t l = 0; l < n; ++l) {
    const T* value_row = rows.value(l);
    if (l + kPrefetchAhead < n) prefetch(rows.value(l + kPrefetchAhead), row_elements);
    for (int64_t h = 0; h < Hq; ++h) {
      const T* value = value_row + kv_offset[h];
      const float p = score[l * Hq + h];
      float* a = s.acc.data() + h * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) a[d] += p * to_float(value[d]);
    }
  }
  for (int64_t h = 0; h < Hq; ++h) {
    const float inv = 1.f / sum[h];
    const float* a = s.acc.data() + h * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) out[h * D + d] = from_float<T>(a[d] * inv);
  }
}

template <typename T, typename Rows>
void attend_row_any_d(const Rows& rows, int64_t n, const T* q, int64_t q_stride, int64_t Hq, int64_t D,
                      const int64_t* kv_offset, float scale, T* out, Scratch& s) {
  const int64_t row_elements = kv_offset[Hq - 1] + D;  // a position's keys (values): first head to last
  switch (D) {
    case 64: attend_row<T, 64>(rows, n, q, q_stride, Hq, D, kv_offset, row_elements, scale, out, s); break;
    case 128: attend_row<T, 128>(rows, n, q, q_stride, Hq, D, kv_offset, row_elements, scale, out, s); break;
    default: attend_row<T, 0>(rows, n, q, q_stride, Hq, D, kv_offset, row_elements, scale, out, s);
  }
}

void check_query(const at::Tensor& q, const char* op) {
  TORCH_CHECK(q.device().is_cpu(), op, ": CPU tensors only");
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1, op, ": q must be [B, H, D] with head_dim contiguous");
}

void check_lengths(const at::Tensor& lengths, int64_t B, int64_t max_length, const char* op) {
  TORCH_CHECK(lengths.device().is_cpu() && lengths.scalar_type() == at::kLong && lengths.dim() == 1 &&
                  lengths.size(0) == B && lengths.is_contiguous(),
              op, ": lengths must be a contiguous int64 [B]");
  const int64_t* len = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(len[b] >= 1 && len[b] <= max_length, op, ": length ", len[b], " of row ", b, " outside 1..",
                max_length);
}

}  // namespace

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& lengths, double scale) {
  const char* op = "decode_attention";
  check_query(q, op);
  TORCH_CHECK(k.device().is_cpu() && v.device().is_cpu(), op, ": CPU tensors only");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k and v must share a dtype");
  TORCH_CHECK(k.dim() == 4 && v.dim() == 4, op, ": q [B, H, D], k and v [B, L, H_kv, D]");
  TORCH_CHECK(k.stride(3) == 1 && v.stride(3) == 1, op, ": head_dim must be contiguous");
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v differ in shape");
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2), L = k.size(1), Hkv = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(3) == D && Hkv > 0 && Hq % Hkv == 0, op,
              ": k/v batch, head count or head_dim do not fit q");
  check_lengths(lengths, B, L, op);
  TORCH_CHECK(k.stride(2) == v.stride(2), op, ": k and v must share a layout");
  const int64_t* len = lengths.data_ptr<int64_t>();
  const int64_t group = Hq / Hkv;
  std::vector<int64_t> kv_offset(Hq);
  for (int64_t h = 0; h < Hq; ++h) kv_offset[h] = (h / group) * k.stride(2);

  return dispatch_float_types(q.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    auto out = at::empty({B, Hq, D}, q.options());
    const T* qp = data_as<const T>(q);
    const T* kp = data_as<const T>(k);
    const T* vp = data_as<const T>(v);
    T* op_ = data_as<T>(out);
    const float s = static_cast<float>(scale);
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      Scratch scratch;
      scratch.top.resize(Hq);
      scratch.sum.resize(Hq);
      for (int64_t b = begin; b < end; ++b) {
        const StridedRows<T> rows{kp + b * k.stride(0), vp + b * v.stride(0), k.stride(1), v.stride(1)};
        attend_row_any_d<T>(rows, len[b], qp + b * q.stride(0), q.stride(1), Hq, D, kv_offset.data(), s,
                            op_ + b * Hq * D, scratch);
      }
    });
    return out;
  });
}

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                                  const at::Tensor& block_tables, const at::Tensor& lengths, double scale) {
  const char* op = "paged_decode_attention";
  check_query(q, op);
  TORCH_CHECK(key_cache.device().is_cpu() && value_cache.device().is_cpu() && block_tables.device().is_cpu(), op,
              ": CPU tensors only");
  TORCH_CHECK(key_cache.scalar_type() == q.scalar_type() && value_cache.scalar_type() == q.scalar_type(), op,
              ": q and the caches must share a dtype");
  TORCH_CHECK(key_cache.dim() == 4 && key_cache.is_contiguous() && value_cache.is_contiguous() &&
                  key_cache.sizes() == value_cache.sizes(),
              op, ": key_cache and value_cache must be contiguous [num_blocks, block_size, H_kv, D] of one shape");
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t num_blocks = key_cache.size(0), block_size = key_cache.size(1), Hkv = key_cache.size(2);
  TORCH_CHECK(key_cache.size(3) == D && Hkv > 0 && Hq % Hkv == 0 && block_size > 0, op,
              ": the caches' head count, head_dim or block size do not fit q");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.dim() == 2 && block_tables.size(0) == B &&
                  block_tables.is_contiguous(),
              op, ": block_tables must be a contiguous int32 [B, max_blocks]");
  const int64_t max_blocks = block_tables.size(1);
  check_lengths(lengths, B, max_blocks * block_size, op);
  const int64_t* len = lengths.data_ptr<int64_t>();
  const int32_t* table = block_tables.data_ptr<int32_t>();
  // Only the blocks a row reads must be valid: entries past its length are unused (e.g. -1).
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < (len[b] + block_size - 1) / block_size; ++i) {
      const int32_t block = table[b * max_blocks + i];
      TORCH_CHECK(block >= 0 && block < num_blocks, op, ": block id ", block, " at row ", b, ", entry ", i,
                  " outside the cache's ", num_blocks, " blocks");
    }
  const int64_t group = Hq / Hkv;
  std::vector<int64_t> kv_offset(Hq);
  for (int64_t h = 0; h < Hq; ++h) kv_offset[h] = (h / group) * D;
  const int64_t position_stride = Hkv * D, block_stride = block_size * position_stride;

  return dispatch_float_types(q.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    auto out = at::empty({B, Hq, D}, q.options());
    const T* qp = data_as<const T>(q);
    const T* kp = data_as<const T>(key_cache);
    const T* vp = data_as<const T>(value_cache);
    T* op_ = data_as<T>(out);
    const float s = static_cast<float>(scale);
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      Scratch scratch;
      scratch.top.resize(Hq);
      scratch.sum.resize(Hq);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t n = len[b];
        scratch.keys.resize(n);
        scratch.values.resize(n);
        const void** keys = scratch.keys.data();
        const void** values = scratch.values.data();
        for (int64_t l = 0, i = 0; l < n; ++i) {
          const int64_t start = table[b * max_blocks + i] * block_stride;
          for (int64_t o = 0; o < block_size && l < n; ++o, ++l) {
            keys[l] = kp + start + o * position_stride;
            values[l] = vp + start + o * position_stride;
          }
        }
        const PointerRows<T> rows{keys, values};
        attend_row_any_d<T>(rows, n, qp + b * q.stride(0), q.stride(1), Hq, D, kv_offset.data(), s,
                            op_ + b * Hq * D, scratch);
      }
    });
    return out;
  });
}
