#include "kernels.h"

// Each kernel lets go of the GIL while it runs, as torch's own ops do: the engine thread calls them, and
// the event loop (token delivery, new requests) must not wait behind a decode step's attention or a
// prefill's MLP. They touch no Python objects; pybind takes the GIL back before converting results or errors.
using release_gil = pybind11::call_guard<pybind11::gil_scoped_release>;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "one query token per row over its cached keys and values",
        release_gil());
  m.def("paged_decode_attention", &paged_decode_attention,
        "one query token per row over its keys and values in a paged cache, read through block tables",
        release_gil());
  m.def("rms_norm", &rms_norm, "x * rsqrt(mean(x^2) + eps) * weight over the last dimension", release_gil());
  m.def("add_rms_norm", &add_rms_norm, "hidden += delta in place, then rms_norm(hidden) * weight", release_gil());
  m.def("silu_mul", &silu_mul, "silu(gate) * up of a fused [..., 2 * intermediate] projection", release_gil());
  m.def("argmax_rows", &argmax_rows, "each row's index of its largest value, as torch.argmax(x, -1)",
        release_gil());
  m.def("rope_and_cache_write", &rope_and_cache_write,
        "rotate q and k of new tokens, write k and v into the slot cache, return q", release_gil());
}
