#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "one query token per row over its cached keys and values");
  m.def("rms_norm", &rms_norm, "x * rsqrt(mean(x^2) + eps) * weight over the last dimension");
  m.def("silu_mul", &silu_mul, "silu(gate) * up of a fused [..., 2 * intermediate] projection");
  m.def("rope_and_cache_write", &rope_and_cache_write,
        "decode: rotate q and k, write k and v into the slot cache, return q");
}
