"""The lean forward's CPU kernels (`csrc/`, float32 and bfloat16), built once per machine as one torch
extension. The engine calls them through `ops.KernelOps`, one implementation of its ops; `ops.TorchOps` is the
other.

- `decode_attention` (csrc/decode_attention.cpp): one new token per sequence over its cached past. A
  decode step reads the whole KV cache and is bounded by memory. SDPA's CPU kernel walks the cache one head
  at a time (a 256-byte read every 1 KiB in our [slot, position, head, dim] layout); this kernel reads each
  sequence's positions front to back, all heads together. Measured on the bundled model's shapes (batch 32,
  4 heads, cache not in L3, one thread): 215-300 us a layer against SDPA's 390-620 us, about what a plain
  sum over the same K/V views takes (186-280 us).
- `paged_decode_attention` (csrc/decode_attention.cpp): the same over a paged cache, a pool of blocks
  [num_blocks, block_size, kv_heads, D] read through int32 block tables [B, max_blocks] (entries past a
  row's length are never read). One row routine serves both layouts, reaching each position through an
  accessor (a stride, or per-position pointers filled block by block), so the two give the same bits for the
  same data. Each position's heads are about a 4 KiB page, where the hardware prefetchers stop, and in a
  paged cache the next block is anywhere: both prefetch the position two ahead.
- `rms_norm`, `add_rms_norm`, `silu_mul`, `rope_and_cache_write` (csrc/fused_ops.cpp): the small steps of a
  layer, each one pass instead of several PyTorch ops (rope_and_cache_write for prefill too: ~6 ms less over
  a prefill's 2,048 tokens). At batch 32 a decode step ran ~130 small ops; fusing them took the in-process
  decode step from 5.35-6.59 to 4.63-5.06 ms (three alternating runs each), with the same greedy tokens.
- `argmax_rows` (csrc/fused_ops.cpp): greedy sampling's argmax, as torch.argmax picks (~8 us against ~60
  over [32, 4096] logits).

Outputs differ from PyTorch's by float rounding (~1e-6); exponentials use the kernels' own vectorized
`fast_exp` (csrc/kernels.h, within 2 ulp).

bfloat16: every kernel but `argmax_rows` (logits are float32) also takes bf16 tensors. Values are widened to
float32 as they load, all arithmetic and accumulation is float32, and each output is rounded to bf16 once,
to nearest even as torch rounds (csrc/kernels.h). So each result is within half a bf16 ulp of the exact
value of its bf16 inputs, up to float32 error, which tests/unit/test_cpu_kernels.py checks against float64.
That is more accurate than torch's op-by-op bf16, which rounds after each op (HF's RMSNorm before the weight
multiply, silu before `* up`, each RoPE product and their sum, SDPA's softmax weights): torch's results are
up to ~2^-7 of the output's scale away, near-zero results of a cancellation many of their own ulps. The
kernels' bf16 and float32 results of the same model therefore differ, and neither is torch's bit for bit.
The conversions are integer ops the compiler vectorizes; AVX-512 BF16 instructions (`vdpbf16ps`) were not
used: decode attention, the one kernel with enough arithmetic for them, already reads the cache faster than
torch.sum reads the same bytes (bf16 ~700 against ~1,760 us a layer), i.e. it is bound by memory, not
instructions, and a `vdpbf16ps` score pass (tried) measured no different within this machine's noise.

Measured (`python -m bench.kernel_bench`, one thread on a shared 2-core Xeon with AVX-512 BF16, medians of
9 runs; us per call at batch 32 decode, 120M-Llama shapes: hidden 768, 12 heads x 64, intermediate 2048,
lengths 96-128, block size 16; attention per layer, 12 layers' caches in turn):

    op                      kernels f32  kernels bf16  torch bf16
    rms_norm                        5.1           7.6        23.6
    add_rms_norm                    6.2          10.9        29.1
    silu_mul                       32.1          42.7        47.0
    rope_and_cache_write            9.4          15.8        73.4
    decode_attention (slots)       1935           939        1502
    paged_decode_attention         1871           915        3209

In bf16 the small ops cost 1.3-1.8x their float32 time (a few us: the conversions), and decode attention,
the step's largest kernel, about half (half the bytes): a layer's kernels ~1.0 ms against ~2.0 in float32
and ~1.7 on torch's bf16 ops (1.1-4.6x a small op, 1.6x attention, 3.5x paged attention). Paged and contiguous attention are equal within noise at shuffled
block ids (and on the bundled model's 4 heads x 64: ~300-600 us f32, ~290-390 bf16 either way).
 Like torch's ops, each kernel releases the GIL while it runs,
so the event loop keeps serving during a step. The extension is built with torch's builder (a
C++ compiler and ninja; ~50 s on 2 cores) for this machine's CPU (-march=native, hence a CPU fingerprint in its
name), and cached under torch's extensions directory (`TORCH_EXTENSIONS_DIR`, default
~/.cache/torch_extensions); `make` builds it during setup (`python -m backends.hf.cpu_kernels`). Where it
cannot be built, `ops.choose_ops` gives the engine PyTorch's ops instead and a warning says why.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCES = [Path(__file__).parent / "csrc" / name for name in ("decode_attention.cpp", "fused_ops.cpp", "bindings.cpp")]
_lock = threading.Lock()
_loaded: dict[str, object] = {}  # "kernels" -> the module, or "error" -> why it is unavailable


def _cpu_fingerprint() -> str:
    """A short hash of the CPU's model and instruction sets: a build with -march=native for one CPU must
    not be loaded on another (shared home directories, copied caches)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    lines = sorted({line for line in text.splitlines() if line.startswith(("model name", "flags"))})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:10]


def _build():
    from torch.utils import cpp_extension

    # torch runs `ninja` from PATH; the `ninja` dependency installs it next to this interpreter, which is
    # not on PATH when the venv's scripts are run without activating it.
    if shutil.which("ninja") is None:
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return cpp_extension.load(
        name=f"turnout_cpu_kernels_{_cpu_fingerprint()}",
        sources=[str(source) for source in SOURCES],
        # -fopenmp: at::parallel_for is OpenMP pragmas in ATen's headers (without it they run on one thread).
        # The library it links is found already loaded, as torch's own libgomp.so.1: one OpenMP runtime.
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def load():
    """The compiled kernels, building them on first use on this machine; None where they cannot be built
    (the reason is logged once)."""
    with _lock:
        if not _loaded:
            logger.info("loading the CPU kernels (built once per machine: ~50 s the first time)")
            try:
                _loaded["kernels"] = _build()
            except Exception as exc:  # no compiler, no ninja, a failed build: PyTorch ops instead
                _loaded["error"] = exc
                logger.warning("CPU kernels unavailable, the lean forward uses PyTorch ops: %s", exc)
        return _loaded.get("kernels")


def main() -> int:
    """Build (or find) the kernels for this machine, as `make` does during setup."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kernels = load()
    if kernels is None:
        print(f"CPU kernels: not built ({_loaded['error']}); the engine will use PyTorch ops", file=sys.stderr)
        return 0  # not an error: the server works without them
    print(f"CPU kernels: ready ({Path(kernels.__file__).name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
