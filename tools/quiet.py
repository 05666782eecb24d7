"""Silence import-time warnings that say nothing to a user of a CPU machine."""

from __future__ import annotations

import logging

# torchao (installed for `turnout tools quantize`) logs that it cannot load its CUDA-only kernels, and torch
# warns about torchao's enums, whenever transformers imports them: on every run, on every CPU machine.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_import_warnings() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
