"""What a reader needs to judge benchmark numbers: the machine, the threading setup, and whether anything
else used the CPUs meanwhile (on a shared 2-core box that decides whether a number means anything)."""

from __future__ import annotations

import os
import platform

import psutil

# Inherited by the server child too; OMP_WAIT_POLICY in particular changes results a lot (README).
THREADING_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")


def machine_info(threads: int) -> dict:
    import torch
    import transformers

    return {"cpus": os.cpu_count(), "torch_threads": threads,
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
            "threading_env": {k: os.environ[k] for k in THREADING_ENV if k in os.environ},
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def _system_busy_seconds() -> float:
    """CPU seconds all processes have used since boot, machine-wide."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _own_seconds() -> float:
    """CPU seconds of this process plus its children that have been waited for (the server, once stopped)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherCpuMeter:
    """CPU seconds used by everything except this process and its (stopped) children between `start()` and
    `stop()`: machine-wide busy time minus our own. Unlike the load average it does not count the
    benchmark's own load, and unlike per-process accounting it also sees short-lived processes. Call
    `stop()` after the server child has exited, or its time counts as someone else's."""

    def __init__(self):
        self._busy = self._own = 0.0

    def start(self) -> None:
        self._busy, self._own = _system_busy_seconds(), _own_seconds()

    def stop(self) -> float:
        others = (_system_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        return round(max(0.0, others), 2)
