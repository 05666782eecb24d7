"""The one way a tool writes an artifact directory, and the checks it makes on the ones it reads.

A tool checks its destination before any work (``check_out_dir``), writes everything into a hidden
sibling directory (``staged_output``) and swaps that in only once it is complete. A run that fails or
is interrupted at any point leaves the destination as it was: the previous artifact, or nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools.manifest import MANIFEST_NAME


def require_model_dir(path: str | Path, what: str = "--model") -> Path:
    root = Path(path)
    if not (root / "config.json").is_file():
        raise ValueError(f"{what} {str(root)!r} is not a model directory (no config.json)")
    return root


def require_adapter_dir(path: str | Path, what: str = "adapter") -> Path:
    root = Path(path)
    if not (root / "adapter_config.json").is_file():
        raise ValueError(f"{what} {str(root)!r} is not a LoRA adapter directory (no adapter_config.json)")
    return root


def check_out_dir(out: str | Path) -> Path:
    """``out`` resolved, if a tool may write an artifact there: it does not exist, is empty, or holds a
    previous artifact (a manifest). Anything else is refused, so a typo cannot wipe unrelated files.
    Tools call it before any training, so a refusal costs nothing."""
    root = Path(out).resolve()
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{str(root)!r} exists and is not a directory")
    if root.exists() and any(root.iterdir()) and not (root / MANIFEST_NAME).is_file():
        raise FileExistsError(f"refusing to replace {str(root)!r}: it is not empty and holds no {MANIFEST_NAME}")
    return root


@contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """A new directory beside ``out`` to write the artifact into; it replaces ``out`` when the block ends
    without an error, and is deleted when the block raises (``out`` is then untouched)."""
    root = check_out_dir(out)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        yield staging
        _swap_into_place(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` with ``staging`` with only a moment in which neither is complete."""
    _make_readable(staging)
    if not out.exists():
        staging.rename(out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)  # left by a run killed between the two renames below
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old)


def _make_readable(root: Path) -> None:
    """mkdtemp makes a private directory and some writers (safetensors) private files; an artifact is
    meant to be read by the server's user."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
