"""The artifact manifest: how a model directory was made, how good it is, and what it contains.

``manifest.json`` sits next to the weights. Its ``files`` table (sha256 and size of every other
file) lets the server refuse a corrupted or half-copied model before loading it; the rest
(command line, arguments, seeds, tool versions, perplexities) lets a person rebuild and judge it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(directory: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256": hex, "size": bytes}}`` for every file but the manifest.

    Sorted by path so the manifest is stable. Hidden files and ``__pycache__`` are skipped.
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {str(root)!r}")
    digests: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.as_posix() == MANIFEST_NAME:
            continue
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        digests[rel.as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return digests


def verify_digests(directory: str | Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """Problems found comparing ``directory`` with its manifest's ``files``; empty means intact."""
    root = Path(directory)
    manifest = manifest if manifest is not None else read_manifest(root)
    expected: dict[str, dict[str, Any]] = manifest.get("files", {})
    actual = file_digests(root)
    problems = [f"missing file {name!r}" for name in sorted(set(expected) - set(actual))]
    problems += [f"unlisted file {name!r}" for name in sorted(set(actual) - set(expected))]
    for name in sorted(set(expected) & set(actual)):
        if expected[name] != actual[name]:
            problems.append(f"{name!r}: expected {expected[name]}, found {actual[name]}")
    return problems


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the bytes of a model."""
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def write_manifest(directory: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``info`` plus the format version, tool versions and file table; return the manifest."""
    root = Path(directory)
    manifest = {
        "format_version": FORMAT_VERSION,
        **info,
        "versions": tool_versions(),
        "files": file_digests(root),
    }
    (root / MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {str(Path(directory))!r}")
    return json.loads(path.read_text(encoding="utf-8"))
