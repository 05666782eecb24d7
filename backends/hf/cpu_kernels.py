"""The lean forward's CPU kernels (`csrc/`, float32), built once per machine as one torch extension. The
engine calls them through `ops.KernelOps`, one implementation of its ops; `ops.TorchOps` is the other.

- `decode_attention` (csrc/decode_attention.cpp): one new token per sequence over its cached past. A
  decode step reads the whole KV cache and is bounded by memory. SDPA's CPU kernel walks the cache one head
  at a time (a 256-byte read every 1 KiB in our [slot, position, head, dim] layout); this kernel reads each
  sequence's positions front to back, all heads together. Measured on the bundled model's shapes (batch 32,
  4 heads, cache not in L3, one thread): 215-300 us a layer against SDPA's 390-620 us, about what a plain
  sum over the same K/V views takes (186-280 us).
- `rms_norm`, `add_rms_norm`, `silu_mul`, `rope_and_cache_write` (csrc/fused_ops.cpp): the small steps of a
  layer, each one pass instead of several PyTorch ops (rope_and_cache_write for prefill too: ~6 ms less over
  a prefill's 2,048 tokens). At batch 32 a decode step ran ~130 small ops; fusing them took the in-process
  decode step from 5.35-6.59 to 4.63-5.06 ms (three alternating runs each), with the same greedy tokens.
- `argmax_rows` (csrc/fused_ops.cpp): greedy sampling's argmax, as torch.argmax picks (~8 us against ~60
  over [32, 4096] logits).

Outputs differ from PyTorch's by float rounding (~1e-6); exponentials use the kernels' own vectorized
`fast_exp` (csrc/kernels.h, within 2 ulp). Like torch's ops, each kernel releases the GIL while it runs,
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
